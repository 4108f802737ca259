"""BENCHMARKS.md and the console summary, from ``bench/run.py``'s results (nothing hand-typed:
every figure below comes from the run that writes the file)."""

from __future__ import annotations

import json
from pathlib import Path

SETUP = """\
Every figure comes from one run of `.venv/bin/python -m bench.run` (medians of the repeats it
states; ratios are paired: each repeat's numbers come from runs made back to back). Regenerate
this file with that command; `--quick` is the CI smoke run (small size, one repeat, asserts
nothing).

**Setup.** The Canvas sandbox runs in its own process (`canvas-assets sandbox --latency-ms 50
--server-time --keep-alive --cache-pages`): every request takes 50 ms plus its cost in seconds
inside Canvas (the cost model of `local/canvas_sandbox/throttle.py`: CPU + DB seconds, more for
larger pages), Canvas's throttle is on (high-water mark 600, 50 units up front per request being
served, 10 units/s outflow), connections are kept open and rendered pages are cached so that the
sandbox is not what is measured (its own CPU time is reported). PostgreSQL is the embedded
server. Each backfill is a real Dagster run launched with `dagster asset materialize` (the fixed
cost of launching it is reported apart); the first backfill of each repeat writes into an empty
schema (no statistics), the re-run into the same schema right after.

**The floor** (`local/canvas_sandbox/model.py`) is the least time any client can read the term
in, from the sandbox's own model: the larger of the chain of `next` links (terms, then the course
list page by page, then the last course's lists; the account user list from both ends), the
time Canvas spends serving every request divided by the 11 it serves at once (600 / 50, counting
the new request's own charge), and the summed cost less what the bucket holds, drained at 10
units/s; for the best split of the people between account pages and single GETs.
"""


