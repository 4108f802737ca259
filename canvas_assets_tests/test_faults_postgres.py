"""PostgreSQL killed or restarted in the middle of a semester write and of a Live Events apply.

These tests run their own PostgreSQL (pgserver) so they can stop it without touching the shared
one. "In the middle of a write" is made exact: another session holds a row lock on a course
the write must update, so the write's transaction is open, part-written and waiting when
PostgreSQL goes down.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg import sql

from canvas_assets.canvas.fetch import fetch_terms, find_term
from canvas_assets.live_events.apply import apply_semester_events
from canvas_assets.live_events.land import Destinations
from canvas_assets.live_events.poll import poll_queue
from canvas_assets.live_events.route import route_pending
from canvas_assets.warehouse import WarehouseResource, status
from canvas_assets.warehouse.embedded import ensure_database

from .backfills import backfill, real_semesters, table_snapshot
from .truth import expected_semester, rename_course, rename_course_in_canvas, warehouse_semester

# A hang under injected faults fails fast instead of eating the CI budget.
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.slow,
]  # heavy reliability: PostgreSQL killed and restarted


class OwnPostgres:
    """A PostgreSQL server of this module's own, which tests may kill and start again."""

    def __init__(self, data_dir: Path) -> None:
        import pgserver

        self.server = pgserver.get_server(data_dir, cleanup_mode="delete")
        self.socket_dir = parse_qs(urlsplit(self.server.get_uri()).query)["host"][0]
        ensure_database(self.server.get_uri(), "canvas_faults")
        self.url = self.server.get_uri("canvas_faults")

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=60)

    def kill(self) -> None:
        """Immediate shutdown: every backend aborts at once, recovery runs on the next start."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start(self) -> None:
        log = str(self.server.pgdata / "log")
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")

    def restart(self) -> None:
        """Fast restart: open transactions are rolled back, sessions end, the server comes back."""
        self._pg_ctl("-m", "fast", "-w", "restart")

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # already stopped
            self._pg_ctl("-m", "fast", "-w", "stop")
        self.server.cleanup()


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnPostgres]:
    server = OwnPostgres(tmp_path_factory.mktemp("own-pg") / "data")
    yield server
    server.stop()


@pytest.fixture
def own_warehouse(own_postgres: OwnPostgres) -> Iterator[WarehouseResource]:
    warehouse = WarehouseResource(
        url=own_postgres.url, schema_name=f"faults_{uuid.uuid4().hex[:10]}"
    )
    yield warehouse
    with psycopg.connect(own_postgres.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(warehouse.schema_name)
            )
        )


def _write_blocked(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'canvas-assets' "
            "AND wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
    return bool(row and row[0])


def _in_the_middle_of_a_write(
    warehouse: WarehouseResource,
    semester: str,
    course_id: int,
    write: Callable[[], object],
    fault: Callable[[], None],
) -> dict:
    """Start ``write`` in a thread, wait until it is blocked on a row lock on ``course_id``
    (its transaction open and part-written), run ``fault``, and return what ``write`` did."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = write()
        except Exception as exc:
            outcome["error"] = exc

    holder = psycopg.connect(warehouse.url, autocommit=False)
    holder.execute(
        sql.SQL("SELECT 1 FROM {}.courses WHERE semester = %s AND institution_id = %s FOR UPDATE")
        .format(sql.Identifier(warehouse.schema_name)),
        (semester, course_id),
    )  # fmt: skip
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not _write_blocked(warehouse.url):
        assert thread.is_alive(), f"the write finished before it was blocked: {outcome}"
        assert time.monotonic() < deadline, "the write never reached the locked row"
        time.sleep(0.1)
    fault()
    holder.close()
    thread.join(120)
    assert not thread.is_alive()
    return outcome


def _card(url: str, schema: str, semester: str) -> tuple:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            sql.SQL(
                "SELECT status, last_error FROM {}.semester_sync_status WHERE semester = %s"
            ).format(sql.Identifier(schema)),
            (semester,),
        ).fetchone()


def _assert_truth(warehouse: WarehouseResource, institution, semester: str) -> None:
    with psycopg.connect(warehouse.url, autocommit=True) as conn:
        actual = warehouse_semester(conn, warehouse.schema_name, semester)
    expected = expected_semester(institution, semester)
    for table in expected:
        assert actual[table] == expected[table], table


def _snapshot(warehouse: WarehouseResource) -> dict:
    with psycopg.connect(warehouse.url, autocommit=True) as conn:
        return table_snapshot(conn, warehouse.schema_name)


