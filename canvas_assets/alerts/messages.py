"""What an alert says, and the scrubbing that keeps every secret out of it.

An alert carries text that came from elsewhere (a run's error, the card's last error), and an
error can quote what it was given: a URL with its password, a bearer token, a refresh token. So
every field is scrubbed before any channel sees it: the secret values the deployment holds are
replaced, and so is anything shaped like a credential.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from urllib.parse import quote, urlsplit

FAILED, RECOVERED = "failed", "recovered"
HIDDEN = "***"
SHORTEST_SECRET = 4  # shorter values would blank out ordinary words
_CREDENTIAL_SHAPES = (
    # user:password@ in any URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]*@"), rf"\1{HIDDEN}@"),
    # Authorization header values
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {HIDDEN}"),
    # key=value and "key": "value" pairs of secret-sounding keys
    (
        re.compile(
            r"(?i)\b((?:access|refresh|id|api|auth)?_?(?:token|secret|password|passwd|apikey|"
            r"api_key|client_secret))(\"?\s*[:=]\s*\"?)[^\s\"'&,;]+"
        ),
        rf"\1\2{HIDDEN}",
    ),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]+"), HIDDEN),  # Slack tokens
    (re.compile(r"\b\d{1,6}~[A-Za-z0-9]{20,}"), HIDDEN),  # Canvas access tokens
)


class Redactor:
    """Replaces the deployment's secret values, and credential-shaped text, with ***."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        values: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            values.update({secret, quote(secret, safe="")})
            password = _url_password(secret)
            if password:
                values.update({password, quote(password, safe="")})
        # Longest first, so a secret containing another is hidden whole.
        self._values = sorted((v for v in values if len(v) >= SHORTEST_SECRET), key=len)[::-1]

    def scrub(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, HIDDEN)
        for pattern, replacement in _CREDENTIAL_SHAPES:
            text = pattern.sub(replacement, text)
        return text


def _url_password(value: str) -> str | None:
    try:
        return urlsplit(value).password
    except ValueError:
        return None


@dataclass(frozen=True)
class Alert:
    """One alert, as the generic webhook receives it (the other channels render the same)."""

    institution: str
    semester: str | None
    kind: str  # backfill, reconciliation, apply, terms, check, card, stream, freshness
    status: str  # failed or recovered
    summary: str  # one line
    details: str  # the first line of the error
    url: str | None  # into the Dagster UI, when CANVAS_ASSETS_UI_URL is set

    def scrubbed(self, redactor: Redactor) -> Alert:
        texts = {"summary": self.summary, "details": self.details}
        return replace(self, **{k: redactor.scrub(v) for k, v in texts.items()})

    def payload(self) -> dict[str, str | None]:
        return asdict(self)

    @property
    def title(self) -> str:
        return f"[canvas-assets] {self.status.upper()}: {self.summary}"

    def text(self) -> str:
        """The lines a person reads (Slack, Teams, e-mail)."""
        lines = [self.title]
        if self.details:
            lines.append(self.details)
        semester = f", semester {self.semester}" if self.semester else ""
        lines.append(f"institution {self.institution}{semester}, kind {self.kind}")
        if self.url:
            lines.append(self.url)
        return "\n".join(lines)