def _s(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _phases(run: dict) -> str:
    p, staged = run["phases_s"], run.get("staged_s") or {}
    phases = " / ".join(_s(p.get(k)) for k in ("fetch", "map", "validate", "write"))
    return phases + " | " + " / ".join(_s(staged.get(k), 2) for k in ("map", "validate", "copy"))


def backfill_table(results: dict) -> list[str]:
    lines = [
        "| size | rows | run | partition s | fetch / map / validate / write s "
        "| staged during the fetch: map / validate / copy s | launch s "
        "| to first request s | after last answer s (of it the backfill's) "
        "| requests (fewest) | throttled | peak RSS MB | rows/s | pandera | vs floor |",
        "| --- | ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: |",
    ]
    for b in results["backfill"]:
        for kind, name in (("first", "first (empty)"), ("rerun", "re-run")):
            r = b[kind]
            lines.append(
                f"| {b['label']} | {b['rows']:,} | {name} | {_s(r['partition_s'])} "
                f"| {_phases(r)} | {_s(r['launch_s'])} "
                f"| {_s(r.get('to_first_request_s'))} | {_s(r.get('after_last_answer_s'))} "
                f"({_s(r.get('work_after_last_answer_s'))}) "
                f"| {r['requests']:,.0f} ({b['fewest_requests']:,}) | {r['throttled']} "
                f"| {r['peak_rss_mb']:,.0f} | {r['rows_per_s']:,.0f} "
                f"| {r['pandera_share']:.1%} | {r['vs_floor']:.2f}x |"
            )
    return lines


def floor_table(results: dict) -> list[str]:
    lines = [
        "| size | courses / sections / enrollments / people (account) | floor s | chain s "
        "| in service s | outflow s | first backfill s | ratio | canvasapi script s | "
        "speed-up end to end | speed-up partition |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in results["backfill"]:
        sh, f, seq = b["shape"], b["floor"], b.get("sequential", {})
        lines.append(
            f"| {b['label']} | {sh['courses']:,} / {sh['sections']:,} / {sh['enrollments']:,} / "
            f"{sh['people']:,} ({sh['account_users']:,}) | {_s(f['seconds'])} | {_s(f['chain'])} "
            f"| {_s(f['in_service'])} | {_s(f['outflow'])} | {_s(b['first']['partition_s'])} "
            f"| {b['first']['vs_floor']:.2f}x | {_s(seq.get('seconds'))} "
            f"| {_s(seq.get('speedup_end_to_end'))}x | {_s(seq.get('speedup_partition'))}x |"
        )
    return lines


def targets(results: dict) -> list[tuple[str, str, str, bool | None]]:
    """(figure, target, measured, met) for the issue's targets, from the largest size."""
    backfills = results["backfill"]
    largest = backfills[-1]
    first, rerun = largest["first"], largest["rerun"]
    seq = largest.get("sequential", {})
    writes = [b[k]["write_us_per_row"] for b in backfills for k in ("first", "rerun")]
    exponent = results.get("growth_exponent", {}).get("first")
    rss = max(b[k]["peak_rss_mb"] for b in backfills for k in ("first", "rerun"))
    pandera = max(b[k]["pandera_share"] for b in backfills for k in ("first", "rerun"))
    throttled = max(b[k]["throttled"] for b in backfills for k in ("first", "rerun"))
    le = results.get("live_events") or {}
    instant = (le.get("apply") or {}).get("instant", {})
    own, with_rest = instant.get("own_events_per_s"), instant.get("events_per_s")
    daemon = le.get("daemon")
    daemon = None if not daemon or "error" in daemon else daemon
    rows = [
        ("first backfill vs the floor", "≤ 1.3x", f"{first['vs_floor']:.2f}x",
         first["vs_floor"] <= 1.3),
        ("end to end vs the canvasapi script", "≥ 8x faster",
         f"{_s(seq.get('speedup_end_to_end'))}x",
         None if not seq else seq["speedup_end_to_end"] >= 8),
        ("throttled requests in a backfill", "0", str(throttled), throttled == 0),
        ("write time per row, all sizes, first and re-run", "within 2x",
         f"{min(writes):.1f}–{max(writes):.1f} µs ({max(writes) / max(min(writes), 1e-9):.1f}x)",
         max(writes) <= 2 * min(writes)),
        ("growth exponent of time in size", "≤ 1.1", _s(exponent, 2),
         None if exponent is None else exponent <= 1.1),
        ("peak RSS at the largest size", "< 600 MB", f"{rss:,.0f} MB", rss < 600),
        ("pandera share of partition time", "≤ 10 %", f"{pandera:.1%}", pandera <= 0.10),
        ("Live Events apply without hydration (its REST re-read's time excluded)",
         "≥ 5,000 events/s", f"{_s(own, 0)}/s ({_s(with_rest, 0)}/s with the re-read)",
         None if own is None else own >= 5000),
        ("SQS → Postgres p95 under the daemon",
         "≤ interval + 20 s" + ("" if not daemon else f" ({daemon['sensor_interval_s'] + 20} s)"),
         "–" if not daemon else f"{daemon['p95_s']:.1f} s",
         None if not daemon else daemon["p95_s"] <= daemon["sensor_interval_s"] + 20),
    ]  # fmt: skip
    del rerun
    return rows + run_targets(backfills)


def run_targets(backfills: list[dict]) -> list[tuple[str, str, str, bool | None]]:
    """Issue 25's targets: the fetch at the floor at mid sizes and at university, the run's
    launch, and the backfill's own work left after Canvas's last answer."""
    mid = [b for b in backfills if b["label"] not in ("small", "medium")]
    university = [b for b in backfills if b["label"] == "university"]
    firsts = [b["first"] for b in backfills]
    after = [b[k]["work_after_last_answer_s"] for b in backfills for k in ("first", "rerun")]
    launch = max(r["to_first_request_s"] for r in firsts)
    worst_mid = max((b["first"]["vs_floor"] for b in mid), default=None)
    uni = university[0]["first"]["vs_floor"] if university else None
    return [
        ("first backfill vs the floor, medium x4 and larger", "≤ 1.25x",
         "–" if worst_mid is None else f"{worst_mid:.2f}x (the worst size)",
         None if worst_mid is None else worst_mid <= 1.25),
        ("first backfill vs the floor at university", "≤ 1.1x",
         "–" if uni is None else f"{uni:.2f}x", None if uni is None else uni <= 1.1),
        ("launch to Canvas's first request", "≤ 3 s", f"{launch:.1f} s (the slowest size)",
         launch <= 3),
        ("the backfill's own work after Canvas's last answer, every size", "< 0.5 s",
         f"{min(after):.2f}–{max(after):.2f} s", max(after) < 0.5),
    ]  # fmt: skip


def _mark(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "missed")


def markdown(results: dict) -> str:
    env = results["environment"]
    out = ["# Benchmarks", "", SETUP]
    out += [
        f"Run {env['date']} on {env['cpus']} CPUs, Python {env['python']}, load average "
        f"{env['load_average_at_start'][0]:.1f} at the start and "
        f"{env.get('load_average_at_end', [float('nan')])[0]:.1f} at the end; "
        f"{results['settings']['repeat']} "
        "repeats per size (the canvasapi script: "
        f"{results['settings']['sequential_repeat']} at medium x16 and university).",
        "",
        "## Targets",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
    ]
    out += [f"| {a} | {b} | {c} | {_mark(d)} |" for a, b, c, d in targets(results)]
    out += ["", "## Semester backfills through Dagster", ""] + backfill_table(results)
    out += ["", "## Against the floor and against a sequential canvasapi script", ""]
    out += floor_table(results)
    growth = results.get("growth_exponent")
    if growth:
        out += [
            "",
            f"Growth of the partition's time in its rows (least squares on the logarithms, "
            f"all sizes): exponent **{growth['first']:.2f}** for first backfills, "
            f"**{growth['rerun']:.2f}** for re-runs.",
        ]
    out += ["", "## The people: account list or single GETs", ""] + people_table(results)
    out += ["", "## Live Events", ""] + live_table(results)
    out += vendor_section()
    return "\n".join(out) + "\n"


def _failed(part: dict | None, name: str) -> list[str]:
    if not part:
        return [f"{name}: not measured in this run."]
    return [f"{name}: not measured: `{part['error']}`"] if "error" in part else []


def people_table(results: dict) -> list[str]:
    p = results.get("people")
    if _failed(p, "The people comparison"):
        return _failed(p, "The people comparison")
    sh = p["shape"]
    lines = [
        f"A semester of {sh['courses']:,} courses and {sh['people']:,} people in an account of "
        f"{sh['account_users']:,} users; whole fetches (courses, lists, people), back to back.",
        "",
        "| how the people are read | fetch s | requests |",
        "| --- | ---: | ---: |",
    ]
    lines += [
        f"| {name} | {_s(r['seconds'])} | {r['requests']:,.0f} |" for name, r in p["plans"].items()
    ]
    return lines


def live_table(results: dict) -> list[str]:
    le = results.get("live_events")
    if _failed(le, "Live Events"):
        return _failed(le, "Live Events")
    a, land = le["apply"], le["landing"]
    if _failed(a, "Apply") or _failed(land, "Landing"):
        return _failed(a, "Apply") + _failed(land, "Landing")
    lines = [
        "Apply: the same events landed in two warehouses and applied by the apply path "
        '(`live_events/apply.py`); "instant" is Canvas answering at once (the sandbox serves '
        'from the benchmark\'s own process), "hydrated" is every request at 50 ms plus its '
        "cost. Every apply re-reads the courses its events name (events are signals, REST is "
        'truth); the apply times that re-read, and "without it" is the same run\'s events over '
        "its time less the re-read: what claiming, classifying, mapping, validating, writing "
        "and closing the events cost.",
        "",
        "| apply | events | courses re-read | Canvas requests | seconds | of it reading Canvas s "
        "| events/s | events/s without the re-read |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("instant", "hydrated"):
        r = a[name]
        lines.append(
            f"| {name} | {r['events']:,} | {r['courses_refreshed']:,} | {r['canvas_requests']:,} "
            f"| {_s(r['seconds'], 2)} | {_s(r.get('canvas_seconds'), 2)} "
            f"| {r['events_per_s']:,.0f} | {_s(r.get('own_events_per_s'), 0)} |"
        )
    lines += [
        "",
        f"Landing from SQS (moto's server): {land['messages']:,} messages landed and "
        f"acknowledged in {_s(land['seconds'])} s: **{land['messages_per_s']:,.0f} messages/s**, "
        f"{land['messages_per_tick']:,.0f} per tick (median tick {_s(land['tick_seconds'])} s).",
    ]
    daemon = le.get("daemon")
    if daemon and "error" in daemon:
        lines += ["", *_failed(daemon, "SQS → PostgreSQL latency under the daemon")]
    elif daemon:
        lines += [
            "",
            f"SQS → row visible in PostgreSQL under `canvas-assets dev` (webserver + daemon, "
            f"sensor every {daemon['sensor_interval_s']} s), {daemon['samples']} events sent at "
            f"spread times: p50 **{daemon['p50_s']:.1f} s**, p95 **{daemon['p95_s']:.1f} s**, "
            f"max {daemon['max_s']:.1f} s.",
        ]
    return lines


def text(results: dict) -> str:
    lines = ["", "Targets (largest size):"]
    lines += [f"  {a}: {c} (target {b}) {_mark(d)}" for a, b, c, d in targets(results)]
    lines += ["", *backfill_table(results), "", *floor_table(results), ""]
    lines += people_table(results) + [""] + live_table(results)
    return "\n".join(lines)


VENDOR_START, VENDOR_END = "<!-- vendor:start -->", "<!-- vendor:end -->"
VENDOR_FILE = Path(__file__).with_name("vendor.json")


def _n(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def vendor_lines(results: dict) -> list[str]:
    """The "A vendor's deployment" section: one code location, one shared queue, N institutions."""
    out = [
        "## A vendor's deployment (bench/vendor.py)",
        "",
        f"Run {results['date']} on {results['cpus']} CPUs: `canvas-assets dev --institutions` "
        "with 1, 10 and 50 small sandbox institutions in one code location, each changing "
        "every 60 s and publishing to one shared queue (moto), embedded PostgreSQL. RSS of the "
        "deployment's own processes (code server, webserver, daemon) is the median of the "
        "samples taken while no run was in flight; runs, the sandbox process (sandboxes, moto, "
        "change drivers) and PostgreSQL are reported apart.",
        "",
        "| institutions | services RSS idle | runs RSS peak | sandbox process | PostgreSQL | "
        "ticks p50 / p95 | runs per hour | CPU: machine / deployment | SQS → row p50 / p95 "
        "(events) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in results.get("sizes", []):
        if "error" in size:
            out.append(f"| {size['institutions']} | not measured: `{size['error'][:120]}` |")
            continue
        runs = sum(size["runs_per_hour"].values())
        out.append(
            f"| {size['institutions']} | {_n(size['services_rss_idle_mb'], 0)} MB | "
            f"{_n(size['runs_rss_peak_mb'], 0)} MB | {_n(size['sandbox_process_rss_mb'], 0)} MB "
            f"| {_n(size['postgres_rss_mb'], 0)} MB | {_n(size['tick_p50_s'])} / "
            f"{_n(size['tick_p95_s'])} s | {runs:,.0f} | {_n(size['cpu_cores_machine'], 2)} / "
            f"{_n(size['cpu_cores_deployment'], 2)} cores | {_n(size['latency_p50_s'])} / "
            f"{_n(size['latency_p95_s'])} s ({size['events_applied']}) |"
        )
    per_added = results.get("rss_per_added_institution_mb")
    out += ["", f"Services RSS per added institution at idle: **{_n(per_added)} MB**."]
    return out


def vendor_text(results: dict) -> str:
    return "\n".join(vendor_lines(results))


def vendor_section() -> list[str]:
    """The section from bench/vendor.json, between its markers (empty when never measured)."""
    if not VENDOR_FILE.is_file():
        return []
    return ["", VENDOR_START, *vendor_lines(json.loads(VENDOR_FILE.read_text())), VENDOR_END]


def write_vendor_section(markdown_path: Path, results: dict) -> None:
    """Replace (or add) the vendor section of BENCHMARKS.md, keeping the rest as it is."""
    text = markdown_path.read_text() if markdown_path.is_file() else "# Benchmarks\n"
    section = "\n".join([VENDOR_START, *vendor_lines(results), VENDOR_END])
    if VENDOR_START in text:
        before, _, rest = text.partition(VENDOR_START)
        _, _, after = rest.partition(VENDOR_END)
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    markdown_path.write_text(text)
