"""The real thing: `canvas-assets dev` runs the Dagster webserver and daemon; its sensors import
a semester and then follow a Live Event from SQS into PostgreSQL with nobody launching a run."""

import os
import signal
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
from psycopg import sql

from canvas_assets.tools.processes import free_port
from canvas_assets.warehouse.embedded import ensure_database

from .conftest import SANDBOX_TOKEN
from .truth import rename_course_in_canvas, semester_of


def _database_url(server_url: str, database: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))


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
    schema = f"e2e_{uuid.uuid4().hex[:8]}"
    dagster_db = f"dagster_{uuid.uuid4().hex[:8]}"
    ensure_database(postgres_url, dagster_db)
    log_path = tmp_path / "dev.log"
    env = {
        **os.environ,
        "CANVAS_ASSETS_HOME": str(tmp_path / "home"),
        "CANVAS_BASE_URL": sandbox.url,
        "CANVAS_API_TOKEN": SANDBOX_TOKEN,
        "CANVAS_WAREHOUSE_URL": postgres_url,
        "CANVAS_WAREHOUSE_SCHEMA": schema,
        "CANVAS_DAGSTER_PG_URL": _database_url(postgres_url, dagster_db),
        "CANVAS_LIVE_EVENTS_QUEUE_URL": queue.queue_url,
        "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CANVAS_TARGET_SEMESTERS": semester,
        "CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS": "5",
        "CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS": "5",
    }
    env.pop("CANVAS_ASSETS_DEV_EXIT_WHEN_READY", None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "canvas_assets", "dev", "--port", str(free_port())],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, log_path.read_text(errors="replace")[-3000:]
    time.sleep(1)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
