"""Land messages: parse each, store it durably (or quarantine it), in one transaction per batch.

A queue's messages land in the schema of the institution they belong to (``Destinations``): a
queue of one institution's own lands everything there; a shared queue lands each message in the
institution whose root account uuid it names, and quarantines a message of an institution not
declared (yet) in the shared schema, with that uuid, to be replayed once it is declared.

Whatever a message holds, it ends one of three ways: landed (new, a known duplicate, or an
unknown event type), quarantined with its reason and raw text, or — only when PostgreSQL refuses
even the quarantine row — left in the queue for SQS's redrive policy (``left_for_redrive``).
Each message has its own savepoint, so one that PostgreSQL refuses never fails its neighbours;
only a lost connection ends the batch (nothing of it is committed, SQS delivers it again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import psycopg

from canvas_assets.live_events import store
from canvas_assets.live_events.parse import QuarantineError, claimed_account_uuid, parse_message
from canvas_assets.outcomes import Counts, first_line

log = logging.getLogger(__name__)

# Outcome kinds, one per message.
LANDED, UNKNOWN, DUPLICATE = "landed", "unknown", "duplicate"
QUARANTINED, ALREADY_QUARANTINED, LEFT_FOR_REDRIVE = (
    "quarantined",
    "already_quarantined",
    "left_for_redrive",
)


@dataclass(frozen=True)
class Outcome:
    """What became of one message; ``event_key`` names the landed (or duplicate) event, and
    ``schema`` where it was landed or quarantined."""

    kind: str
    event_key: str | None = None
    reason: str | None = None
    schema: str | None = None


@dataclass(frozen=True)
class Destinations:
    """Where a queue's messages land: the schema of the institution whose root account uuid a
    message names (``by_uuid``), or everything in ``only`` (a queue of one institution's own);
    ``stray`` keeps the messages of no declared institution."""

    by_uuid: Mapping[str, str] = field(default_factory=dict)
    only: str | None = None
    stray: str | None = None

    @classmethod
    def one_institution(cls, schema: str) -> Destinations:
        return cls(only=schema)

    def schema_of(self, account_uuid: str | None) -> str | None:
        """The institution's schema, or None when the message belongs to none declared."""
        if self.only is not None:
            return self.only
        return self.by_uuid.get(account_uuid) if account_uuid else None

    def quarantine_schema(self, account_uuid: str | None) -> str:
        return self.schema_of(account_uuid) or self.stray or ""


@dataclass
class LandCounts(Counts):
    """Counts that add up: landed + unknown + duplicates + quarantined + left_for_redrive is
    the number of messages; ``already_quarantined`` is the part of ``quarantined`` seen before."""

    landed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    unknown: int = 0
    already_quarantined: int = 0
    left_for_redrive: int = 0


_COUNTED_AS = {
    LANDED: "landed",
    UNKNOWN: "unknown",
    DUPLICATE: "duplicates",
    LEFT_FOR_REDRIVE: "left_for_redrive",
    QUARANTINED: "quarantined",
    ALREADY_QUARANTINED: "quarantined",
}


@dataclass
class LandResult(LandCounts):
    """One batch's counts and each message's outcome, in order."""

    outcomes: list[Outcome] = field(default_factory=list)

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.add(**{_COUNTED_AS[outcome.kind]: 1})
        if outcome.kind == ALREADY_QUARANTINED:
            self.add(already_quarantined=1)

    def stored(self) -> list[bool]:
        """Per message: True when it may be deleted from the queue."""
        return [o.kind != LEFT_FOR_REDRIVE for o in self.outcomes]


def _connection_lost(conn: psycopg.Connection) -> bool:
    return conn.closed or conn.broken


def _quarantine(
    conn: psycopg.Connection,
    cur: psycopg.Cursor,
    schema: str,
    message_id,
    raw,
    reason: str,
    account_uuid: str | None = None,
) -> Outcome:
    try:
        with conn.transaction():
            new = store.insert_quarantine(cur, schema, message_id, raw, reason, account_uuid)
    except psycopg.Error as exc:
        if _connection_lost(conn):
            raise
        # Logged without the message: it is untrusted and may be huge.
        log.warning("PostgreSQL refused a quarantine row (%s); left for redrive", first_line(exc))
        return Outcome(LEFT_FOR_REDRIVE, reason=f"{reason}; quarantine refused: {first_line(exc)}")
    return Outcome(QUARANTINED if new else ALREADY_QUARANTINED, reason=reason, schema=schema)


def land_one(
    conn: psycopg.Connection,
    cur: psycopg.Cursor,
    destinations: Destinations,
    message_id,
    raw: str | bytes,
) -> Outcome:
    """Land or quarantine one message inside the caller's transaction. Never raises for
    anything in the message; raises only when the connection is lost."""
    try:
        event = parse_message(raw)
    except Exception as exc:  # QuarantineError; a parser bug must not stop the stream either
        reason = str(exc) if isinstance(exc, QuarantineError) else (
            f"could not be parsed ({first_line(exc, with_type=True)})"
        )  # fmt: skip
        claimed = claimed_account_uuid(raw)
        schema = destinations.quarantine_schema(claimed)
        return _quarantine(conn, cur, schema, message_id, raw, reason, claimed)
    schema = destinations.schema_of(event.root_account_uuid)
    if schema is None:
        uuid = event.root_account_uuid
        reason = f"unknown institution {uuid}" if uuid else "names no institution (no uuid)"
        stray = destinations.quarantine_schema(None)
        return _quarantine(conn, cur, stray, message_id, raw, reason, uuid)
    try:
        with conn.transaction():
            inserted = store.insert_event(cur, schema, message_id, event)
    except psycopg.Error as exc:
        if _connection_lost(conn):
            raise
        reason = f"PostgreSQL could not store it: {first_line(exc)}"
        return _quarantine(conn, cur, schema, message_id, raw, reason)
    if not inserted:
        return Outcome(DUPLICATE, event.event_key, schema=schema)
    return Outcome(LANDED if event.supported else UNKNOWN, event.event_key, schema=schema)


def land_messages(
    conn: psycopg.Connection,
    destinations: Destinations,
    messages: Iterable[tuple[object, str | bytes]],
) -> LandResult:
    """Durably store (message_id, raw body) pairs in one transaction."""
    result = LandResult()
    with conn.transaction(), conn.cursor() as cur:
        for message_id, raw in messages:
            result.record(land_one(conn, cur, destinations, message_id, raw))
    return result
