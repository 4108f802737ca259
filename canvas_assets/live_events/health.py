"""How the Live Events stream is doing, read from the landing tables: what the stream health
checks on ``canvas/live_events`` and the sensor's tick messages report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class StreamHealth:
    pending: int
    oldest_pending_seconds: float | None  # None: nothing waiting
    since_last_message_seconds: float | None  # None: never received one
    quarantined_last_hour: int
    quarantined_total: int


def stream_health(conn: psycopg.Connection, schema: str, now: datetime) -> StreamHealth:
    """Counts and ages from ``live_events`` and ``live_event_quarantine`` at ``now``."""
    events = sql.SQL("{}.live_events").format(sql.Identifier(schema))
    quarantine = sql.SQL("{}.live_event_quarantine").format(sql.Identifier(schema))
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM {events} WHERE applied_at IS NULL),"
            " (SELECT min(received_at) FROM {events} WHERE applied_at IS NULL),"
            " GREATEST((SELECT max(received_at) FROM {events}),"
            "          (SELECT max(received_at) FROM {quarantine})),"
            " (SELECT count(*) FROM {quarantine} WHERE received_at > %s - interval '1 hour'),"
            " (SELECT count(*) FROM {quarantine})"
        ).format(events=events, quarantine=quarantine),
        (now,),
    ).fetchone()
    pending, oldest, last, recent, total = row

    def age(moment: datetime | None) -> float | None:
        return None if moment is None else max(0.0, (now - moment).total_seconds())

    return StreamHealth(int(pending), age(oldest), age(last), int(recent), int(total))
