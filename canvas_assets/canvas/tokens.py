"""Where a session's access token comes from: a fixed token (``CANVAS_API_TOKEN``), or the
current token of a developer key's authorisation, shared by every process of the institution.

Canvas keeps one access token per authorisation, and a refresh grant regenerates it: the previous
token stops working at once. Processes that each refreshed on their own would keep invalidating
each other's token, so ``SharedToken`` keeps the current one in a ``TokenStore`` that every
process reads (the warehouse; wired in ``defs/``) and refreshes it only under the store's lock:

* ahead of its expiry (``AccessToken.refresh_at``), so requests rarely meet an expired token;
* when Canvas rejects a token, it first reads the store: when another process has replaced the
  token already, that one is used; only when the rejected token is still the current one is it
  refreshed. One rejection causes at most one refresh, and the session retries once.

A token never appears in a repr, a message or a log: only the ``Authorization`` header holds it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

# A token is refreshed this long before it expires (Canvas's tokens live an hour), or after four
# fifths of its life when it is shorter: a request in flight with the old token still finishes.
REFRESH_AHEAD = timedelta(minutes=5)
REFRESH_AHEAD_SHARE = 0.2


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AccessToken:
    """An access token and when it stops working (None: when Canvas rejects it) and is due for
    a refresh."""

    value: str = field(repr=False)
    expires_at: datetime | None
    refresh_at: datetime | None

    @classmethod
    def issued(cls, value: str, expires_in: float | None, now: datetime) -> AccessToken:
        """A token Canvas issued at ``now`` with a life of ``expires_in`` seconds."""
        if expires_in is None:  # a key that does not expire its tokens
            return cls(value, None, None)
        life = timedelta(seconds=max(0.0, float(expires_in)))
        ahead = min(REFRESH_AHEAD, life * REFRESH_AHEAD_SHARE)
        return cls(value, now + life, now + life - ahead)

    def due(self, now: datetime) -> bool:
        return self.refresh_at is not None and now >= self.refresh_at


class TokenSource(Protocol):
    """Gives a session the token for each request, and says what to check when Canvas rejects
    it (``rejection``) or refuses the user behind it (``who``)."""

    @property
    def rejection(self) -> str: ...

    @property
    def who(self) -> str: ...

    def current(self) -> str: ...

    def replace(self, rejected: str) -> bool:
        """After Canvas rejected ``rejected``: True when another token is current now (the
        request may be retried once with it), False when there is nothing else to try."""
        ...


@dataclass(frozen=True)
class StaticToken:
    """A manually generated access token: it works until it is revoked or expires."""

    token: str = field(repr=False)
    setting: str = "CANVAS_API_TOKEN"

    @property
    def rejection(self) -> str:
        return (
            f"Canvas rejected the API token (HTTP 401). Check {self.setting}: it must be a "
            "valid, unexpired access token for CANVAS_BASE_URL."
        )

    @property
    def who(self) -> str:
        return f"the user behind {self.setting}"

    def current(self) -> str:
        return self.token

    def replace(self, rejected: str) -> bool:
        return False


class TokenStore(Protocol):
    """The current token of one authorisation, shared by every process that uses it."""

    def read(self) -> AccessToken | None:
        """The stored token, or None when there is none for this authorisation."""
        ...

    def update(self, decide: Callable[[AccessToken | None], AccessToken | None]) -> AccessToken:
        """Under a lock every process shares: call ``decide`` with the stored token, store the
        token it returns (None: keep the stored one), and return the token now stored."""
        ...


class SharedToken:
    """The current token of a developer key's authorisation, kept in a ``TokenStore``; ``grant``
    asks Canvas for a new one (the refresh grant). Thread safe: a session's requests share it."""

    def __init__(
        self, store: TokenStore, grant: Callable[[], AccessToken], rejection: str, who: str
    ) -> None:
        self.rejection, self.who = rejection, who
        self._store = store
        self._grant = grant
        self._token: AccessToken | None = None
        self._lock = threading.Lock()

    def current(self) -> str:
        with self._lock:
            now = utc_now()
            if self._token is None or self._token.due(now):
                stored = self._store.read()
                if stored is not None and not stored.due(now):
                    self._token = stored
                else:
                    self._token = self._refresh(stored.value if stored else None)
            return self._token.value

    def replace(self, rejected: str) -> bool:
        with self._lock:
            if self._token is not None and self._token.value != rejected:
                return True  # another of this session's requests replaced it already
            stored = self._store.read()
            if stored is not None and stored.value != rejected and not stored.due(utc_now()):
                self._token = stored  # another process refreshed it: no grant needed
                return True
            self._token = self._refresh(rejected)
            return True

    def _refresh(self, stale: str | None) -> AccessToken:
        """A new token unless, under the store's lock, another process has stored one that is
        not ``stale`` and not due: that one is used instead."""

        def decide(stored: AccessToken | None) -> AccessToken | None:
            if stored is not None and stored.value != stale and not stored.due(utc_now()):
                return None
            return self._grant()

        return self._store.update(decide)
