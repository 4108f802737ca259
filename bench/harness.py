"""What the benchmarks run on: an embedded PostgreSQL, the Canvas sandbox in its own process,
and a Dagster run launched the way a user launches one."""

from __future__ import annotations

import compileall
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
import requests
from psycopg import sql

from canvas_devstack.processes import free_port
from canvas_sandbox.model import Floor, TermShape, term_floor

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
# The backfill's phases to the millisecond come from its DEBUG log line, which Dagster records
# (and the CLI prints) once the logger is managed.
DAGSTER_YAML = """telemetry:
  enabled: false
python_logs:
  python_log_level: DEBUG
  managed_python_loggers:
    - canvas_assets.backfill.semester
"""


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def growth_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """The exponent k of ``seconds ~ size**k``: least squares on the logarithms."""
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


class Sandbox:
    """``canvas-assets sandbox`` in its own process, so serving never competes with the client
    for one interpreter; its own CPU time is read from ``/_sandbox/stats``."""

    def __init__(self, size: str, scale: float, latency_ms: float, workdir: Path, **extra) -> None:
        self.size, self.scale, self.latency_ms = size, scale, latency_ms
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.describe = workdir / f"shape-{size}-{scale}-{self.port}.json"
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Sandbox:
        command = [
            sys.executable, "-m", "canvas_assets", "sandbox", "--size", self.size,
            "--scale", str(self.scale), "--port", str(self.port), "--token", TOKEN,
            "--latency-ms", str(self.latency_ms), "--server-time", "--keep-alive",
            "--cache-pages", "--describe", str(self.describe),
        ]  # fmt: skip
        if self.extra.get("account_users"):
            command += ["--account-users", str(self.extra["account_users"])]
        if self.extra.get("network_ms"):
            command += ["--network-ms", str(self.extra["network_ms"])]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "Canvas sandbox" not in line:
            raise RuntimeError(f"sandbox did not start: {line!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def shape(self, semester: str) -> TermShape:
        raw = json.loads(self.describe.read_text())[semester]
        return TermShape(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})

    def floor(self, semester: str) -> Floor:
        return term_floor(self.shape(semester), self.latency_ms / 1000, server_time=True)

    def stats(self, new_window: bool = False) -> dict[str, float]:
        """The sandbox's counters; ``new_window``: and start timing a new first request."""
        url = f"{self.url}/_sandbox/stats"
        answer = requests.post(url, timeout=10) if new_window else requests.get(url, timeout=10)
        return answer.json()


def semester_of(sandbox: Sandbox) -> str:
    """The sandbox's last real semester (every size has 2026SP)."""
    return "2026SP"


@contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    """An embedded PostgreSQL for the whole benchmark; each measured run gets its own schema."""
    from canvas_assets.warehouse.embedded import embedded_database_url

    yield embedded_database_url(workdir / "postgres", "bench")


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def new_schema() -> str:
    return f"bench_{uuid.uuid4().hex[:10]}"


def dagster_backfill(
    sandbox: Sandbox, db_url: str, schema: str, workdir: Path, code: Path | None = None
) -> dict:
    """One backfill of the semester through ``dagster asset materialize`` (see
    ``bench/dagster_run.py``), with what the sandbox saw of it. ``code``: another checkout of
    the project (a git worktree) whose ``canvas_assets`` the run loads instead of this one's."""
    home = workdir / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CANVAS_BASE_URL": sandbox.url,
        "CANVAS_API_TOKEN": TOKEN,
        "CANVAS_WAREHOUSE_URL": db_url,
        "CANVAS_WAREHOUSE_SCHEMA": schema,
    }
    if code is not None:  # for dagster_run.py's own imports; `-m dagster` finds it in its cwd
        env["PYTHONPATH"] = str(code)
    for name in ("CANVAS_LIVE_EVENTS_QUEUE_URL", "CANVAS_INSTITUTION", "CANVAS_TARGET_SEMESTERS"):
        env.pop(name, None)
    # The project's bytecode compiled, as pip compiles an installed wheel's: otherwise a machine
    # that writes none (PYTHONDONTWRITEBYTECODE) compiles the project in every run it times.
    compileall.compile_dir((code or ROOT) / "canvas_assets", quiet=1)
    before = sandbox.stats(new_window=True)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dagster_run.py"), semester_of(sandbox)],
        env=env,
        capture_output=True,
        text=True,
        cwd=code or ROOT,
    )
    after = sandbox.stats()
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"bench/dagster_run.py failed: {done.stderr[-3000:]}") from None
    if not result["ok"]:
        raise RuntimeError(f"the Dagster run failed:\n{result.get('output_tail')}")
    result["requests"] = after["admitted"] - before["admitted"]
    result["throttled"] = after["throttled"] - before["throttled"]
    result["sandbox_cpu_s"] = after["cpu_seconds"] - before["cpu_seconds"]
    phases = result["phases"]
    result["partition_s"] = sum(phases.values())
    result["launch_s"] = result["wall_s"] - (result["step_s"] or result["partition_s"])
    # From the command's start to Canvas's first request, and from Canvas's last answer to the
    # command's end (the map, validate and write left, then the run's own end and exit).
    result["to_first_request_s"] = after["first_request_at"] - result["started_at"]
    result["after_last_answer_s"] = result["ended_at"] - after["last_answer_at"]
    # Of that, the backfill's own work (map, validate, write) until it was done.
    result["work_after_last_answer_s"] = result["done_at"] - after["last_answer_at"]
    return result
