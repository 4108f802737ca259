"""Benchmark: one semester backfill from the sandbox into PostgreSQL.

Runs the real fetch → pandera → COPY/upsert path against the Canvas sandbox over HTTP with a
per-request latency (default 20 ms, like a nearby Canvas) and Canvas's throttle, on the embedded
PostgreSQL, and prints median figures over several repetitions for two client settings:
sequential (one request in flight) and the default adaptive concurrency.

    .venv/bin/python bench/backfill_semester.py --size large --repeat 3

Figures: wall seconds (fetch / validate / write), Canvas requests, throttle waits, rows, and
rows per second; then the speed-up of adaptive over sequential fetching.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from canvas_assets.canvas import CanvasResource
from canvas_assets.canvas.fetch import fetch_semester, fetch_terms, find_term
from canvas_assets.sandbox import SandboxServer, generate_institution
from canvas_assets.tables import semester_frames, validate_semester
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.embedded import embedded_database_url
from canvas_assets.warehouse.writes import write_semester

TOKEN = "bench-token"


def one_run(sandbox: SandboxServer, db_url: str, semester: str, concurrency: int) -> dict:
    canvas = CanvasResource(base_url=sandbox.url, api_token=TOKEN, max_concurrency=concurrency)
    warehouse = WarehouseResource(url=db_url, schema_name=f"bench_{uuid.uuid4().hex[:8]}")
    session = canvas.session()
    started = time.perf_counter()
    term = find_term(fetch_terms(session), semester)
    snapshot = fetch_semester(session, term, semester, datetime.now(UTC))
    fetched = time.perf_counter()
    raw = semester_frames(snapshot)
    report = validate_semester(semester, term.get("sis_term_id"), raw)
    assert report.ok, report.message(semester)
    validated = time.perf_counter()
    with warehouse.connect() as conn:
        write_semester(conn, warehouse.table_schema(), semester, report.frames, datetime.now(UTC))
        conn.execute(f"DROP SCHEMA {warehouse.table_schema()} CASCADE")
    written = time.perf_counter()
    return {
        "fetch_s": fetched - started,
        "validate_s": validated - fetched,
        "write_s": written - validated,
        "total_s": written - started,
        "requests": session.stats.requests,
        "throttle_waits": session.stats.throttle_waits,
        "rows": sum(len(f) for f in report.frames.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large", choices=["small", "medium", "large"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    institution = generate_institution(args.size, seed=0)
    semester = sorted(t["sis_term_id"] for t in institution.terms.values() if t["sis_term_id"])[-1]
    with tempfile.TemporaryDirectory() as tmp:
        db_url = embedded_database_url(Path(tmp) / "pg")
        sandbox = SandboxServer(institution, token=TOKEN).start()
        sandbox.faults.latency_seconds = args.latency_ms / 1000
        try:
            results: dict[str, list[dict]] = {}
            for label, concurrency in (("sequential", 1), ("adaptive", args.concurrency)):
                results[label] = []
                for _ in range(args.repeat):
                    time.sleep(2)  # let the throttle bucket drain between runs
                    results[label].append(one_run(sandbox, db_url, semester, concurrency))
        finally:
            sandbox.stop()

    print(
        f"semester {semester} of size {args.size}, latency {args.latency_ms:.0f} ms/request, "
        f"median of {args.repeat} runs"
    )
    print(f"{'client':<12}{'total s':>9}{'fetch s':>9}{'valid. s':>9}{'write s':>9}"
          f"{'requests':>10}{'throttled':>10}{'rows':>8}{'rows/s':>9}")  # fmt: skip
    medians = {}
    for label, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        medians[label] = med
        print(
            f"{label:<12}{med['total_s']:>9.2f}{med['fetch_s']:>9.2f}{med['validate_s']:>9.2f}"
            f"{med['write_s']:>9.2f}{med['requests']:>10.0f}{med['throttle_waits']:>10.0f}"
            f"{med['rows']:>8.0f}{med['rows'] / med['total_s']:>9.0f}"
        )
    ratio = medians["sequential"]["total_s"] / medians["adaptive"]["total_s"]
    print(f"adaptive vs sequential: {ratio:.1f}x faster end to end")


if __name__ == "__main__":
    main()
