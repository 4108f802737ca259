"""Sending the alerts that are due: each to its channel, scrubbed; a channel that refuses is
logged and tried again later (backing off), and never fails the caller."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from canvas_assets.alerts import incidents
from canvas_assets.alerts.channels import AlertChannels, ChannelRefused
from canvas_assets.alerts.messages import RECOVERED, Alert, Redactor
from canvas_assets.outcomes import Counts, first_line

FIRST_RETRY = timedelta(seconds=15)
LONGEST_RETRY = timedelta(minutes=30)
CLAIMED_PER_ROUND = 20


@dataclass
class DeliveryCounts(Counts):
    sent: int = 0
    refused: int = 0

    def summary(self) -> str:
        text = f"{self.sent} alerts sent"
        return text + (f", {self.refused} refused (retried later)" if self.refused else "")


def retry_delay(attempts: int) -> timedelta:
    """Doubling from FIRST_RETRY after each refusal, up to LONGEST_RETRY."""
    return min(FIRST_RETRY * 2 ** max(0, attempts - 1), LONGEST_RETRY)


def render(institution: str, delivery: incidents.Delivery, ui_url: str | None) -> Alert:
    """The alert a delivery sends: its incident's failure, or its recovery."""
    if delivery.status == RECOVERED:
        summary, details = f"{institution}: {delivery.subject} recovered", ""
    else:
        summary, details = f"{institution}: {delivery.summary}", delivery.details
    url = f"{ui_url.rstrip('/')}{delivery.link}" if ui_url and delivery.link else None
    return Alert(
        institution=institution,
        semester=delivery.semester,
        kind=delivery.kind,
        status=delivery.status,
        summary=summary,
        details=details,
        url=url,
    )


def deliver_due(
    conn: psycopg.Connection,
    schema: str,
    institution: str,
    channels: AlertChannels,
    redactor: Redactor,
    ui_url: str | None,
    budget_seconds: float,
    log: logging.Logger,
) -> DeliveryCounts:
    """Send what is due in ``schema`` until nothing is or ``budget_seconds`` are spent (an alert
    claimed but not sent by then is sent by a later tick, once its lease ends)."""
    counts = DeliveryCounts()
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        due = incidents.claim_due(conn, schema, datetime.now().astimezone(), CLAIMED_PER_ROUND)
        if not due:
            break
        for delivery in due:
            if time.monotonic() >= deadline:
                break
            alert = render(institution, delivery, ui_url).scrubbed(redactor)
            refusal = _send(channels, delivery.channel, alert, redactor)
            now = datetime.now().astimezone()
            if refusal is None:
                incidents.mark_delivered(conn, schema, delivery.id, now)
                counts.add(sent=1)
                continue
            retry_at = now + retry_delay(delivery.attempts)
            incidents.mark_refused(conn, schema, delivery.id, refusal, retry_at)
            log.warning(f"{institution}: alert to {delivery.channel} not sent ({refusal})")
            counts.add(refused=1)
    return counts


def _send(channels: AlertChannels, channel: str, alert: Alert, redactor: Redactor) -> str | None:
    """None when the channel took the alert, else why not (scrubbed, one line)."""
    if channel not in channels.configured():  # set up when the alert was queued, not now
        return f"{channel} is no longer configured"
    try:
        channels.send(channel, alert)
    except ChannelRefused as exc:
        return redactor.scrub(str(exc))
    except Exception as exc:  # a channel's own bug must not stop the others, nor the tick
        return redactor.scrub(first_line(exc, with_type=True))
    return None
