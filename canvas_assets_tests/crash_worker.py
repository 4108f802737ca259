"""The process that crash tests SIGKILL: one sensor tick's work (poll, route) and the apply runs
it would launch, on its own connections, killing itself at a chosen stage.

Run in a ``forkserver`` child (the parent preloads this module, so each child starts in
milliseconds). Stages: ``received`` (a batch received, not landed), ``landing`` (inside the
landing transaction), ``landed`` (committed, not deleted), ``deleted``, ``routing`` (routes
resolved, not saved), ``route-canvas`` / ``apply-canvas`` (the n-th Canvas request of routing or
of an apply, whose transaction is open), ``apply-write`` (the apply's rows are written and its
events being closed: PostgreSQL holds the statement while the parent kills the process).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import UTC, datetime

from canvas_assets.canvas import CanvasResource
from canvas_assets.canvas.fetch import fetch_terms, find_term
from canvas_assets.live_events.apply import apply_semester_events
from canvas_assets.live_events.land import Destinations
from canvas_assets.live_events.poll import poll_queue
from canvas_assets.live_events.route import route_pending
from canvas_assets.live_events.sqs import SQSQueueResource
from canvas_assets.live_events.store import pending_semesters
from canvas_assets.warehouse import WarehouseResource

from .stages import at_stages

PAUSE_SETTING = "canvas_crash.pause_seconds"  # read by the test schema's trigger


class Killer:
    """Counts stages and SIGKILLs this process at the planned occurrence of one."""

    def __init__(self, plan: tuple[str, int] | None) -> None:
        self.plan = plan
        self.seen: Counter[str] = Counter()

    def __call__(self, stage: str) -> None:
        self.seen[stage] += 1
        if self.plan is not None and self.plan == (stage, self.seen[stage]):
            os.kill(os.getpid(), signal.SIGKILL)


def work(config: dict) -> None:
    """Poll, route and apply until nothing is left (or the planned kill)."""
    killer = Killer(config.get("kill"))
    queue = SQSQueueResource(**config["queue"])
    warehouse = WarehouseResource(url=config["warehouse_url"], schema_name=config["schema"])
    canvas = CanvasResource(base_url=config["canvas_url"], api_token=config["token"], max_retries=2)
    schema = warehouse.table_schema()
    phase = ["route"]
    with warehouse.connect() as conn, canvas.session() as session:
        request = session._request

        def counted(*args, **kwargs):  # each Canvas request of routing or of an apply
            killer(f"{phase[0]}-canvas")
            return request(*args, **kwargs)

        session._request = counted  # type: ignore[method-assign]
        with at_stages(killer):
            poll_queue(
                queue,
                queue.client(),
                conn,
                Destinations.one_institution(schema),
                5.0,
                receivers=2,
                chunk=10,
            )
            route_pending(conn, schema, session, tuple(config["target"]))
        phase[0] = "apply"
        if config.get("kill") == ("apply-write", 1):
            conn.execute("SELECT set_config(%s, '2', false)", (PAUSE_SETTING,))
        pending = pending_semesters(conn, schema, set(config["target"]))
        terms = fetch_terms(session) if pending else []
        for semester in pending:
            apply_semester_events(
                conn, schema, session, semester, find_term(terms, semester), datetime.now(UTC),
                tuple(config["target"]),
            )  # fmt: skip
