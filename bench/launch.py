"""A Dagster run's launch, one checkout of the project against another, side by side.

    git worktree add --detach /tmp/before <commit>
    .venv/bin/python -m bench.launch /tmp/before .          # the last listed is the baseline
    .venv/bin/python -m bench.launch --size medium:4 --repeat 8 /tmp/before .

Each repeat backfills the semester once per checkout, back to back in rotating order, each
through ``dagster asset materialize`` (``bench/dagster_run.py``, the run loading that
checkout's ``canvas_assets``) into an empty schema of one embedded PostgreSQL, against one
sandbox (50 ms a request plus its cost, throttle on). One unmeasured run per checkout comes
first, so that every measured run finds Dagster's storage made. It prints medians: from the
command's start to Canvas's first request, the whole run, from Canvas's last answer to the
run's end (and to the end of the backfill's own work), peak RSS, and each checkout's
first-request time over the same repeat's baseline's. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.harness import Sandbox, dagster_backfill, drop_schema, median, new_schema, postgres

FIGURES = (
    "to_first_request_s",
    "wall_s",
    "after_last_answer_s",
    "work_after_last_answer_s",
    "peak_rss_mb",
)


def one_run(sandbox: Sandbox, db_url: str, workdir: Path, checkout: Path) -> dict:
    schema = new_schema()
    result = dagster_backfill(sandbox, db_url, schema, workdir, code=checkout)
    drop_schema(db_url, schema)
    if Path(result["checkout"]) != checkout:
        raise RuntimeError(f"the run for {checkout} loaded {result['checkout']}'s code")
    return result


def checkouts_of(parser: argparse.ArgumentParser, paths: list[Path]) -> list[Path]:
    """The checkouts, refused unless each holds the project: a path without it would time
    this checkout's code instead, which the editable install finds."""
    checkouts = [path.resolve() for path in paths]
    for checkout in checkouts:
        if not (checkout / "canvas_assets" / "definitions.py").is_file():
            parser.error(f"{checkout}: not a checkout of canvas-assets (no canvas_assets/)")
    return checkouts


def main() -> None:
    parser = argparse.ArgumentParser(description="a Dagster run's launch, checkout by checkout")
    parser.add_argument("checkouts", nargs="+", type=Path, help="the last is the baseline")
    parser.add_argument("--size", default="small", help="size, or size:scale")
    parser.add_argument("--repeat", type=int, default=8)
    args = parser.parse_args()
    checkouts = checkouts_of(parser, args.checkouts)
    size, _, scale = args.size.partition(":")
    with (
        tempfile.TemporaryDirectory(prefix="canvas-bench-") as tmp,
        postgres(Path(tmp)) as db,
        Sandbox(size, float(scale or 1), 50.0, Path(tmp)) as sandbox,
    ):
        for checkout in checkouts:
            one_run(sandbox, db, Path(tmp), checkout)
        # By position: the same checkout twice shows the noise of the machine.
        runs: list[list[dict]] = [[] for _ in checkouts]
        for repeat in range(args.repeat):
            turn = repeat % len(checkouts)
            for at in [*range(turn, len(checkouts)), *range(turn)]:
                runs[at].append(one_run(sandbox, db, Path(tmp), checkouts[at]))
    print(f"{args.size}; {args.repeat} repeats; medians")
    baseline = runs[-1]
    for checkout, got in zip(checkouts, runs, strict=True):
        figures = {key: median([r[key] for r in got]) for key in FIGURES}
        ratio = median(
            [
                r["to_first_request_s"] / b["to_first_request_s"]
                for r, b in zip(got, baseline, strict=True)
            ]
        )
        print(
            f"{checkout}: to Canvas's first request {figures['to_first_request_s']:.2f} s "
            f"({ratio:.2f}x the baseline's), whole run {figures['wall_s']:.2f} s, Canvas's last "
            f"answer to the run's end {figures['after_last_answer_s']:.2f} s (the backfill's "
            f"own work {figures['work_after_last_answer_s']:.2f} s), peak RSS "
            f"{figures['peak_rss_mb']:.0f} MB, throttled {sum(r['throttled'] for r in got)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
