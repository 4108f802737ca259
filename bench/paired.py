"""Issue 25's backfill changes, side by side: the default and the ways it was before.

    .venv/bin/python -m bench.paired                        # medium x4, x16, university
    .venv/bin/python -m bench.paired --sizes medium:4 --network-ms 40
    .venv/bin/python -m bench.paired --variants "now,upsert after the fetch"

Each repeat backfills the semester once per variant, back to back in rotating order, each into
an empty schema of the embedded PostgreSQL, in this process (``backfill_semester``, no Dagster
run: ``bench.run`` measures those):

* **now**: the backfill as it is, with the limiter's default reserve (``rate_limit_floor``,
  60: the next request's charge and ten units), which its allowance makes safe
  (``canvas/limiter.py``);
* **reserve 150**: the reserve of before (two charges of margin), with the same limiter;
* **people after the fetch**: as now, but the people mapped, checked and written after the
  fetch (``USERS.staged`` off), as the enrollments alone were staged in 13d6d39;
* **upsert after the fetch**: the people so too, the enrollments upserted all at once after
  the fetch beside the other tables' checks (as ``TableSpec.shared_rows`` has it; their chunks
  still copied during the fetch) and Python's cyclic collector left on throughout: the write
  of d0e94e1, but for the rest of the backfill, which is now's (the transaction taken before
  the fetch, a first backfill's soft-delete of a staged table skipped, the lighter map).

A sandbox runs in its own process for each size (50 ms a request plus its cost, throttle on;
``--network-ms`` adds a round trip outside the bucket). It prints medians: the partition's time
and its ratio to the floor, the fetch, the backfill's own work after Canvas's last answer,
the staged tables' own work (map, validate, copy, upsert: during the fetch but for the last
chunk), and each variant's time over the same repeat's last variant listed. Nothing here
asserts a speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

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
from canvas_assets.backfill import semester
from canvas_assets.backfill.semester import backfill_semester
from canvas_assets.canvas import CanvasResource, fetch
from canvas_assets.tables import SEMESTER_TABLES, TableSpec
from canvas_assets.tables.registry import COURSES, ENROLLMENTS, SECTIONS, USERS
from canvas_assets.warehouse.migrate import migrate


def _collector_on() -> ExitStack:
    """Python's cyclic collector left on after the fetch, as before ``memory.py``."""
    stack = ExitStack()
    for module in (semester, fetch):
        stack.enter_context(mock.patch.object(module, "cyclic_gc_paused", nullcontext))
    return stack


@dataclass(frozen=True)
class Variant:
    reserve: float = 60.0  # the limiter's reserve (``rate_limit_floor``)
    tables: tuple[TableSpec, ...] = SEMESTER_TABLES  # which are staged, and how
    differs: Callable[[], AbstractContextManager] = nullcontext  # anything else


PEOPLE_AFTER_THE_FETCH = (COURSES, SECTIONS, ENROLLMENTS, replace(USERS, staged=False))
VARIANTS = {
    "now": Variant(),
    "reserve 150": Variant(reserve=150.0),
    "people after the fetch": Variant(tables=PEOPLE_AFTER_THE_FETCH),
    "upsert after the fetch": Variant(
        tables=(
            COURSES,
            SECTIONS,
            replace(ENROLLMENTS, shared_rows=True),
            PEOPLE_AFTER_THE_FETCH[3],
        ),
        differs=_collector_on,
    ),
}


def one_backfill(sandbox: Sandbox, db_url: str, variant: str) -> dict:
    chosen = VARIANTS[variant]
    canvas = CanvasResource(base_url=sandbox.url, api_token=TOKEN, rate_limit_floor=chosen.reserve)
    schema = new_schema()
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        canvas.session() as session,
        chosen.differs(),
    ):
        migrate(conn, schema)
        sandbox.stats(new_window=True)
        started = time.perf_counter()
        result = backfill_semester(
            conn, schema, session, semester_of(sandbox), datetime.now(UTC), chosen.tables
        )
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
    names = args.variants
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
            [r["partition_s"] / b["partition_s"] for r, b in zip(got, runs[names[-1]], strict=True)]
        )
        out[name]["throttled"] = sum(r["throttled"] for r in got)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="issue 25's backfill changes, side by side")
    parser.add_argument("--sizes", default="medium:4,medium:16,university:1")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--network-ms", type=float, default=0.0)
    parser.add_argument(
        "--variants", default="now,reserve 150", help=f"of {', '.join(VARIANTS)}; the last is "
        "the baseline"
    )  # fmt: skip
    args = parser.parse_args()
    args.variants = args.variants.split(",")
    unknown = set(args.variants) - VARIANTS.keys()
    if unknown or len(args.variants) < 2:
        parser.error(f"--variants: two or more of {', '.join(VARIANTS)}")
    print(f"network round trip {args.network_ms:g} ms; {args.repeat} repeats; medians")
    with tempfile.TemporaryDirectory(prefix="canvas-bench-") as tmp, postgres(Path(tmp)) as db:
        for item in args.sizes.split(","):
            size, scale = item.split(":")
            result = one_size(size, float(scale), args, db, Path(tmp))
            for name in args.variants:
                r = result[name]
                print(
                    f"{result['size']}: {name}: partition {r['partition_s']:.2f} s "
                    f"({r['vs_floor']:.2f}x the floor, {result['floor_s']:.1f} s), fetch "
                    f"{r['fetch_s']:.2f} s, after the last answer {r['after_last_answer_s']:.2f}"
                    f" s, staged {r['staged_s']:.2f} s, {r['vs_baseline']:.3f}x "
                    f"{args.variants[-1]}, throttled {r['throttled']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
