"""Canvas misbehaving during a backfill, and Canvas's schema drifting.

Each scenario injects real faults in the sandbox (over HTTP) while a semester backfill runs,
after Canvas changed a course. A transient fault (a burst of 5xx mid-sync, timeouts, resets, a
throttling storm, one broken page) must be ridden out: the backfill completes and equals
Canvas. Canvas staying down must fail the backfill without writing anything (the previous
partition intact, the card `failed`), and a retry with Canvas healthy then succeeds. Every
scenario checks that its fault was really injected.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from canvas_assets.canvas import CanvasResource
from canvas_assets.warehouse import WarehouseResource
from canvas_sandbox import SandboxServer, generate_institution
from canvas_sandbox.faults import Faults, PageFault

from .backfills import backfill, real_semesters, table_snapshot
from .conftest import SANDBOX_TOKEN
from .truth import expected_semester, warehouse_semester

# A hang under injected faults fails fast instead of eating the CI budget.
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.slow,
]  # heavy reliability: Canvas faults during backfills


class Stage:
    """One semester of one sandbox, backfilled once, shared by this module's scenarios."""

    def __init__(self, postgres_url: str) -> None:
        self.institution = generate_institution("small", seed=7)
        self.sandbox = SandboxServer(self.institution, token=SANDBOX_TOKEN).start()
        self.canvas = CanvasResource(
            base_url=self.sandbox.url,
            api_token=SANDBOX_TOKEN,
            max_retries=4,
            request_timeout_seconds=1.0,
            max_throttle_retries=12,
        )
        self.warehouse = WarehouseResource(
            url=postgres_url, schema_name=f"faults_{uuid.uuid4().hex[:8]}"
        )
        self.instance = dg.DagsterInstance.ephemeral()
        self.semester = real_semesters(self.institution)[0]
        self.renames = 0

    def backfill(self) -> dg.ExecuteInProcessResult:
        return backfill(self.canvas, self.warehouse, self.instance, self.semester)

    def snapshot(self) -> dict:
        with self.warehouse.connect() as conn:
            return table_snapshot(conn, self.warehouse.schema_name)

    def card(self) -> tuple:
        with self.warehouse.connect() as conn:
            return conn.execute(
                sql.SQL(
                    "SELECT status, last_error FROM {}.semester_sync_status WHERE semester = %s"
                ).format(sql.Identifier(self.warehouse.schema_name)),
                (self.semester,),
            ).fetchone()

    def equals_canvas(self) -> bool:
        with self.warehouse.connect() as conn:
            actual = warehouse_semester(conn, self.warehouse.schema_name, self.semester)
        return actual == expected_semester(self.institution, self.semester)

    def change_canvas(self) -> None:
        """A change a half-written or skipped backfill would show."""
        self.renames += 1
        course_id = list(expected_semester(self.institution, self.semester)["courses"])[0]
        with self.institution.lock:
            self.institution.courses[course_id]["name"] = f"Renamed {self.renames}"

    def close(self) -> None:
        self.sandbox.stop()
        self.instance.dispose()
        with psycopg.connect(self.warehouse.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(self.warehouse.schema_name)
                )
            )


@pytest.fixture(scope="module")
def stage(postgres_url: str) -> Iterator[Stage]:
    shared = Stage(postgres_url)
    assert shared.backfill().success
    yield shared
    shared.close()


def _second_page_path(sandbox: SandboxServer) -> str:
    """A list the backfill pages through (its page 2 was requested)."""
    for _, path, status in sandbox.request_log:
        if status == 200 and "page=2" in path:
            return path.split("?", 1)[0]
    raise AssertionError("the backfill paged through no list: nothing to break halfway")


def _storm_for(seconds: float) -> Callable[[Faults], None]:
    def start(faults: Faults) -> None:
        faults.throttle_storm = True
        threading.Timer(seconds, lambda: setattr(faults, "throttle_storm", False)).start()

    return start


def _burst_mid_sync(faults: Faults) -> None:
    """Nine 5xx answers in a row, once the fan-out is under way (not all on the first request,
    which no retry budget could ride out alone)."""
    faults.fail_after = 10
    faults.fail_next.extend([500, 502, 503] * 3)


COMPLETES, FAILS = "completes", "fails"
SCENARIOS: dict[str, tuple[Callable[[Faults], None], str]] = {
    "5xx burst": (_burst_mid_sync, COMPLETES),
    "timeouts": (
        lambda f: (setattr(f, "timeout_rate", 0.15), setattr(f, "timeout_seconds", 2.0)),
        COMPLETES,
    ),
    "connection resets": (lambda f: setattr(f, "reset_rate", 0.15), COMPLETES),
    "throttling storm": (_storm_for(1.5), COMPLETES),
    "Canvas down (every request 5xx)": (lambda f: setattr(f, "error_rate", 1.0), FAILS),
}


