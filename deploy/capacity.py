"""Measure the figures of DEPLOYMENT.md's capacity plan on this machine.

Backfills every semester of a sandbox institution through Dagster (the real asset, a
PostgreSQL-backed instance from deploy/compose/dagster.yaml, the sandbox over HTTP with a network
latency), then re-backfills the first one unchanged (what the nightly reconciliation costs), and
prints, per run: Canvas requests, rows, wall seconds, PostgreSQL WAL bytes written (warehouse and
Dagster storage together), and the Dagster event-log rows and bytes the run added; then the
warehouse and Dagster database sizes, the process's peak memory, and how long loading the code
location takes (the fixed cost of starting every run and code server).

    .venv/bin/python deploy/capacity.py --size large --latency-ms 20

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import psycopg
import requests

from canvas_assets.canvas import CanvasResource
from canvas_assets.canvas.fetch import fetch_terms
from canvas_assets.defs.assets import build_semester_tables
from canvas_assets.settings import Settings
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.embedded import ensure_database
from canvas_devstack.processes import free_port

DEPLOY = Path(__file__).resolve().parent
TOKEN = "capacity-token"
SCHEMA = "canvas"
TABLES = ("courses", "sections", "enrollments", "users")


def _lsn(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]


def _start_sandbox(size: str, latency_ms: float, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "canvas_assets", "sandbox", "--size", size]
    command += ["--port", str(port), "--token", TOKEN, "--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/v1/accounts/self", timeout=2)
            return proc
        except requests.ConnectionError:
            assert proc.poll() is None, "the sandbox exited"
            time.sleep(1)
    raise RuntimeError("the sandbox did not start")


def _load_seconds() -> float:
    """Median wall time of importing the code location in a fresh interpreter."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import canvas_assets.definitions"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _backfill(instance, canvas, warehouse, semester, admin, dagster_conn) -> dict:
    if not instance.has_dynamic_partition("semester", semester):
        instance.add_dynamic_partitions("semester", [semester])
    wal_before, started = _lsn(admin), time.perf_counter()
    result = dg.materialize(
        [build_semester_tables(Settings())],
        partition_key=semester,
        resources={"canvas": canvas, "warehouse": warehouse},
        instance=instance,
    )
    seconds, wal = time.perf_counter() - started, _lsn(admin) - wal_before
    requests_total = max(
        int(event.materialization.metadata["canvas_requests_run_total"].value)
        for event in result.get_asset_materialization_events()
        if "canvas_requests_run_total" in event.materialization.metadata
    )
    rows = sum(
        admin.execute(
            f"SELECT count(*) FROM {SCHEMA}.{table} WHERE semester = %s", (semester,)
        ).fetchone()[0]
        for table in TABLES
    )
    events, event_bytes = dagster_conn.execute(
        "SELECT count(*), coalesce(sum(length(event)), 0) FROM event_logs WHERE run_id = %s",
        (result.run_id,),
    ).fetchone()
    return {
        "semester": semester,
        "seconds": round(seconds, 1),
        "canvas_requests": requests_total,
        "rows": rows,
        "wal_bytes": int(wal),
        "wal_bytes_per_row": round(int(wal) / rows) if rows else None,
        "event_log_rows": events,
        "event_log_bytes": int(event_bytes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()

    import pgserver

    workdir = Path(tempfile.mkdtemp(prefix="canvas-capacity-"))
    server = pgserver.get_server(workdir / "pg", cleanup_mode="delete")
    sandbox = _start_sandbox(args.size, args.latency_ms, port := free_port())
    try:
        for database in ("warehouse", "dagster"):
            ensure_database(server.get_uri(), database)
        home = workdir / "dagster_home"
        home.mkdir()
        shutil.copyfile(DEPLOY / "compose" / "dagster.yaml", home / "dagster.yaml")
        socket_dir = server.get_uri().split("host=")[1]
        os.environ.update(
            DAGSTER_POSTGRES_HOST="",
            DAGSTER_POSTGRES_PORT="5432",
            DAGSTER_POSTGRES_USER="postgres",
            DAGSTER_POSTGRES_PASSWORD="",
            DAGSTER_POSTGRES_DB="dagster",
            PGHOST=socket_dir,
        )
        canvas = CanvasResource(base_url=f"http://127.0.0.1:{port}", api_token=TOKEN)
        warehouse = WarehouseResource(url=server.get_uri("warehouse"), schema_name=SCHEMA)
        with canvas.session() as session:
            terms = fetch_terms(session)
        semesters = sorted(t["sis_term_id"] for t in terms if t.get("sis_term_id"))
        runs = []
        with (
            dg.DagsterInstance.from_config(str(home)) as instance,
            psycopg.connect(server.get_uri("warehouse"), autocommit=True) as admin,
            psycopg.connect(server.get_uri("dagster"), autocommit=True) as dagster_conn,
        ):
            for semester in semesters:
                runs.append(_backfill(instance, canvas, warehouse, semester, admin, dagster_conn))
                print(json.dumps(runs[-1]), flush=True)
            repeat = _backfill(instance, canvas, warehouse, semesters[0], admin, dagster_conn)
            repeat["unchanged_rebackfill"] = True
            runs.append(repeat)
            print(json.dumps(repeat), flush=True)
            sizes = {
                # Tables and their indexes in the warehouse schema (every semester above).
                "warehouse_schema_bytes": int(
                    admin.execute(
                        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = %s AND c.relkind = 'r'",
                        (SCHEMA,),
                    ).fetchone()[0]
                ),
                "warehouse_database_bytes": admin.execute(
                    "SELECT pg_database_size('warehouse')"
                ).fetchone()[0],
                "dagster_database_bytes": admin.execute(
                    "SELECT pg_database_size('dagster')"
                ).fetchone()[0],
            }
        summary = {
            "size": args.size,
            "latency_ms": args.latency_ms,
            "semesters": len(semesters),
            **sizes,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "code_location_load_seconds": round(_load_seconds(), 1),
            "cpus": os.cpu_count(),
        }
        print(json.dumps(summary), flush=True)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
