"""The benchmarks behind BENCHMARKS.md, in one command.

    .venv/bin/python -m bench.run            # everything: bench/results.json and BENCHMARKS.md
    .venv/bin/python -m bench.run --quick    # a smoke run at the small size (CI): asserts nothing

For each semester size (``medium`` at 1x, 4x and 16x, and ``university``) a Canvas sandbox runs
in its own process, answering each request in 50 ms plus its cost (Canvas's throttle on, pages
cached so serving stays cheap), and each repeat, back to back on the same machine:

1. backfills the semester into an empty warehouse through ``dagster asset materialize``;
2. backfills it again (a re-run: the warehouse holds it and has statistics);
3. reads the same term with a sequential canvasapi script, as a user would write it today.

It prints and records medians: wall time split into fetch / map / validate / write, the fixed
cost of launching a Dagster run, Canvas requests against the fewest the data needs, throttled
requests, peak RSS of the run, rows/s, pandera's share, the floor (``sandbox/model.py``) and the
ratios; then the growth exponent of time in semester size, a comparison of the ways to read the
people on an account with ten times more users than enrollees, and the Live Events figures.
Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from bench import report
from bench.harness import (
    ROOT,
    TOKEN,
    Sandbox,
    dagster_backfill,
    drop_schema,
    growth_exponent,
    median,
    new_schema,
    postgres,
    semester_of,
)
from bench.live_events import apply_throughput, daemon_latency, landing_throughput
from bench.sequential import read_term
from canvas_sandbox.institution import size_spec
from canvas_sandbox.model import TermShape, pages

FULL_SIZES = [("medium", 1.0), ("medium", 4.0), ("medium", 16.0), ("university", 1.0)]
QUICK_SIZES = [("small", 1.0)]


def fewest_requests(shape: TermShape) -> int:
    """The fewest Canvas requests that return the term's data (terms, the course list, each
    course's two lists, and the people: account pages or single GETs, whichever is fewer)."""
    per_course = sum(
        pages(s) + pages(e)
        for s, e in zip(shape.sections_per_course, shape.enrollments_per_course, strict=True)
    )
    people = min(pages(shape.account_users), shape.people)
    return pages(shape.terms) + pages(shape.courses) + per_course + people


def rows_of(shape: TermShape) -> int:
    return (
        shape.courses
        + sum(shape.sections_per_course)
        + sum(shape.enrollments_per_course)
        + (shape.people)
    )


def one_size(size: str, scale: float, args, db_url: str, workdir: Path) -> dict:
    label = size if scale == 1 else f"{size} x{scale:g}"
    with Sandbox(size, scale, args.latency_ms, workdir) as sandbox:
        semester = semester_of(sandbox)
        shape, floor = sandbox.shape(semester), sandbox.floor(semester)
        runs = []
        repeats = args.repeat
        # The script takes minutes at the larger sizes (20 at university): fewer repeats there.
        large = size == "university" or scale >= 16
        sequential_repeats = args.sequential_repeat if large else args.repeat
        for n in tqdm(range(repeats), desc=label, unit="repeat"):
            schema = new_schema()
            run = {"first": dagster_backfill(sandbox, db_url, schema, workdir)}
            run["rerun"] = dagster_backfill(sandbox, db_url, schema, workdir)
            drop_schema(db_url, schema)
            if n < sequential_repeats:
                before = sandbox.stats()["cpu_seconds"]
                run["sequential"] = read_term(sandbox.url, TOKEN, semester)
                run["sequential"]["sandbox_cpu_s"] = sandbox.stats()["cpu_seconds"] - before
            runs.append(run)
    return summarize(label, shape, floor.as_dict(), runs)


def _medians(runs: list[dict], key: str) -> dict[str, float]:
    """The median of each entry of the runs' ``key`` dicts (phases, staged work)."""
    return {name: median([r[key].get(name, 0.0) for r in runs]) for name in runs[0][key]}


def summarize(label: str, shape: TermShape, floor: dict, runs: list[dict]) -> dict:
    rows = rows_of(shape)
    out: dict = {"label": label, "shape": shape.as_dict(), "rows": rows, "floor": floor}
    out["fewest_requests"] = fewest_requests(shape)
    for kind in ("first", "rerun"):
        got = [r[kind] for r in runs]
        phases, staged = _medians(got, "phases"), _medians(got, "staged")
        partition = median([g["partition_s"] for g in got])
        out[kind] = {
            "wall_s": median([g["wall_s"] for g in got]),
            "launch_s": median([g["launch_s"] for g in got]),
            "to_first_request_s": median([g["to_first_request_s"] for g in got]),
            "after_last_answer_s": median([g["after_last_answer_s"] for g in got]),
            "work_after_last_answer_s": median([g["work_after_last_answer_s"] for g in got]),
            "partition_s": partition,
            "phases_s": phases,
            "staged_s": staged,
            "requests": median([g["requests"] for g in got]),
            "throttled": max(g["throttled"] for g in got),
            "peak_rss_mb": max(g["peak_rss_mb"] for g in got),
            "rows_per_s": rows / partition,
            # pandera's and the write's work on the staged tables happens during the fetch:
            # counted here all the same.
            "pandera_share": median(
                [
                    (g["phases"].get("validate", 0.0) + g["staged"].get("validate", 0.0))
                    / g["partition_s"]
                    for g in got
                ]
            ),
            "write_us_per_row": (phases.get("write", 0.0) + staged.get("copy", 0.0)) / rows * 1e6,
            "sandbox_cpu_s": median([g["sandbox_cpu_s"] for g in got]),
            "vs_floor": median([g["partition_s"] / floor["seconds"] for g in got]),
            "runs": len(got),
        }
    sequential = [r for r in runs if "sequential" in r]
    if sequential:
        out["sequential"] = {
            "seconds": median([r["sequential"]["seconds"] for r in sequential]),
            "sandbox_cpu_s": median([r["sequential"]["sandbox_cpu_s"] for r in sequential]),
            # Paired: each repeat's script against the first backfill run just before it.
            "speedup_end_to_end": median(
                [r["sequential"]["seconds"] / r["first"]["wall_s"] for r in sequential]
            ),
            "speedup_partition": median(
                [r["sequential"]["seconds"] / r["first"]["partition_s"] for r in sequential]
            ),
            "runs": len(sequential),
        }
    return out


