"""The Dagster UI as a user meets it, in a real browser (Debian's chromium driven by Playwright)
against the real local stack: lineage, partitions, a backfill launched by clicking, sensors,
column schema, the Imported Semesters card and the stream checks. Screenshots are saved; with
CANVAS_ASSETS_SCREENSHOTS=docs/tour they refresh the README's tour."""

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dagster_graphql import DagsterGraphQLClient
from playwright.sync_api import Page, expect, sync_playwright
from psycopg import sql

from canvas_devstack.processes import (
    free_port,
    start_dev,
    stop_process_group,
    wait_until_ready,
)

from .stack import dg_runs, services_env
from .truth import semester_of

pytestmark = pytest.mark.slow  # a real browser against the whole local stack

CHROMIUM = os.environ.get("CANVAS_TEST_CHROMIUM", "/usr/bin/chromium")
# As the probe of this machine kind found: without these, chromium's background connections are
# refused by a closed network, many at a time.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def stack(postgres_url, sandbox, queue, sqs_endpoint, tmp_path) -> Iterator[dict]:
    """`canvas-assets dev` against the test's sandbox, queue and PostgreSQL; semesters are
    added as partitions but not backfilled, so the test's click launches the first backfill."""
    port = free_port()
    services = services_env(postgres_url, sandbox.url, queue, sqs_endpoint)
    schema = services["CANVAS_WAREHOUSE_SCHEMA"]
    env = {
        **os.environ,
        **services,
        "CANVAS_ASSETS_HOME": str(tmp_path / "home"),
        "CANVAS_AUTO_IMPORT_SEMESTERS": "false",
        "CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS": "5",
    }
    env.pop("CANVAS_ASSETS_DEV_EXIT_WHEN_READY", None)
    log_path = tmp_path / "dev.log"
    proc = start_dev(["--port", str(port)], env, log_path)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until_ready(proc, f"{url}/server_info"), log_path.read_text()[-3000:]
        yield {
            "url": url, "port": port, "schema": schema, "log": log_path, "proc": proc,
            "dagster_db": services["CANVAS_DAGSTER_PG_URL"],
        }  # fmt: skip
    finally:
        assert stop_process_group(proc, 90.0, signal.SIGINT), (
            "canvas-assets dev did not stop on Ctrl-C"
        )


def _visit(page: Page, url: str) -> None:
    """Open a page; dismiss Dagster's first-visit dialog when it shows."""
    page.goto(url)
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=4000)
        skip.click()
    except Exception:  # the dialog shows once per instance, not on every page
        pass