def _run_scenario(
    stage: Stage, inject: Callable[[Faults], None], expected: str, figures, name: str
) -> None:
    stage.change_canvas()
    before = stage.snapshot()
    faults = stage.sandbox.faults
    faults.counts.clear()
    throttled_before = stage.sandbox.stats.as_dict().get("throttled", 0)
    inject(faults)
    try:
        result = stage.backfill()
    finally:
        stage.sandbox.faults = Faults()  # Canvas is healthy again
    injected = dict(faults.counts)
    throttled = stage.sandbox.stats.as_dict().get("throttled", 0) - throttled_before
    if throttled:
        injected["throttled 403"] = throttled
    assert injected, f"{name}: no fault was injected"
    failure = result.failure_data_for_node("canvas_semester_tables")
    error = failure.error.message if failure and failure.error else ""
    assert result.success == (expected == COMPLETES), f"{name}: expected it {expected}: {error}"
    if result.success:
        assert stage.equals_canvas()
        assert stage.card() == ("synced", None)
        outcome = "completed, tables equal Canvas"
    else:
        assert stage.snapshot() == before  # failed without writing
        state, error = stage.card()
        assert state == "failed" and error
        assert stage.backfill().success  # the retry, Canvas healthy
        assert stage.equals_canvas()
        outcome = f"failed without writing ({error.splitlines()[0][:70]}); retry succeeded"
    figures(f"Canvas: {name}", injected=injected, outcome=outcome)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_backfill_rides_out_transient_canvas_faults_and_writes_nothing_when_canvas_is_down(
    stage: Stage, name: str, figures
) -> None:
    """Without this, 5xx bursts, timeouts, connection resets or a throttling storm mid-backfill
    could fail a semester that retries would have saved, and Canvas going down could
    half-write it, fail it for good, or leave the card wrong."""
    inject, expected = SCENARIOS[name]
    _run_scenario(stage, inject, expected, figures, name)


@pytest.mark.parametrize("action", ["status", "reset", "truncate"])
def test_a_page_that_fails_halfway_through_pagination_never_half_writes(
    stage: Stage, action: str, figures
) -> None:
    """Without this, a list whose second page fails (an error, a dropped connection, a body
    cut off mid-transfer) after the first page was read could be taken as the whole list:
    the objects on later pages would be marked deleted."""
    path = _second_page_path(stage.sandbox)
    fault = PageFault(path, page=2, action=action, status=503, times=1)
    _run_scenario(
        stage,
        lambda f: f.page_faults.append(fault),
        COMPLETES,
        figures,
        f"page 2 of {path}: {action}",
    )


def test_unknown_new_fields_from_canvas_are_tolerated(stage: Stage, figures) -> None:
    """Without this, Canvas adding a field to its JSON (it does, without notice) would fail
    every backfill."""
    stage.change_canvas()
    stage.sandbox.faults.extra_fields = {"brand_new_field": {"nested": [1, 2]}, "score_v2": 1.5}
    try:
        result = stage.backfill()
    finally:
        stage.sandbox.faults = Faults()
    assert result.success and stage.equals_canvas()
    figures("schema drift: unknown new fields", injected="2 new fields on every object",
            outcome="completed, tables equal Canvas")  # fmt: skip


def test_a_missing_required_field_fails_validation_naming_it_and_writes_nothing(
    stage: Stage, figures
) -> None:
    """Without this, Canvas dropping a field the tables need (an enrollment's `type`, which
    becomes `role`) would write rows with holes, or fail with an error that does not say
    which field."""
    stage.change_canvas()
    before = stage.snapshot()
    stage.sandbox.faults.drop_fields = {"/enrollments": ("type",)}
    try:
        result = stage.backfill()
    finally:
        stage.sandbox.faults = Faults()
    assert not result.success
    failure = result.failure_data_for_node("canvas_semester_tables")
    message = failure.error.message if failure and failure.error else ""
    assert "enrollments" in message and "role" in message, message
    assert stage.snapshot() == before
    state, error = stage.card()
    assert state == "failed" and "role" in error
    assert stage.backfill().success and stage.equals_canvas()
    figures(
        "schema drift: a required field missing",
        injected="enrollments without `type`",
        outcome=f"failed validation, nothing written: {error.splitlines()[1][:80]}",
    )