def people_comparison(args, workdir: Path) -> dict:
    """The ways to read a semester's people, on an account with ten times more users than the
    semester enrolls: whole fetches (courses, lists, people), back to back, per repeat."""
    from canvas_assets.canvas import CanvasResource
    from canvas_assets.canvas.fetch import PeoplePlan, fetch_semester, fetch_terms, find_term

    plans = {
        "account list, one end (before)": PeoplePlan(ends=1, single_gets=False),
        "account list, both ends": PeoplePlan(ends=2, single_gets=False),
        "single GETs only": PeoplePlan(ends=0, single_gets=True),
        "both ends, then single GETs (default)": PeoplePlan(),
    }
    size, scale = ("small", 1.0) if args.quick else ("medium", 4.0)
    results: dict[str, list[dict]] = {name: [] for name in plans}
    account = 10 * size_spec(size, scale)["users"]  # about ten times the people enrolled
    with Sandbox(size, scale, args.latency_ms, workdir, account_users=account) as sandbox:
        shape = sandbox.shape("2026SP")
        canvas = CanvasResource(base_url=sandbox.url, api_token=TOKEN)
        for _ in tqdm(range(args.repeat), desc="people", unit="repeat"):
            for name, plan in plans.items():
                with canvas.session() as session:
                    term = find_term(fetch_terms(session), "2026SP")
                    started = time.perf_counter()
                    snapshot = fetch_semester(
                        session, term, "2026SP", datetime.now(UTC), people_plan=plan
                    )
                    seconds = time.perf_counter() - started
                    assert len(snapshot.users) == shape.people
                    results[name].append({"seconds": seconds, "requests": session.stats.requests})
    return {
        "shape": shape.as_dict(),
        "plans": {
            name: {
                "seconds": median([r["seconds"] for r in runs]),
                "requests": median([r["requests"] for r in runs]),
            }
            for name, runs in results.items()
        },
    }


def live_events(args, db_url: str, workdir: Path) -> dict:
    import logging

    from moto.server import ThreadedMotoServer

    from canvas_devstack.processes import free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    sqs_url = f"http://127.0.0.1:{port}"
    try:
        out = {
            "apply": attempt(
                apply_throughput,
                db_url,
                "small" if args.quick else "medium",
                300 if args.quick else 5000,
                args.latency_ms,
            ),
            "landing": attempt(landing_throughput, db_url, sqs_url, 200 if args.quick else 2000),
        }
        if not args.quick and not args.skip_daemon:
            out["daemon"] = attempt(daemon_latency, db_url, sqs_url, workdir, args.latency_samples)
    finally:
        moto.stop()
    return out


def attempt(measure, *args) -> dict:
    """A measurement's figures, or the error that stopped it (recorded, not raised: the other
    figures of a long run stay)."""
    try:
        return measure(*args)
    except Exception as exc:  # reported in BENCHMARKS.md as not measured, with the reason
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}


def environment() -> dict:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="canvas-assets benchmarks (BENCHMARKS.md)")
    parser.add_argument("--quick", action="store_true", help="smoke run at the small size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--sequential-repeat", type=int, default=1,
        help="repeats of the canvasapi script at medium x16 and university (minutes each)",
    )  # fmt: skip
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--sizes", help="e.g. medium:1,medium:4 (default: all)")
    parser.add_argument("--skip-daemon", action="store_true")
    parser.add_argument("--latency-samples", type=int, default=12)
    parser.add_argument(
        "--json", type=Path, help="(default: bench/results.json; --quick: a temp file)"
    )
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.sequential_repeat = 1, 1
        args.json = args.json or Path(tempfile.gettempdir()) / "canvas-assets-bench-quick.json"
        args.markdown = None
    args.json = args.json or ROOT / "bench" / "results.json"
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.sizes:
        sizes = [(s.split(":")[0], float(s.split(":")[1])) for s in args.sizes.split(",")]
    results: dict = {"environment": environment(), "settings": vars(args) | {"sizes": sizes}}
    with tempfile.TemporaryDirectory(prefix="canvas-bench-") as tmp, postgres(Path(tmp)) as db:
        workdir = Path(tmp)
        results["backfill"] = []
        for size, scale in sizes:  # saved as they come: a late failure keeps the earlier ones
            results["backfill"].append(one_size(size, scale, args, db, workdir))
            args.json.write_text(json.dumps(results, indent=2, default=str))
        if len(results["backfill"]) > 1:
            firsts = results["backfill"]
            results["growth_exponent"] = {
                kind: growth_exponent(
                    [b["rows"] for b in firsts], [b[kind]["partition_s"] for b in firsts]
                )
                for kind in ("first", "rerun")
            }
        results["people"] = attempt(people_comparison, args, workdir)
        results["live_events"] = attempt(live_events, args, db, workdir)
    results["environment"]["load_average_at_end"] = os.getloadavg()
    results["settings"] = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in results["settings"].items()
    }
    args.json.write_text(json.dumps(results, indent=2))
    print(report.text(results))
    if args.markdown is not None:
        args.markdown.write_text(report.markdown(results))
        print(f"wrote {args.markdown} and {args.json}")


if __name__ == "__main__":
    main()
