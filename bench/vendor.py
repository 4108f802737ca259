"""A vendor's deployment on this machine: 1, 10 and 50 sandbox institutions in one code location,
each changing every 60 s and publishing its Live Events to one shared queue.

    .venv/bin/python -m bench.vendor             # 1, 10 and 50 institutions, 8 minutes each
    .venv/bin/python -m bench.vendor --quick     # 1 and 2 institutions, 1 minute each (smoke)

Each size runs ``canvas-assets dev --institutions ...`` (the vendor's shape: an institutions
file, one code location, one shared queue) against an embedded PostgreSQL of the benchmark's
own, waits for every institution's first backfill of 2026SP, then measures for the window:

- RSS of the deployment's own processes (code server, webserver, daemon; runs apart), sampled
  every second; "at idle" is the median of the samples taken while no run was in flight. The
  sandboxes, moto and the change drivers (the ``canvas-assets dev`` process itself) and
  PostgreSQL are reported apart;
- the Live Events sensor's tick durations, and the runs started per hour, by job;
- CPU: the whole machine's, and the deployment's share (the machine's less the sandbox process
  and PostgreSQL);
- SQS send → row: each applied event's ``applied_at`` less its ``metadata.event_time`` (the
  sandbox stamps an event with the wall clock when it sends it; some formats carry whole
  seconds only).

It writes ``bench/vendor.json`` and the "A vendor's deployment" section of BENCHMARKS.md.
Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psutil
import psycopg
from psycopg import sql

from bench import report
from bench.harness import ROOT, postgres
from canvas_assets.warehouse.embedded import ensure_database
from canvas_devstack.processes import free_port, start_dev, stop_process_group

SEMESTER = "2026SP"
SAMPLE_SECONDS = 1.0  # runs last a few seconds: a slower sampling misses them
ROLES = {
    "code server": ("code-server", "api grpc"),
    "webserver": ("dagster-webserver", "dagster_webserver"),
    "daemon": ("dagster-daemon",),
    "runs": ("execute_run", "api execute_run"),
}
MB = 1024 * 1024


def _role(process: psutil.Process) -> str | None:
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return None
    if "execute_run" in command or (
        "spawn_main" in command and _role_of_parent(process) == "code server"
    ):  # the code server's gRPC server starts each run as a multiprocessing "spawn" child
        return "runs"
    for role, marks in ROLES.items():
        if any(mark in command for mark in marks):
            return role
    return None


def _role_of_parent(process: psutil.Process) -> str | None:
    try:
        parent = process.parent()
    except psutil.Error:
        return None
    return None if parent is None else _role(parent)


def _sample(dev: psutil.Process) -> dict[str, float]:
    """RSS (MB) by role of the dev process's descendants; the dev process itself apart."""
    rss = {role: 0.0 for role in ROLES} | {"sandbox, moto, change drivers": 0.0, "run_count": 0}
    try:
        rss["sandbox, moto, change drivers"] = dev.memory_info().rss / MB
        children = dev.children(recursive=True)
    except psutil.Error:
        return rss
    for child in children:
        role = _role(child)
        try:
            if role is not None:
                rss[role] += child.memory_info().rss / MB
                rss["run_count"] += role == "runs"
        except psutil.Error:
            continue
    return rss


def _postgres_processes() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else None


def _wait_for_backfills(db_url: str, names: list[str], proc, timeout: float) -> float:
    started = time.monotonic()
    with psycopg.connect(db_url, autocommit=True) as conn:
        waiting = list(names)
        while waiting:
            if proc.poll() is not None:
                raise RuntimeError("canvas-assets dev exited before the backfills finished")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{len(waiting)} institutions not imported in {timeout:.0f} s")
            still = []
            for name in waiting:
                query = sql.SQL(
                    "SELECT status FROM {}.semester_sync_status WHERE semester = %s"
                ).format(sql.Identifier(f"canvas_{name}"))
                try:
                    if conn.execute(query, (SEMESTER,)).fetchone() != ("synced",):
                        still.append(name)
                except psycopg.errors.UndefinedTable:
                    still.append(name)
            waiting = still
            time.sleep(2)
    return time.monotonic() - started


def _latencies(db_url: str, names: list[str], since: datetime) -> list[float]:
    found: list[float] = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        for name in names:
            query = sql.SQL(
                "SELECT EXTRACT(EPOCH FROM applied_at "
                "- (envelope->'metadata'->>'event_time')::timestamptz) FROM {} "
                "WHERE outcome = 'applied' AND received_at >= %s"
            ).format(sql.Identifier(f"canvas_{name}", "live_events"))
            found += [float(row[0]) for row in conn.execute(query, (since,))]
    return found


def _dagster_figures(home: Path, dagster_url: str, since: float, window: float) -> dict:
    """Tick durations of the Live Events sensor and runs per hour, from the instance."""
    os.environ["CANVAS_DAGSTER_PG_URL"] = dagster_url
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        durations = []
        for state in instance.all_instigator_state():
            if state.instigator_name != "canvas_live_events":
                continue
            for tick in instance.get_ticks(
                state.instigator_origin_id, state.selector_id, after=since, limit=100_000
            ):
                if tick.end_timestamp:
                    durations.append(tick.end_timestamp - tick.timestamp)
        created = datetime.fromtimestamp(since, UTC)
        runs = instance.get_runs(filters=dg.RunsFilter(created_after=created))
    by_job: dict[str, int] = {}
    for run in runs:
        by_job[run.job_name] = by_job.get(run.job_name, 0) + 1
    return {
        "ticks": len(durations),
        "tick_p50_s": _percentile(durations, 0.5),
        "tick_p95_s": _percentile(durations, 0.95),
        "tick_max_s": max(durations) if durations else None,
        "runs_per_hour": {job: n * 3600 / window for job, n in sorted(by_job.items())},
    }


