"""Incidents and their alerts, kept in the institution's schema (``alert_incidents``,
``alert_deliveries``): all the SQL of the alerts room.

An incident opens once per subject (``raise_incident``: a finding whose subject already has an
open incident only keeps it open) and queues one alert per channel; it recovers once
(``settle``: after its condition has passed for ``hold``, so a flapping stream stays one
incident) and queues one more. Deliveries are claimed with a lease, so two sensors never send
the same alert at once and a sender that died is retried once the lease ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from canvas_assets.alerts.messages import FAILED, RECOVERED
from canvas_assets.warehouse.identifiers import qualified_table

INCIDENTS, DELIVERIES = "alert_incidents", "alert_deliveries"
CLAIM_LEASE = timedelta(minutes=2)  # a sender that died leaves its alert to the next tick
GIVE_UP_AFTER = timedelta(days=1)  # an alert a channel refused all day is no longer news


@dataclass(frozen=True)
class Finding:
    """Something wrong now. ``subject`` names what is wrong (one incident at a time per
    subject); ``summary`` and ``details`` are what the alert says; ``link`` is a path in the
    Dagster UI; ``run_id``/``run_at`` the failed run whose successor recovers it."""

    subject: str
    kind: str
    summary: str
    details: str
    semester: str | None = None
    link: str | None = None
    run_id: str | None = None
    run_at: datetime | None = None


@dataclass(frozen=True)
class Incident:
    id: int
    subject: str
    kind: str
    semester: str | None
    run_id: str | None
    run_at: datetime | None
    passing_since: datetime | None


@dataclass(frozen=True)
class Delivery:
    """One alert to one channel, with what its incident says."""

    id: int
    channel: str
    status: str
    attempts: int
    kind: str
    semester: str | None
    subject: str
    summary: str
    details: str
    link: str | None


def open_incidents(conn: psycopg.Connection, schema: str) -> list[Incident]:
    with conn.cursor(row_factory=class_row(Incident)) as cur:
        return cur.execute(
            sql.SQL(
                "SELECT id, subject, kind, semester, run_id, run_at, passing_since "
                "FROM {} WHERE recovered_at IS NULL ORDER BY id"
            ).format(qualified_table(schema, INCIDENTS))
        ).fetchall()


def raise_incident(
    conn: psycopg.Connection,
    schema: str,
    finding: Finding,
    channels: Sequence[str],
    now: datetime,
) -> bool:
    """Open an incident for ``finding`` and queue its alert to each channel; True when it
    opened. An incident already open for the subject stays open, without a new alert: a newer
    failed run becomes the one whose successor recovers it, and a recovery under way is off."""
    with conn.transaction():
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {} AS i (subject, kind, semester, summary, details, link, run_id, "
                "run_at, opened_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (subject) WHERE recovered_at IS NULL DO UPDATE SET "
                "passing_since = NULL, run_id = coalesce(EXCLUDED.run_id, i.run_id), "
                "run_at = coalesce(EXCLUDED.run_at, i.run_at) "
                "RETURNING id, xmax = 0"
            ).format(qualified_table(schema, INCIDENTS)),
            (
                finding.subject, finding.kind, finding.semester, finding.summary,
                finding.details, finding.link, finding.run_id, finding.run_at, now,
            ),
        ).fetchone()  # fmt: skip
        assert row is not None
        incident_id, opened = row
        if opened:
            _queue(conn, schema, incident_id, FAILED, channels, now)
    return bool(opened)


def settle(
    conn: psycopg.Connection,
    schema: str,
    incident: Incident,
    failing: bool,
    now: datetime,
    hold: timedelta,
    channels: Sequence[str],
) -> bool:
    """Keep an open incident open while ``failing``; once its condition has passed for
    ``hold``, mark it recovered and queue the recovery alert (True)."""
    table = qualified_table(schema, INCIDENTS)
    since = None if failing else (incident.passing_since or now)
    recovered = since is not None and now - since >= hold
    with conn.transaction():
        conn.execute(
            sql.SQL("UPDATE {} SET passing_since = %s, recovered_at = %s WHERE id = %s").format(
                table
            ),
            (since, now if recovered else None, incident.id),
        )
        if recovered:
            _queue(conn, schema, incident.id, RECOVERED, channels, now)
    return recovered


def _queue(
    conn: psycopg.Connection,
    schema: str,
    incident_id: int,
    status: str,
    channels: Sequence[str],
    now: datetime,
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (incident_id, status, channel, created_at, next_attempt_at) "
                "VALUES (%s, %s, %s, %s, %s)"
            ).format(qualified_table(schema, DELIVERIES)),
            [(incident_id, status, channel, now, now) for channel in channels],
        )


def claim_due(conn: psycopg.Connection, schema: str, now: datetime, limit: int) -> list[Delivery]:
    """Up to ``limit`` alerts due now, oldest first, leased to the caller for CLAIM_LEASE."""
    query = sql.SQL(
        "WITH due AS (SELECT id FROM {deliveries} WHERE delivered_at IS NULL "
        "AND next_attempt_at <= %(now)s AND created_at > %(oldest)s "
        "ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
        "UPDATE {deliveries} AS d SET attempts = d.attempts + 1, next_attempt_at = %(lease)s "
        "FROM due, {incidents} AS i WHERE d.id = due.id AND i.id = d.incident_id "
        "RETURNING d.id, d.channel, d.status, d.attempts, i.kind, i.semester, i.subject, "
        "i.summary, i.details, i.link"
    ).format(
        deliveries=qualified_table(schema, DELIVERIES), incidents=qualified_table(schema, INCIDENTS)
    )
    values = {"now": now, "oldest": now - GIVE_UP_AFTER, "limit": limit, "lease": now + CLAIM_LEASE}
    with conn.transaction(), conn.cursor(row_factory=class_row(Delivery)) as cur:
        return sorted(cur.execute(query, values).fetchall(), key=lambda d: d.id)


def mark_delivered(conn: psycopg.Connection, schema: str, delivery_id: int, now: datetime) -> None:
    conn.execute(
        sql.SQL("UPDATE {} SET delivered_at = %s, last_error = NULL WHERE id = %s").format(
            qualified_table(schema, DELIVERIES)
        ),
        (now, delivery_id),
    )


def mark_refused(
    conn: psycopg.Connection, schema: str, delivery_id: int, error: str, retry_at: datetime
) -> None:
    conn.execute(
        sql.SQL("UPDATE {} SET last_error = %s, next_attempt_at = %s WHERE id = %s").format(
            qualified_table(schema, DELIVERIES)
        ),
        (error[:500], retry_at, delivery_id),
    )
