"""How the Live Events stream is doing, read from the landing tables: what the stream health
checks on ``canvas/live_events`` and the sensor's tick messages report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from canvas_assets.live_events import store


@dataclass(frozen=True)
class StreamHealth:
    pending: int
    oldest_pending_seconds: float | None  # None: nothing waiting
    since_last_message_seconds: float | None  # None: never received one
    quarantined_last_hour: int
    quarantined_total: int


def stream_health(conn: psycopg.Connection, schema: str, now: datetime) -> StreamHealth:
    """Counts and ages from ``live_events`` and ``live_event_quarantine`` at ``now``."""
    counts = store.stream_counts(conn, schema, now)

    def age(moment: datetime | None) -> float | None:
        return None if moment is None else max(0.0, (now - moment).total_seconds())

    return StreamHealth(
        pending=counts.pending,
        oldest_pending_seconds=age(counts.oldest_pending_at),
        since_last_message_seconds=age(counts.last_message_at),
        quarantined_last_hour=counts.quarantined_last_hour,
        quarantined_total=counts.quarantined_total,
    )
