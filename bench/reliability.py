"""Regenerate RELIABILITY.md from a run of the fuzz, fault and secrets suites and the load
benchmark: every figure in it comes from this run, none is typed by hand.

    .venv/bin/python bench/reliability.py                      # heavy profile, 50,000 events
    .venv/bin/python bench/reliability.py --profile ci --events 5000 --queue-events 500

The suites are the same tests CI runs (with the ``ci`` profile); ``heavy`` runs ten times the
fuzz examples with a fresh seed, at least 50 SIGKILLs, and so on (see
``canvas_assets_tests/reliability.py``). A failed test is listed in the file, and the command
exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = [
    "canvas_assets_tests/test_fuzz_live_events.py",
    "canvas_assets_tests/test_replay_command.py",
    "canvas_assets_tests/test_faults_crash.py",
    "canvas_assets_tests/test_faults_postgres.py",
    "canvas_assets_tests/test_faults_canvas.py",
    "canvas_assets_tests/test_faults_sqs.py",
    "canvas_assets_tests/test_secrets.py",
    "canvas_assets_tests/test_sql_composition.py",
]
# How each scenario is injected, in report order; figures come from the tests.
HOW = {
    "fuzz: parse": "hypothesis messages (hostile envelopes and raw text) through parse_message",
    "fuzz: mixed batches": "hypothesis batches of hostile and valid messages through "
    "land_messages into PostgreSQL",
    "poison messages through the sensor": "issue 11's poison bodies, each beside nine valid "
    "messages, in moto's SQS; real canvas_live_events ticks",
    "crash injection (SIGKILL)": "forkserver worker (poll, route, apply) SIGKILLed at a planned "
    "stage or a random moment; Canvas changing meanwhile",
    "PostgreSQL killed mid semester write": "own pgserver; `pg_ctl stop -m immediate` while the "
    "write waits on a row lock; started 1 s later",
    "PostgreSQL down past the failure handler": "the same kill; PostgreSQL back only after the "
    "run gave up recording its failure",
    "PostgreSQL restarted mid apply": "`pg_ctl restart -m fast` while the apply waits on a row "
    "lock",
    "SQS: redeliveries, duplicates, out of order": "ChangeDriver duplicates and reorders; ten "
    "messages held past their visibility timeout",
    "SQS briefly unreachable": "TCP proxy before moto drops every connection for 2.5 s",
    "quarantine refused: left for redrive": "a trigger makes PostgreSQL refuse one quarantine "
    "row; the queue's RedrivePolicy moves it to a dead-letter queue",
    "schema drift: unknown new fields": "sandbox adds fields to every object",
    "schema drift: a required field missing": "sandbox drops enrollments' `type`",
    "secrets (token)": "full backfill, a Live Events tick, a failed and a good apply; "
    "everything scanned",
    "secrets (developer_key)": "the same through a developer key whose tokens live 2 s; "
    "scanned for its secret, refresh token and every access token issued",
}


def run_suites(profile: str, figures: Path) -> tuple[str, float, list[str]]:
    """Run the suites; their summary line, seconds, and the tests that failed."""
    env = {**os.environ, "CANVAS_RELIABILITY_PROFILE": profile}
    env["CANVAS_RELIABILITY_FIGURES"] = str(figures)
    basetemp = tempfile.mkdtemp(prefix="reliability-")
    command = [sys.executable, "-m", "pytest", *SUITES, "-q", "-p", "no:cacheprovider", "-rf"]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, f"--basetemp={basetemp}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    lines = done.stdout.splitlines()
    summary = next(
        (line for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), ""
    )
    failed = [line.removeprefix("FAILED ") for line in lines if line.startswith("FAILED ")]
    if done.returncode != 0 and not failed:  # not a test failure: collection, usage, crash
        sys.stdout.write(done.stdout[-20_000:] + done.stderr[-5_000:])
        raise SystemExit("the suites could not run; RELIABILITY.md left as it was")
    return summary.strip("= "), seconds, failed


def run_load(events: int, queue_events: int, size: str, out: Path) -> dict:
    command = [sys.executable, str(ROOT / "bench/live_events_load.py"), "--events", str(events)]
    command += ["--queue-events", str(queue_events), "--size", size, "--json", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def _value(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:,.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def scenario_rows(figures: dict) -> list[str]:
    rows = ["| scenario | how it is injected | figures of the latest run |", "| --- | --- | --- |"]
    names = [n for n in HOW if n in figures] + sorted(n for n in figures if n not in HOW)
    for name in names:
        values = {k: v for k, v in figures[name].items() if k not in ("profile", "injection")}
        how = (
            figures[name].get("injection")
            or HOW.get(name)
            or (
                "sandbox faults over HTTP during a semester backfill, after Canvas changed a course"
                if name.startswith("Canvas:")
                else "see the test"
            )
        )
        shown = "; ".join(f"{k}: {_value(v)}" for k, v in values.items())
        rows.append(f"| {name} | {_value(how)} | {shown} |")
    return rows


def load_rows(load: dict) -> list[str]:
    landing, queue = load["landing_alone"], load["sensor_ticks_on_moto"]
    later = load["route_and_apply"]
    tick = (
        f"{queue['landed_per_tick_median']:,} landed per tick (median tick "
        f"{queue['tick_seconds_median']} s), {queue['messages_per_s']} messages/s; "
        f"{queue['share_of_tick_landing']:.0%} of the tick spent landing"
    )
    routing = (
        f"{later['routed']:,} routed in {later['route_ticks']} tick(s), "
        f"{later['route_seconds']} s, {later['canvas_lookups']} Canvas look-ups"
    )
    applying = (
        f"{later['apply_events']:,} events, {later['apply_courses']} courses re-read, "
        f"{later['apply_seconds']} s: {later['events_per_s_applied']:,} events/s"
    )
    return [
        f"A burst of {load['events']:,} valid events (sandbox `{load['size']}`, Canvas answering "
        f"in {load['canvas_latency_ms']:.0f} ms), measured stage by stage:",
        "",
        "| stage | figure | bounded by |",
        "| --- | --- | --- |",
        f"| landing alone ({landing['messages']:,} messages: parse, store, commit) | "
        f"{landing['messages_per_s']:,} messages/s | {landing['bound']} |",
        f"| sensor ticks against moto ({queue['messages']:,} of the burst queued) | {tick} | "
        f"{queue['bound']} |",
        f"| routing the whole burst | {routing} | a tick routes 10,000 events and makes at most "
        "400 concurrent Canvas look-ups |",
        f"| applying the imported semester | {applying} | {later['apply_bound']} |",
    ]


def render(
    profile: str, summary: str, seconds: float, failed: list[str], figures: dict, load: dict | None
) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# Reliability",
        "",
        "Generated by `.venv/bin/python bench/reliability.py` — do not edit by hand. Latest run: "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, on commit {commit or 'unknown'} with local "
        f"changes as they were, profile `{profile}`: {summary} in {seconds:.0f} s.",
        "",
        "Every scenario is a test in `canvas_assets_tests/` and runs in CI with the `ci` profile "
        "(fixed hypothesis seed, every scenario injected at least once). This file comes from "
        f"the `{profile}` profile; `CANVAS_RELIABILITY_PROFILE=heavy .venv/bin/python -m pytest "
        "canvas_assets_tests/test_fuzz_live_events.py canvas_assets_tests/test_faults_*.py` "
        "runs the heavy profile alone.",
        "",
        *scenario_rows(figures),
        "",
        *(
            ["**Failed in this run:**", "", *(f"- `{name}`" for name in failed), ""]
            if failed
            else []
        ),
        "## Load",
        "",
        *(load_rows(load) if load else ["Not measured in this run (`--no-load`)."]),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate RELIABILITY.md.")
    parser.add_argument("--profile", default="heavy", choices=["ci", "heavy"])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--queue-events", type=int, default=2_000)
    parser.add_argument("--size", default="medium", choices=["small", "medium", "large"])
    parser.add_argument("--no-load", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "RELIABILITY.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reliability-figures-"))
    summary, seconds, failed = run_suites(args.profile, work / "figures.json")
    figures = json.loads((work / "figures.json").read_text())
    load = (
        None
        if args.no_load
        else run_load(args.events, args.queue_events, args.size, work / "load.json")
    )
    text = render(args.profile, summary, seconds, failed, figures, load)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({summary}, {seconds:.0f} s)")
    if failed:
        raise SystemExit(f"{len(failed)} test(s) failed: see {args.out}")


if __name__ == "__main__":
    main()
