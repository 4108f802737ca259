"""Drain the queue into the landing table: receive, land (committed), then delete from SQS.

Several receives are in flight at once (each answers at most 10 messages, and on real SQS one
takes tens of milliseconds), feeding one landing loop on the caller's connection that commits
chunks of up to ``LAND_CHUNK`` messages; deletes run beside it. A crash between landing and
deleting only means SQS delivers the messages again, and landing recognises them. A message
PostgreSQL would not even quarantine is not deleted: SQS's redrive policy takes it. An SQS that
cannot be reached, or a warehouse lost mid-tick, ends the tick early with the reason in
``PollResult`` instead of an exception. Used by the ``canvas_live_events`` sensor.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg

from canvas_assets.live_events.land import Destinations, LandCounts, land_messages
from canvas_assets.live_events.sqs import QueueMessage, SQSQueueResource
from canvas_assets.outcomes import first_line

SENSOR_BUDGET_SECONDS = 8.0  # a tick stays short: what is left waits for the next one
RECEIVERS = 4  # receives in flight at once
LAND_CHUNK = 100  # messages landed per transaction
MAX_RECEIVE_FAILURES = 3  # consecutive failed receives before a receiver gives up this tick


@dataclass
class PollResult(LandCounts):
    """What one poll did; everything a tick message needs. ``received`` = landed + unknown +
    duplicates + quarantined + left_for_redrive + not_landed."""

    received: int = 0
    not_landed: int = 0  # received, then the warehouse failed: not deleted, delivered again
    delete_failures: int = 0  # landed but SQS refused the delete: they come back as duplicates
    receive_errors: int = 0
    receive_error: str = ""  # the last one, e.g. "EndpointConnectionError: Could not connect…"
    warehouse_error: str = ""
    seconds: float = 0.0
    land_seconds: float = 0.0  # time spent parsing and storing (the project's own cost)
    # Messages stored (landed, duplicate or quarantined) per schema: which institutions it fed.
    stored_by_schema: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the tick, e.g. "landed 40, 2 quarantined, 0 duplicates"."""
        parts = [f"landed {self.landed}", f"{self.quarantined} quarantined"]
        parts.append(f"{self.duplicates} duplicates")
        if self.unknown:
            parts.append(f"{self.unknown} of unknown types")
        if self.left_for_redrive:
            parts.append(f"{self.left_for_redrive} left for SQS redrive (quarantine refused)")
        text = ", ".join(parts)
        if self.receive_errors:
            text += f"; SQS receive failed {self.receive_errors}x ({self.receive_error})"
        if self.delete_failures:
            text += f"; {self.delete_failures} not deleted from SQS (will return as duplicates)"
        if self.warehouse_error:
            text += (
                f"; warehouse error, {self.not_landed} received left in SQS: {self.warehouse_error}"
            )
        return text


ERROR_CHARS = 200  # of an SQS or warehouse error, in the tick's message and metadata


