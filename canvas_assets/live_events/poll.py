"""Drain the queue into the landing table: receive, land (committed), then delete from SQS.

A crash between landing and deleting only means SQS delivers the batch again, and landing
recognises it. Used by the ``canvas_live_events`` sensor within its tick budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psycopg

from canvas_assets.live_events.land import land_messages
from canvas_assets.live_events.sqs import QueueMessage, SQSQueueResource

SENSOR_BUDGET_SECONDS = 20.0  # well under Dagster's 60 s sensor timeout


@dataclass
class PollResult:
    received: int = 0
    landed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    unknown: int = 0
    delete_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def poll_queue(
    sqs: SQSQueueResource,
    client,
    conn: psycopg.Connection,
    schema: str,
    budget_seconds: float = SENSOR_BUDGET_SECONDS,
    *,
    after_landing: Callable[[list[QueueMessage]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PollResult:
    """Receive batches of 10 until the queue is empty or the budget is spent; land each batch
    (committed) before deleting it from the queue."""
    deadline = clock() + budget_seconds
    totals = PollResult()
    wait = 2  # long-poll first; after a full batch more are likely waiting, so do not wait
    while clock() < deadline:
        messages = sqs.receive(client, wait_seconds=min(wait, int(max(0, deadline - clock()))))
        if not messages:
            if wait == 0:
                wait = 1  # a short poll can miss messages: confirm with a long poll
                continue
            break
        wait = 0 if len(messages) == 10 else 1
        landed = land_messages(conn, schema, [(m.message_id, m.body) for m in messages])
        if after_landing is not None:
            after_landing(messages)
        totals.received += len(messages)
        totals.landed += landed.landed
        totals.duplicates += landed.duplicates
        totals.quarantined += landed.quarantined
        totals.unknown += landed.unknown
        totals.delete_failures += sqs.delete(client, messages)
    return totals
