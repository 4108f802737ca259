"""The real thing: `canvas-assets dev` runs the Dagster webserver and daemon; its sensors import
a semester and then follow a Live Event from SQS into PostgreSQL with nobody launching a run."""

import contextlib
import os
import signal
import time
import uuid

import psutil
import psycopg
import pytest
from psycopg import sql

from canvas_assets.warehouse.embedded import ensure_database
from canvas_devstack.processes import free_port, start_dev, stop_process_group

from .stack import database_url, services_env
from .truth import rename_course_in_canvas, semester_of

pytestmark = pytest.mark.slow  # the whole local stack with Dagster's daemon


def _wait_for(query, params, expected, conn, timeout: float, proc) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        assert proc.poll() is None, "canvas-assets dev exited early"
        if conn.execute(query, params).fetchone() == expected:
            return time.monotonic() - start
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {expected}")


def test_live_event_reaches_postgres_through_the_daemon(
    postgres_url, sandbox, institution, queue, sqs_endpoint, tmp_path
) -> None:
    """Without this, sensors that work when called by tests could still be dead in the daemon."""
    semester = sorted(semester_of(t) for t in institution.terms.values() if t["sis_term_id"])[0]
    log_path = tmp_path / "dev.log"
    services = services_env(postgres_url, sandbox.url, queue, sqs_endpoint)
    schema = services["CANVAS_WAREHOUSE_SCHEMA"]
    env = {
        **os.environ,
        **services,
        "CANVAS_ASSETS_HOME": str(tmp_path / "home"),
        "CANVAS_TARGET_SEMESTERS": semester,
        "CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS": "5",
        "CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS": "5",
    }
    env.pop("CANVAS_ASSETS_DEV_EXIT_WHEN_READY", None)
    proc = start_dev(["--port", str(free_port())], env, log_path)
    status = sql.SQL("SELECT status FROM {}.semester_sync_status WHERE semester = %s").format(
        sql.Identifier(schema)
    )
    course_name = sql.SQL(
        "SELECT name FROM {}.courses WHERE semester = %s AND institution_id = %s"
    ).format(sql.Identifier(schema))
    children: list[psutil.Process] = []
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            # The schema appears once the first sensor tick runs its migrations.
            deadline = time.monotonic() + 240
            while True:
                assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
                try:
                    if conn.execute(status, (semester,)).fetchone() == ("synced",):
                        break
                except psycopg.errors.UndefinedTable:
                    pass
                assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
                time.sleep(2)
            children = psutil.Process(proc.pid).children(recursive=True)

            course_id = rename_course_in_canvas(institution, queue, semester, "Renamed in Canvas")
            _wait_for(course_name, (semester, course_id), ("Renamed in Canvas",), conn, 180, proc)
    finally:
        stopped = stop_process_group(proc, 90.0, signal.SIGINT)
    log = log_path.read_text(errors="replace")
    assert stopped, "canvas-assets dev did not stop on Ctrl-C within 90 s"
    assert proc.returncode == 0, log[-3000:]
    time.sleep(1)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    # A calm console: no superseded-command warning, run events at INFO.
    assert "superseded" not in log
    assert " - DEBUG - " not in log


@pytest.mark.parametrize("oauth", [False, True], ids=["token", "developer-key"])
def test_two_institutions_in_one_local_stack_are_both_imported(
    postgres_url, tmp_path, oauth
) -> None:
    """Without this, a vendor's shape on a laptop (an institutions file, one code location,
    one shared queue every sandbox publishes to) could collide on asset keys, partitions,
    pools or warehouse schemas, and only the second college to be onboarded would notice; and
    `--oauth` (each institution reached with a developer key whose tokens it shares through its
    schema) could hand the code location a key that does not work."""
    dagster_db = f"dagster_{uuid.uuid4().hex[:8]}"
    ensure_database(postgres_url, dagster_db)
    suffix = uuid.uuid4().hex[:6]
    names = [f"north{suffix}", f"south{suffix}"]
    env = {
        **os.environ,
        "CANVAS_WAREHOUSE_URL": postgres_url,
        "CANVAS_DAGSTER_PG_URL": database_url(postgres_url, dagster_db),
        "CANVAS_TARGET_SEMESTERS": "2026SP",
        "CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS": "5",
    }
    for name in ("CANVAS_ASSETS_DEV_EXIT_WHEN_READY", "CANVAS_BASE_URL", "CANVAS_ASSETS_HOME"):
        env.pop(name, None)
    env.pop("CANVAS_LIVE_EVENTS_QUEUE_URL", None)
    log_path = tmp_path / "dev.log"
    args = [
        "--size", "small", "--port", str(free_port()), "--home", str(tmp_path / "home"),
        "--institutions", ",".join(names),
    ]  # fmt: skip
    if oauth:  # tokens of ten seconds: the imports outlive some
        args += ["--oauth", "--token-lifetime", "10"]
    proc = start_dev(args, env, log_path)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for name in names:
                status = sql.SQL("SELECT status FROM {}.semester_sync_status").format(
                    sql.Identifier(f"canvas_{name}")
                )
                deadline = time.monotonic() + 240
                while True:
                    assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
                    with contextlib.suppress(psycopg.errors.UndefinedTable):
                        if conn.execute(status).fetchall() == [("synced",)]:
                            break
                    assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                    time.sleep(2)
            counts = [_row_count(conn, f"canvas_{name}", "courses") for name in names]
            tokens = [_row_count(conn, f"canvas_{name}", "canvas_access_token") for name in names]
    finally:
        assert stop_process_group(proc, 90.0, signal.SIGINT), (
            "canvas-assets dev did not stop on Ctrl-C"
        )
    assert all(counts), counts  # each institution's own sandbox, each in its own schema
    log = log_path.read_text(errors="replace")
    assert all(f"institution {name}" in log for name in names)
    servers = (tmp_path / "home" / "logs" / "code-server.log").read_text(errors="replace")
    assert "one shared queue" in log and servers.count("Started Dagster code server for") == 1
    assert tokens == ([1, 1] if oauth else [0, 0])  # a key's shared token, in each schema
    assert ("developer key" in log) == oauth


def _row_count(conn: psycopg.Connection, schema: str, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
    return conn.execute(query).fetchone()[0]
