"""SQS misbehaving: visibility-timeout redeliveries, duplicates, out-of-order delivery, and a
queue that is briefly unreachable (a TCP proxy in front of moto's server that drops every
connection while it is "down") — nothing is lost, nothing lands twice, and the poll's summary
(the tick's message) says what happened."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from psycopg import sql

from canvas_assets.live_events.land import Destinations
from canvas_assets.live_events.parse import parse_message
from canvas_assets.live_events.poll import poll_queue
from canvas_assets.live_events.sqs import SQSQueueResource
from canvas_sandbox import ChangeDriver

from .stages import at_stages

# A hang under injected faults fails fast instead of eating the CI budget.
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.slow,
]  # heavy reliability: SQS outages and redelivery


class FlakyProxy:
    """Forwards TCP to ``target``; while ``down``, every connection is dropped at once."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.down = False
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                self._drop(client)
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.down:
                    break
                sink.sendall(data)
        self._drop(source)
        self._drop(sink)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
            self.dropped += 1
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            with self._lock:
                live = list(self._open)
            for sock in live:
                self._drop(sock)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def proxy(sqs_endpoint: str) -> Iterator[FlakyProxy]:
    parts = urlsplit(sqs_endpoint)
    flaky = FlakyProxy((parts.hostname or "127.0.0.1", parts.port or 80))
    yield flaky
    flaky.close()