def _measure(dev: psutil.Process, window: float) -> dict:
    """Samples over the window: RSS by role, CPU of the machine, the dev process, PostgreSQL."""
    samples, cpu_start = [], psutil.cpu_times()
    dev_start, pg = dev.cpu_times(), _postgres_processes()
    pg_start = _cpu_seconds(pg)
    started = time.monotonic()
    while time.monotonic() - started < window:
        samples.append(_sample(dev))
        time.sleep(SAMPLE_SECONDS)
    elapsed = time.monotonic() - started
    cpu_end, dev_end = psutil.cpu_times(), dev.cpu_times()
    busy = sum(getattr(cpu_end, f) - getattr(cpu_start, f) for f in ("user", "system", "nice"))
    sandbox = (dev_end.user + dev_end.system) - (dev_start.user + dev_start.system)
    postgres_cpu = _cpu_seconds(pg) - pg_start
    idle = [s for s in samples if not s["run_count"]] or samples
    services = [s["code server"] + s["webserver"] + s["daemon"] for s in idle]
    return {
        "samples": len(samples),
        "idle_samples": len(idle),
        "services_rss_idle_mb": statistics.median(services),
        "rss_idle_mb_by_role": {
            role: statistics.median(s[role] for s in idle)
            for role in ("code server", "webserver", "daemon")
        },
        # None when no sample caught a run in flight (runs last seconds; a second apart).
        "runs_rss_peak_mb": max((s["runs"] for s in samples if s["run_count"]), default=None),
        "runs_in_flight_peak": max(s["run_count"] for s in samples),
        "sandbox_process_rss_mb": statistics.median(
            s["sandbox, moto, change drivers"] for s in samples
        ),
        "postgres_rss_mb": sum(p.memory_info().rss for p in _postgres_processes()) / MB,
        "cpu_cores_machine": busy / elapsed,
        "cpu_cores_sandbox_process": sandbox / elapsed,
        "cpu_cores_postgres": postgres_cpu / elapsed,
        "cpu_cores_deployment": (busy - sandbox - postgres_cpu) / elapsed,
        "load_average_end": os.getloadavg()[0],
    }


def one_size(count: int, window: float, workdir: Path, db_url: str) -> dict:
    names = [f"i{n:02d}" for n in range(1, count + 1)]
    dagster_db = f"dagster_{uuid.uuid4().hex[:8]}"
    ensure_database(db_url, dagster_db)
    dagster_url = db_url.replace("/bench", f"/{dagster_db}", 1)
    home = workdir / f"home-{count}"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CANVAS_", "DAGSTER_", "AWS_"))
    }
    env |= {
        "CANVAS_WAREHOUSE_URL": db_url,
        "CANVAS_DAGSTER_PG_URL": dagster_url,
        "CANVAS_TARGET_SEMESTERS": SEMESTER,
    }
    args = ["--size", "small", "--port", str(free_port()), "--home", str(home),
            "--change-interval", "60", "--institutions", ",".join(names)]  # fmt: skip
    log = workdir / f"dev-{count}.log"
    proc = start_dev(args, env, log, cwd=ROOT)
    try:
        import_seconds = _wait_for_backfills(db_url, names, proc, timeout=3600)
        since, since_at = time.time(), datetime.now(UTC)
        measured = _measure(psutil.Process(proc.pid), window)
        latencies = _latencies(db_url, names, since_at)
        figures = _dagster_figures(home, dagster_url, since, window)
    finally:
        stop_process_group(proc, 120.0, signal.SIGINT)
    return {
        "institutions": count,
        "window_s": window,
        "first_imports_s": import_seconds,
        **measured,
        **figures,
        "events_applied": len(latencies),
        "latency_p50_s": _percentile(latencies, 0.5),
        "latency_p95_s": _percentile(latencies, 0.95),
        "latency_max_s": max(latencies) if latencies else None,
    }


def per_added_institution(sizes: list[dict]) -> float | None:
    """Idle RSS of the deployment's services per institution beyond the first."""
    if len(sizes) < 2:
        return None
    first, last = sizes[0], sizes[-1]
    added = last["institutions"] - first["institutions"]
    return (last["services_rss_idle_mb"] - first["services_rss_idle_mb"]) / added


def main() -> int:
    parser = argparse.ArgumentParser(description="A vendor's deployment (BENCHMARKS.md)")
    parser.add_argument("--quick", action="store_true", help="1 and 2 institutions, 1 minute.")
    parser.add_argument("--sizes", type=lambda v: [int(n) for n in v.split(",")])
    parser.add_argument("--minutes", type=float, help="Measured window per size.")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "vendor.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    sizes = args.sizes or ([1, 2] if args.quick else [1, 10, 50])
    window = 60 * (args.minutes or (1 if args.quick else 8))
    started = datetime.now(UTC)
    results: dict = {"date": started.isoformat(timespec="minutes"), "cpus": os.cpu_count()}
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"canvas-vendor-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True)
    with postgres(work) as db_url:
        results["sizes"] = []
        for count in sizes:
            try:
                results["sizes"].append(one_size(count, window, work, db_url))
            except Exception as exc:  # recorded as not measured, with the reason
                results["sizes"].append({"institutions": count, "error": repr(exc)[:500]})
            print(json.dumps(results["sizes"][-1], indent=1, default=str), flush=True)
    measured = [s for s in results["sizes"] if "error" not in s]
    results["rss_per_added_institution_mb"] = per_added_institution(measured)
    args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    if not args.quick:
        report.write_vendor_section(args.markdown, results)
    print(report.vendor_text(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