def test_postgres_killed_mid_backfill_write_keeps_the_semester_and_the_card_says_failed(
    canvas, own_warehouse, own_postgres, institution, instance, figures
) -> None:
    """Without this, PostgreSQL dying in the middle of a semester write could leave the
    partition half-written, and the Imported Semesters card would say `syncing` forever
    because the failure handler wrote on the dead connection."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, own_warehouse, instance, semester).success
    before = _snapshot(own_warehouse)
    course_id = rename_course(institution, semester, "Renamed while PostgreSQL died")

    def kill_then_start() -> None:
        own_postgres.kill()
        time.sleep(1.0)  # down for a moment: the failed sync keeps trying to record it
        own_postgres.start()

    run = _in_the_middle_of_a_write(
        own_warehouse,
        semester,
        course_id,
        lambda: backfill(canvas, own_warehouse, instance, semester),
        kill_then_start,
    )
    assert not run["result"].success
    assert _snapshot(own_warehouse) == before  # the previous partition, intact
    state, error = _card(own_warehouse.url, own_warehouse.schema_name, semester)
    assert state == "failed" and error
    assert backfill(canvas, own_warehouse, instance, semester).success
    _assert_truth(own_warehouse, institution, semester)
    assert _card(own_warehouse.url, own_warehouse.schema_name, semester) == ("synced", None)
    figures(
        "PostgreSQL killed mid semester write",
        injection="pg_ctl stop -m immediate while the write waits on a row lock; start 1 s later",
        kills=1,
        previous_partition_intact=True,
        card_after_failure=f"{state}: {error.splitlines()[0][:80]}",
        next_run="succeeded, tables equal Canvas",
    )


def test_a_sync_that_could_not_record_its_failure_is_marked_failed_at_the_next_start(
    canvas, own_warehouse, own_postgres, institution, instance, monkeypatch, figures
) -> None:
    """Without this, a backfill whose PostgreSQL stays down longer than the failure handler
    waits (or whose worker is killed) leaves its card at `syncing` with no error for good."""
    monkeypatch.setattr(status, "FAILURE_RECORD_SECONDS", 0.5)
    semester = real_semesters(institution)[0]
    assert backfill(canvas, own_warehouse, instance, semester).success
    before = _snapshot(own_warehouse)
    course_id = rename_course(institution, semester, "Renamed during a long outage")
    run = _in_the_middle_of_a_write(
        own_warehouse,
        semester,
        course_id,
        lambda: backfill(canvas, own_warehouse, instance, semester),
        own_postgres.kill,
    )
    assert not run["result"].success
    own_postgres.start()
    assert _card(own_warehouse.url, own_warehouse.schema_name, semester)[0] == "syncing"
    with own_warehouse.connect() as conn:
        # A backfill that is running right now is left alone...
        assert status.recover_interrupted_syncs(conn, own_warehouse.schema_name, {semester}) == []
        recovered = status.recover_interrupted_syncs(
            conn, own_warehouse.schema_name, set(), started_before=timedelta(0)
        )
    assert recovered == [semester]
    assert _card(own_warehouse.url, own_warehouse.schema_name, semester) == (
        "failed",
        status.INTERRUPTED_ERROR,
    )
    assert _snapshot(own_warehouse) == before
    assert backfill(canvas, own_warehouse, instance, semester).success
    _assert_truth(own_warehouse, institution, semester)
    figures(
        "PostgreSQL down past the failure handler",
        injection="pg_ctl stop -m immediate mid write; started after the run gave up",
        kills=1,
        card_before_recovery="syncing",
        card_after_recover_interrupted_syncs="failed",
        previous_partition_intact=True,
        next_run="succeeded, tables equal Canvas",
    )


def test_postgres_restarted_mid_apply_leaves_its_events_pending_then_applies_them_once(
    canvas, own_warehouse, own_postgres, institution, instance, queue, figures
) -> None:
    """Without this, a PostgreSQL restart during a Live Events apply could half-write the
    courses, mark events applied that were not, or lose them; and the card would not say the
    apply failed."""
    semester = real_semesters(institution)[0]
    schema = own_warehouse.schema_name
    assert backfill(canvas, own_warehouse, instance, semester).success
    course_id = rename_course_in_canvas(institution, queue, semester, "Renamed by an event")
    session = canvas.session()
    term = find_term(fetch_terms(session), semester)
    with own_warehouse.connect() as conn:
        assert (
            poll_queue(queue, queue.client(), conn, Destinations.one_institution(schema)).landed
            == 1
        )
        route_pending(conn, schema, session, ())
    before = _snapshot(own_warehouse)

    def apply() -> object:
        with (
            status.recorded_apply(own_warehouse.connect, schema, semester),
            own_warehouse.connect() as conn,
        ):
            return apply_semester_events(conn, schema, session, semester, term, datetime.now(UTC))

    run = _in_the_middle_of_a_write(own_warehouse, semester, course_id, apply, own_postgres.restart)
    assert isinstance(run.get("error"), psycopg.OperationalError)
    assert _snapshot(own_warehouse) == before  # nothing of the apply was written
    with psycopg.connect(own_warehouse.url, autocommit=True) as conn:
        waiting = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.live_events WHERE applied_at IS NULL").format(
                sql.Identifier(schema)
            )
        ).fetchone()
    assert waiting == (1,)
    state, error = _card(own_warehouse.url, schema, semester)
    assert state == "synced" and error.startswith("Live Events apply failed")
    result = apply()
    assert (result.events, result.applied) == (1, 1)
    _assert_truth(own_warehouse, institution, semester)
    assert _card(own_warehouse.url, schema, semester) == ("synced", None)
    session.close()
    figures(
        "PostgreSQL restarted mid apply",
        injection="pg_ctl restart -m fast while the apply waits on a row lock",
        restarts=1,
        rows_written_by_failed_apply=0,
        events_left_pending=1,
        card_after_failure=error.splitlines()[0][:80],
        next_apply="applied 1 event once, tables equal Canvas",
    )
