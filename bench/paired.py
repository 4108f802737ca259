"""Issue 25's limiter, side by side: the default reserve and the previous one.

    .venv/bin/python -m bench.paired                        # medium x4, x16, university
    .venv/bin/python -m bench.paired --sizes medium:4 --network-ms 40

Each repeat backfills the semester once per variant, back to back in rotating order, each into
an empty schema of the embedded PostgreSQL, in this process (``backfill_semester``, no Dagster
run: ``bench.run`` measures those):

* **now**: the limiter's default reserve (``rate_limit_floor``, 60: the next request's charge
  and ten units), which its allowance makes safe (``canvas/limiter.py``);
* **reserve 150**: the reserve of before (two charges of margin), with the same limiter.

A sandbox runs in its own process for each size (50 ms a request plus its cost, throttle on;
``--network-ms`` adds a round trip outside the bucket). It prints medians: the partition's time
and its ratio to the floor, the fetch, the backfill's own work after Canvas's last answer,
the staged tables' own work (map, validate, copy: during the fetch but for the last chunk), and
each variant's time over the same repeat's "reserve 150". Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench.harness import (
    TOKEN,
    Sandbox,
    drop_schema,
    median,
    new_schema,
    postgres,
    semester_of,
)
from canvas_assets.backfill.semester import backfill_semester
from canvas_assets.canvas import CanvasResource
from canvas_assets.warehouse.migrate import migrate

BASELINE = "reserve 150"
VARIANTS = {"now": 60.0, BASELINE: 150.0}


def one_backfill(sandbox: Sandbox, db_url: str, variant: str) -> dict:
    reserve = VARIANTS[variant]
    canvas = CanvasResource(base_url=sandbox.url, api_token=TOKEN, rate_limit_floor=reserve)
    schema = new_schema()
    with psycopg.connect(db_url, autocommit=True) as conn, canvas.session() as session:
        migrate(conn, schema)
        sandbox.stats(new_window=True)
        started = time.perf_counter()
        result = backfill_semester(conn, schema, session, semester_of(sandbox), datetime.now(UTC))
        partition, done_at = time.perf_counter() - started, time.time()
    assert result.report.ok, result.report.message(semester_of(sandbox))
    drop_schema(db_url, schema)
    return {
        "partition_s": partition,
        "fetch_s": result.seconds["fetch"],
        "after_last_answer_s": done_at - sandbox.stats()["last_answer_at"],
        "throttled": session.stats.throttle_waits,
        "staged_s": sum(result.staged_seconds.values()),
    }


def one_size(size: str, scale: float, args, db_url: str, workdir: Path) -> dict:
    names = list(VARIANTS)
    with Sandbox(size, scale, 50.0, workdir, network_ms=args.network_ms) as sandbox:
        floor = sandbox.floor(semester_of(sandbox)).seconds
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for repeat in range(args.repeat):
            turn = repeat % len(names)
            for name in names[turn:] + names[:turn]:
                runs[name].append(one_backfill(sandbox, db_url, name))
    out = {"size": size if scale == 1 else f"{size} x{scale:g}", "floor_s": floor}
    for name, got in runs.items():
        out[name] = {
            key: median([r[key] for r in got])
            for key in ("partition_s", "fetch_s", "after_last_answer_s", "staged_s")
        }
        out[name]["vs_floor"] = out[name]["partition_s"] / floor
        out[name]["vs_baseline"] = median(
            [r["partition_s"] / b["partition_s"] for r, b in zip(got, runs[BASELINE], strict=True)]
        )
        out[name]["throttled"] = sum(r["throttled"] for r in got)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="issue 25's backfill changes, side by side")
    parser.add_argument("--sizes", default="medium:4,medium:16,university:1")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--network-ms", type=float, default=0.0)
    args = parser.parse_args()
    print(f"network round trip {args.network_ms:g} ms; {args.repeat} repeats; medians")
    with tempfile.TemporaryDirectory(prefix="canvas-bench-") as tmp, postgres(Path(tmp)) as db:
        for item in args.sizes.split(","):
            size, scale = item.split(":")
            result = one_size(size, float(scale), args, db, Path(tmp))
            for name in VARIANTS:
                r = result[name]
                print(
                    f"{result['size']}: {name}: partition {r['partition_s']:.2f} s "
                    f"({r['vs_floor']:.2f}x the floor, {result['floor_s']:.1f} s), fetch "
                    f"{r['fetch_s']:.2f} s, after the last answer {r['after_last_answer_s']:.2f}"
                    f" s, staged {r['staged_s']:.2f} s, {r['vs_baseline']:.3f}x {BASELINE}, "
                    f"throttled {r['throttled']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
