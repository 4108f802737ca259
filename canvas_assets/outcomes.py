"""How a step reports what it did: named counts that add up, an error in one line, and a URL
shown without its password.

Every step that counts (a Canvas session, a write, a poll of the queue, routing, an apply, a
replay) declares its figures as fields of a ``Counts`` dataclass; ``add`` and ``as_dict`` are
shared, and each keeps only its own ``summary``. ``first_line`` is the one way an exception
becomes text for a tick message, a card or a log line.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from typing import Self
from urllib.parse import urlsplit, urlunsplit

# One lock for every Counts: adding is a few attribute updates, so sharing costs nothing, and
# counters filled from several threads (a Canvas session's requests) stay exact.
_LOCK = threading.Lock()


@dataclass
class Counts:
    """A dataclass of numeric figures (int or float fields) that add up; a text field (the last
    error, say) is reported when it is set, and other fields are carried, not counted."""

    def _figures(self) -> list[str]:
        return [
            f.name
            for f in fields(self)
            if isinstance(getattr(self, f.name), int | float)
            and not isinstance(getattr(self, f.name), bool)
        ]

    def add(self, other: Counts | None = None, **amounts: float) -> Self:
        """Add ``other``'s figures that this one also has, and ``amounts`` by name."""
        with _LOCK:
            if other is not None:
                mine = set(self._figures())
                for name in other._figures():
                    if name in mine:
                        setattr(self, name, getattr(self, name) + getattr(other, name))
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)
        return self

    def as_dict(self) -> dict[str, int | float | str]:
        """The figures by name (zeros included, so runs compare over time; seconds rounded),
        then the text fields that are set."""
        values = {name: getattr(self, name) for name in self._figures()}
        out: dict[str, int | float | str] = {
            k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()
        }
        texts = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update({k: v for k, v in texts.items() if isinstance(v, str) and v})
        return out


def first_line(exc: BaseException, *, with_type: bool = False) -> str:
    """The exception's first line of text (its type when it has none); ``with_type`` prefixes
    the type, for errors whose text alone does not say what failed."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if with_type or not text:
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