def _depth(queue: SQSQueueResource) -> int:
    attributes = queue.client().get_queue_attributes(
        QueueUrl=queue.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def _landed_keys(db, schema: str) -> list[str]:
    return [
        key
        for (key,) in db.execute(
            sql.SQL("SELECT event_key FROM {}.live_events").format(sql.Identifier(schema))
        )
    ]


def test_redeliveries_duplicates_and_disorder_land_each_event_exactly_once(
    institution, warehouse, db, queue, figures
) -> None:
    """Without this, SQS's normal behaviour — a message delivered twice, out of order, or again
    after its visibility timeout because a consumer died holding it — would land an event twice
    or drop one, and the tick would not say how many were duplicates."""
    driver = ChangeDriver(
        institution, queue.client(), queue.queue_url, seed=5,
        duplicate_rate=0.3, reorder_rate=0.3, follow_wall_clock=True,
    )  # fmt: skip
    driver.run(40)
    driver.flush()
    client = queue.client()
    held = client.receive_message(
        QueueUrl=queue.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=1
    )["Messages"]  # a consumer that dies holding them: back after 1 s
    time.sleep(1.2)
    schema = warehouse.table_schema()
    with warehouse.connect() as conn:
        polled = poll_queue(
            queue, queue.client(), conn, Destinations.one_institution(schema), budget_seconds=30
        )
    sent = {parse_message(json.dumps(e)).event_key for e in driver.sent}
    landed = _landed_keys(db, schema)
    assert sorted(landed) == sorted(sent)
    # At-least-once: a slow landing can see a message again within the same poll.
    assert polled.received >= len(driver.sent)
    assert polled.landed + polled.unknown == len(sent)
    assert polled.duplicates == polled.received - len(sent) >= len(driver.sent) - len(sent) > 0
    assert f"{polled.duplicates} duplicates" in polled.summary()
    assert _depth(queue) == 0
    figures(
        "SQS: redeliveries, duplicates, out of order",
        messages_sent=len(driver.sent),
        distinct_events=len(sent),
        held_past_visibility_timeout=len(held),
        landed=polled.landed + polled.unknown,
        duplicates_recognised=polled.duplicates,
        lost=0,
        tick_message=polled.summary(),
    )


def test_a_briefly_unreachable_queue_loses_nothing_and_the_tick_says_so(
    institution, warehouse, db, queue, proxy, figures
) -> None:
    """Without this, SQS becoming unreachable in the middle of a tick (a network blip, an
    endpoint outage) would raise out of the sensor, or lose the messages it had received, and
    nothing would tell the operator why the stream stalled."""
    driver = ChangeDriver(
        institution, queue.client(), queue.queue_url, seed=9, follow_wall_clock=True
    )
    driver.run(30)
    driver.flush()
    flaky = SQSQueueResource(
        **{**queue.model_dump(), "endpoint_url": f"http://127.0.0.1:{proxy.port}"},
    ).model_copy(update={"max_attempts": 1})  # boto3 would otherwise retry a short blip away
    outage = threading.Event()

    def cut(stage: str) -> None:
        if stage == "landed" and not outage.is_set():  # stored; deleting it will fail
            outage.set()
            proxy.set_down(True)
            threading.Timer(2.5, proxy.set_down, args=(False,)).start()

    schema = warehouse.table_schema()
    with warehouse.connect() as conn, at_stages(cut):
        first = poll_queue(
            flaky,
            flaky.client(),
            conn,
            Destinations.one_institution(schema),
            budget_seconds=6,
            chunk=10,
        )
    with warehouse.connect() as conn:
        time.sleep(2.5)  # undeleted messages come back after the visibility timeout
        second = poll_queue(
            flaky, flaky.client(), conn, Destinations.one_institution(schema), budget_seconds=20
        )
    assert outage.is_set() and proxy.dropped > 0
    assert first.receive_errors + first.delete_failures > 0
    assert "SQS receive failed" in first.summary() or "not deleted from SQS" in first.summary()
    sent = {parse_message(json.dumps(e)).event_key for e in driver.sent}
    assert sorted(_landed_keys(db, schema)) == sorted(sent)  # each exactly once
    # What SQS did not delete came back (in the same poll or the next) and was recognised.
    failed_deletes = first.delete_failures + second.delete_failures
    assert first.duplicates + second.duplicates >= failed_deletes
    assert _depth(queue) == 0
    figures(
        "SQS briefly unreachable",
        injection="TCP proxy drops every connection for 2.5 s right after a batch lands",
        connections_dropped=proxy.dropped,
        first_tick=first.summary(),
        second_tick=second.summary(),
        lost=0,
        landed_twice=0,
    )


REFUSE_QUARANTINE = """
CREATE FUNCTION {schema}.refuse_quarantine() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.raw LIKE '%refuse-me%' THEN RAISE EXCEPTION 'this row is refused (test)'; END IF;
  RETURN NEW;
END $$
"""
REFUSE_TRIGGER = """
CREATE TRIGGER refuse_quarantine BEFORE INSERT ON {schema}.live_event_quarantine
  FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_quarantine()
"""


def test_a_message_postgres_will_not_even_quarantine_goes_to_the_dead_letter_queue(
    institution, warehouse, db, queue, figures
) -> None:
    """Without this, a message whose quarantine row PostgreSQL refuses would fail its whole
    batch (its valid neighbours never land), or be deleted and lost; instead it stays in the
    queue, the rest lands, and the queue's redrive policy moves it to the dead-letter queue."""
    schema = sql.Identifier(warehouse.table_schema())
    db.execute(sql.SQL(REFUSE_QUARANTINE).format(schema=schema))
    db.execute(sql.SQL(REFUSE_TRIGGER).format(schema=schema))
    client = queue.client()
    dlq = client.create_queue(QueueName=f"{queue.queue_url.rsplit('/', 1)[1]}-dlq")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    client.set_queue_attributes(QueueUrl=queue.queue_url, Attributes={"RedrivePolicy": policy})
    driver = ChangeDriver(institution, client, queue.queue_url, seed=3, follow_wall_clock=True)
    driver.run(6)
    client.send_message(QueueUrl=queue.queue_url, MessageBody="refuse-me {not json")
    polls = []
    with warehouse.connect() as conn:
        for _ in range(6):
            polls.append(
                poll_queue(
                    queue, client, conn, Destinations.one_institution(warehouse.table_schema()), 10
                )
            )
            if _depth(queue) == 0:
                break
            time.sleep(2.1)  # the visibility timeout: SQS offers the refused message again
    dead = client.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    sent = {parse_message(json.dumps(e)).event_key for e in driver.sent}
    assert polls[0].left_for_redrive >= 1 and "left for SQS redrive" in polls[0].summary()
    assert polls[0].landed + polls[0].unknown == len(sent)  # the rest of the batch landed
    assert sorted(_landed_keys(db, warehouse.table_schema())) == sorted(sent)
    assert [m["Body"] for m in dead] == ["refuse-me {not json"]
    assert _depth(queue) == 0
    figures(
        "quarantine refused: left for redrive",
        injection="a trigger makes PostgreSQL refuse one message's quarantine row; "
        "queue RedrivePolicy maxReceiveCount 2",
        valid_messages=len(sent),
        valid_landed=len(sent),
        polls=len(polls),
        first_tick=polls[0].summary(),
        moved_to_dead_letter_queue=len(dead),
    )
