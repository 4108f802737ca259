"""One semester backfill through Dagster, as a user launches it: ``dagster asset materialize``.

Run by ``bench/run.py`` in its own process, so that this process's children are exactly the
Dagster run: their peak resident memory is ``RUSAGE_CHILDREN``'s. Prints one JSON line: the
run's wall time, the step's own time (so the fixed cost of launching a run is the rest), the
backfill's phases as the run logged them, and the peak RSS.

    DAGSTER_HOME=... CANVAS_BASE_URL=... python bench/dagster_run.py 2026SP
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

import canvas_assets
from canvas_assets.tables import SEMESTER_TABLES

PHASES = re.compile(
    r"Semester (\S+) phases: ((?:\w+ [\d.]+ s(?:, )?)+) \(Canvas: (\d+) requests, (\d+) throttled\)"
    r" done at ([\d.]+)"
)
# The staged tables' own work, summed over their chunks (most of it during the fetch).
STAGED = re.compile(r"; staged: ((?:\w+ [\d.]+ s(?:, )?)+)")
# Dagster writes a step's duration as "850ms", "5.4s", "1m56s" or "1h1m".
STEP = re.compile(
    r'Finished execution of step "canvas_semester_tables" in ((?:[\d.]+(?:ms|h|m|s))+)'
)
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def named_seconds(text: str) -> dict[str, float]:
    """``fetch 1.234 s, map 0.1 s`` → {"fetch": 1.234, "map": 0.1}."""
    return {name: float(sec) for name, sec in re.findall(r"(\w+) ([\d.]+) s", text)}


def seconds(duration: str) -> float:
    return sum(float(n) * UNITS[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", duration))


def main(semester: str) -> None:
    with dg.DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition("semester", semester):
            instance.add_dynamic_partitions("semester", [semester])
    select = ",".join(f"canvas/{spec.name}" for spec in SEMESTER_TABLES)
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize",
        "-m", "canvas_assets.definitions", "--select", select, "--partition", semester,
    ]  # fmt: skip
    started_at, started = time.time(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall, ended_at = time.perf_counter() - started, time.time()
    output = done.stdout + done.stderr
    phases = PHASES.search(output)
    step = STEP.search(output)
    staged = STAGED.search(output)
    result = {
        "ok": done.returncode == 0 and phases is not None,
        "wall_s": wall,
        "started_at": started_at,
        "ended_at": ended_at,
        "step_s": seconds(step.group(1)) if step else None,
        "phases": named_seconds(phases.group(2)) if phases else {},
        "staged": named_seconds(staged.group(1)) if staged else {},
        "client_requests": int(phases.group(3)) if phases else None,
        "client_throttled": int(phases.group(4)) if phases else None,
        "done_at": float(phases.group(5)) if phases else None,
        # Linux reports kilobytes: the largest of this process's waited-for descendants.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        # The checkout whose code the run loaded (the run's process has the same path).
        "checkout": str(Path(canvas_assets.__file__).resolve().parents[1]),
    }
    if not result["ok"]:
        result["output_tail"] = output[-3000:]
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
