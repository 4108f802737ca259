"""Land messages: parse each, store it durably (or quarantine it), in one transaction per batch.

When ``land_messages`` returns, every message is landed, a known duplicate, or quarantined, so
the caller may delete the batch from SQS. Each message has its own savepoint: one that
PostgreSQL refuses is quarantined without failing its neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import psycopg

from canvas_assets.live_events import store
from canvas_assets.live_events.parse import QuarantineError, parse_message


@dataclass
class LandResult:
    landed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    unknown: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def land_messages(
    conn: psycopg.Connection, schema: str, messages: Iterable[tuple[str | None, str]]
) -> LandResult:
    """Durably store (message_id, raw body) pairs in one transaction."""
    result = LandResult()
    with conn.transaction(), conn.cursor() as cur:
        for message_id, raw in messages:
            try:
                event = parse_message(raw)
            except QuarantineError as exc:
                store.insert_quarantine(cur, schema, message_id, raw, str(exc))
                result.quarantined += 1
                continue
            try:
                # A NUL character in a jsonb string, say: PostgreSQL refuses this one only.
                with conn.transaction():
                    inserted = store.insert_event(cur, schema, message_id, event)
            except psycopg.DataError as exc:
                reason = f"PostgreSQL could not store it: {str(exc).splitlines()[0]}"
                store.insert_quarantine(cur, schema, message_id, raw, reason)
                result.quarantined += 1
                continue
            if not inserted:
                result.duplicates += 1
            elif event.supported:
                result.landed += 1
            else:
                result.unknown += 1
    return result