def _wait_for_status(conn, schema: str, semester: str, status: str, timeout: float) -> None:
    query = sql.SQL("SELECT status FROM {}.semester_sync_status WHERE semester = %s").format(
        sql.Identifier(schema)
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if conn.execute(query, (semester,)).fetchone() == (status,):
                return
        except psycopg.errors.UndefinedTable:
            pass
        time.sleep(1)
    raise AssertionError(f"{semester} never reached {status}")


def _launch_backfill_by_clicking(page: Page, base: str, semester: str) -> None:
    _visit(page, f"{base}/assets/canvas/courses?view=partitions")
    page.get_by_role("button", name="Materialize…").click()
    # The four tables are one multi-asset: Dagster asks to confirm they materialize together.
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text("Select a partition or create one").click()
    page.keyboard.type(semester)
    page.get_by_role("menuitem", name=semester).click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Launch 1 run").click()


def test_the_ui_shows_lineage_partitions_sensors_and_runs_a_clicked_backfill(
    stack, postgres_url, institution, sandbox, tmp_path
) -> None:
    """Without this, the UI could lose lineage, partitions, sensors, the column schema or the
    Imported Semesters card, or fail to launch a backfill, and only users would notice; and
    Ctrl-C could leave runs marked failed and the terminal could fill with Dagster's logs."""
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: run scripts/install-chromium.sh (or set CANVAS_TEST_CHROMIUM)"
    )
    base, shots = stack["url"], tmp_path / "screenshots"
    shots.mkdir()
    semester, slow = sorted(semester_of(t) for t in institution.terms.values() if t["sis_term_id"])[
        :2
    ]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _wait_for_status(conn, stack["schema"], semester, "added", 120)  # partitions added
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(60_000)
            _check_lineage(page, base, f"{stack['schema']}.courses", shots)
            _check_partitions_and_backfill(page, base, semester, shots)
            _wait_for_status(conn, stack["schema"], semester, "synced", 180)
            _check_backfill_result(page, base, semester, shots)
            _check_sensors_and_card(page, base, semester, shots)
            _check_what_the_schema_check_covered(page, base)
            sandbox.faults.latency_seconds = 5.0  # a backfill still running when Ctrl-C comes
            client = DagsterGraphQLClient("127.0.0.1", port_number=stack["port"])
            client.submit_job_execution("canvas_semester_sync", tags={"dagster/partition": slow})
            _wait_for_status(conn, stack["schema"], slow, "syncing", 120)
            browser.close()
        _check_ctrl_c_cancels_runs_in_flight(stack)
        card = sql.SQL("SELECT status, last_error FROM {}.semester_sync_status WHERE semester = %s")
        status, error = conn.execute(
            card.format(sql.Identifier(stack["schema"])), (slow,)
        ).fetchone()
        assert status == "failed" and "canceled" in error, (status, error)
    target = os.environ.get("CANVAS_ASSETS_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for shot in shots.glob("*.png"):
            shutil.copy(shot, Path(target) / shot.name)


def _check_lineage(page: Page, base: str, table: str, shots: Path) -> None:
    _visit(page, f"{base}/asset-groups/canvas")
    for node in ("live_events", "terms", "courses", "sections", "enrollments", "users"):
        expect(page.get_by_text(node, exact=True).first).to_be_visible()
    page.screenshot(path=shots / "1-lineage.png")
    _visit(page, f"{base}/assets/canvas/courses")
    upstream = page.get_by_text("Upstream assets").locator("..")
    expect(upstream).to_contain_text("live_events")
    expect(page.get_by_text("Element451 Code: Canvas course_code.")).to_be_visible()
    expect(page.get_by_text(table).first).to_be_visible()  # dagster/table_name
    page.screenshot(path=shots / "2-columns.png", full_page=True)


def _check_partitions_and_backfill(page: Page, base: str, semester: str, shots: Path) -> None:
    _visit(page, f"{base}/assets/canvas/courses?view=partitions")
    expect(page.get_by_text(semester, exact=True).first).to_be_visible()
    expect(page.get_by_text("Missing (4)")).to_be_visible()  # 3 semesters + the default term
    page.screenshot(path=shots / "3-partitions.png")
    _launch_backfill_by_clicking(page, base, semester)
    page.screenshot(path=shots / "4-backfill-launched.png")


def _check_backfill_result(page: Page, base: str, semester: str, shots: Path) -> None:
    _visit(page, f"{base}/runs")
    expect(page.get_by_text("Success").first).to_be_visible()
    page.screenshot(path=shots / "5-runs.png")
    _visit(page, f"{base}/assets/canvas/courses?view=partitions")
    expect(page.get_by_text("Materialized (1)")).to_be_visible()


def _check_sensors_and_card(page: Page, base: str, semester: str, shots: Path) -> None:
    for sensor in ("semester_auto_import", "canvas_live_events"):
        _visit(page, f"{base}/locations/canvas_assets/sensors/{sensor}")
        running = page.get_by_role("row", name="Running").get_by_role("checkbox")
        expect(running).to_be_checked()
        # A recorded tick proves the daemon evaluates the sensor. "Next tick" would not: Dagster
        # hides it whenever the daemon is a moment late (latest tick + minimum interval < now).
        latest = page.get_by_role("row", name="Latest tick")
        expect(latest).to_contain_text(re.compile(r"\d{1,2}:\d{2}:\d{2}"), timeout=60_000)
        page.screenshot(path=shots / f"6-sensor-{sensor}.png")
    _visit(page, f"{base}/assets/canvas/imported_semesters")
    card = page.get_by_role("row").filter(has_text=semester).first
    expect(card).to_contain_text("synced")
    # Readable at 1440 px: the last column (the error) is not cut off.
    error = page.get_by_role("columnheader", name="error").first
    box = error.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1440, box
    page.screenshot(path=shots / "7-imported-semesters.png", full_page=True)
    _visit(page, f"{base}/assets/canvas/live_events?view=checks")
    for check in ("lag", "quarantine_growth", "stream_flowing"):
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    page.screenshot(path=shots / "8-stream-checks.png")


def _check_what_the_schema_check_covered(page: Page, base: str) -> None:
    """A pandera_schema result says what its rows were, so an apply's re-read of one course
    never reads as a broken check of the partition."""
    _visit(page, f"{base}/assets/canvas/courses?view=checks")
    page.get_by_text("pandera_schema", exact=True).first.click()
    expect(
        page.get_by_text("the whole semester, read from Canvas by a backfill").first
    ).to_be_visible()


def _check_ctrl_c_cancels_runs_in_flight(stack: dict) -> None:
    """Ctrl-C ends the run in flight as canceled, not failed, says so, and says it stopped;
    the terminal held no access log and no traceback."""
    assert stop_process_group(stack["proc"], 120.0, signal.SIGINT), "dev did not stop on Ctrl-C"
    lines = stack["log"].read_text().splitlines()
    assert lines[-1].startswith("stopped:"), lines[-5:]
    said = "\n".join(lines)
    assert "HTTP/1.1" not in said and "Traceback" not in said, said[-3000:]
    assert len(lines) < 40, said  # addresses, the checks' lines: no Dagster chatter
    runs = dg_runs(stack["dagster_db"])
    assert "FAILURE" not in runs.values(), runs
    assert "CANCELED" in runs.values(), runs