class _Receivers:
    """``count`` threads receiving into a bounded inbox until the queue is empty, the deadline
    passes, SQS keeps failing, or ``stop`` is set."""

    def __init__(self, sqs: SQSQueueResource, client, deadline: float, clock, count: int) -> None:
        self.sqs, self.client, self.deadline, self.clock = sqs, client, deadline, clock
        self.inbox: queue.Queue[list[QueueMessage]] = queue.Queue(maxsize=count * 4)
        self.stop = threading.Event()
        self.errors = 0
        self.last_error = ""
        self.dropped = 0  # received, then the poll stopped before landing them
        self._lock = threading.Lock()

    def run(self) -> None:
        wait, failures = 1, 0  # long-poll first: a short poll can miss messages
        while not self.stop.is_set() and (remaining := self.deadline - self.clock()) > 0:
            try:
                messages = self.sqs.receive(self.client, wait_seconds=min(wait, int(remaining)))
            except Exception as exc:  # botocore: unreachable endpoint, throttled, 5xx
                failures += 1
                with self._lock:
                    self.errors += 1
                    self.last_error = first_line(exc, with_type=True)[:ERROR_CHARS]
                if failures >= MAX_RECEIVE_FAILURES:
                    return
                self.stop.wait(min(0.5 * 2**failures, max(0.0, remaining)))
                continue
            failures = 0
            if not messages:
                if wait >= 1:
                    return  # a long poll found nothing: the queue is drained
                wait = 1
                continue
            wait = 0 if len(messages) == 10 else 1  # a full batch: more are likely waiting
            while True:
                if self.stop.is_set():  # never landed: SQS delivers them again
                    with self._lock:
                        self.dropped += len(messages)
                    return
                try:
                    self.inbox.put(messages, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def next_chunk(self, running: list[Future], size: int) -> list[QueueMessage] | None:
        """Up to ``size`` received messages; None once every receiver is done and the inbox
        is empty."""
        chunk: list[QueueMessage] = []
        while len(chunk) < size:
            try:
                chunk.extend(self.inbox.get(timeout=0.05 if not chunk else 0))
            except queue.Empty:
                if chunk or all(f.done() for f in running) and self.inbox.empty():
                    break
        return chunk or None

    def drain(self) -> int:
        """How many received messages were never landed (they come back from SQS)."""
        left = self.dropped
        while not self.inbox.empty():
            left += len(self.inbox.get_nowait())
        return left


def _delete(sqs: SQSQueueResource, client, messages: list[QueueMessage]) -> int:
    """Delete landed messages; returns how many were not deleted."""
    try:
        return sqs.delete(client, messages)
    except Exception:  # SQS unreachable: they come back and are recognised as duplicates
        return len(messages)


def poll_queue(
    sqs: SQSQueueResource,
    client,
    conn: psycopg.Connection,
    destinations: Destinations,
    budget_seconds: float = SENSOR_BUDGET_SECONDS,
    *,
    receivers: int = RECEIVERS,
    chunk: int = LAND_CHUNK,
    clock: Callable[[], float] = time.monotonic,
) -> PollResult:
    """Receive until the queue is empty or the budget is spent; land each chunk (committed)
    before deleting it from the queue (``chunk`` messages per transaction)."""
    start = clock()
    totals = PollResult()
    feed = _Receivers(sqs, client, start + budget_seconds, clock, max(1, receivers))
    with ThreadPoolExecutor(max_workers=max(1, receivers) + 2, thread_name_prefix="sqs") as pool:
        running = [pool.submit(feed.run) for _ in range(max(1, receivers))]
        deletes: list[Future[int]] = []
        try:
            while (batch := feed.next_chunk(running, chunk)) is not None:
                totals.received += len(batch)
                began = clock()
                try:
                    landed = land_messages(
                        conn, destinations, [(m.message_id, m.body) for m in batch]
                    )
                except psycopg.Error as exc:  # the warehouse is gone: nothing was committed
                    totals.warehouse_error = first_line(exc, with_type=True)[:ERROR_CHARS]
                    totals.not_landed += len(batch)
                    break
                finally:
                    totals.land_seconds += clock() - began
                totals.add(landed)
                for outcome in landed.outcomes:
                    if outcome.schema:
                        stored = totals.stored_by_schema.get(outcome.schema, 0) + 1
                        totals.stored_by_schema[outcome.schema] = stored
                keep = [m for m, stored in zip(batch, landed.stored(), strict=True) if stored]
                deletes.append(pool.submit(_delete, sqs, client, keep))
        finally:
            feed.stop.set()
            for future in running:
                future.result()
            unlanded = feed.drain()  # received, never taken to land
            totals.received += unlanded
            totals.not_landed += unlanded
            totals.delete_failures += sum(f.result() for f in deletes)
    totals.receive_errors, totals.receive_error = feed.errors, feed.last_error
    totals.seconds = clock() - start
    return totals
