"""``canvas-assets dev`` and ``canvas-assets sandbox``: the subcommands the local tools add to the
product's command line (entry point group ``canvas_assets.commands``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from canvas_assets.settings import Settings

HELP_FORMAT = argparse.ArgumentDefaultsHelpFormatter


def _institutions(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def add_dev_command(commands: argparse._SubParsersAction) -> None:
    summary = "Start the whole local stack: PostgreSQL, SQS, Canvas sandbox, Dagster UI + daemon."
    dev = commands.add_parser(
        "dev",
        help=summary,
        description=f"{summary} Pieces you configure (CANVAS_WAREHOUSE_URL, CANVAS_BASE_URL, "
        "CANVAS_LIVE_EVENTS_QUEUE_URL) are used instead of the local ones. Ctrl-C stops "
        "everything.",
        formatter_class=HELP_FORMAT,
    )
    dev.add_argument(
        "--size",
        default="medium",
        choices=["small", "medium", "large"],
        help="Size of the sandbox institution.",
    )
    dev.add_argument("--port", type=int, default=3000, help="Preferred Dagster UI port.")
    dev.add_argument(
        "--change-interval",
        type=float,
        default=15.0,
        help="Seconds between sandbox changes published as Live Events.",
    )
    dev.add_argument(
        "--home",
        type=Path,
        help="State folder (default: CANVAS_ASSETS_HOME, else .canvas-assets in the project).",
    )
    dev.add_argument(
        "--institutions",
        type=_institutions,
        help="Serve several sandbox institutions, e.g. north,south: each its own code location, "
        "queue and schema (canvas_<name>) in one Dagster instance.",
    )
    dev.add_argument(
        "--alerts",
        action="store_true",
        help="Send alerts (CANVAS_ALERT_WEBHOOK_URL) to a local receiver that prints them here.",
    )
    dev.add_argument(
        "--outage-after",
        type=float,
        metavar="SECONDS",
        help="Make the sandbox's Canvas fail (HTTP 503) for a minute, SECONDS after the start, "
        "to see alerts and recoveries (with --alerts). Any time: curl -X POST "
        "'<sandbox>/_sandbox/outage?seconds=60'.",
    )
    dev.add_argument(
        "--reset",
        action="store_true",
        help="Delete the state folder first (tables, Dagster history, the saved sandbox).",
    )
    dev.set_defaults(run=run_dev_command)


def run_dev_command(args: argparse.Namespace) -> int:
    from canvas_devstack.devstack import DevStackError, reset_state, run_dev

    settings = Settings.from_env()
    try:
        if args.reset:
            print(f"removed {reset_state(settings, args.home)}")
        return run_dev(
            settings,
            home=args.home,
            size=args.size,
            ui_port=args.port,
            change_interval_seconds=args.change_interval,
            institutions=args.institutions,
            alerts=args.alerts,
            outage_after=args.outage_after,
        )
    except DevStackError as exc:
        print(f"canvas-assets dev: {exc}", file=sys.stderr)
        return 2


def add_sandbox_command(commands: argparse._SubParsersAction) -> None:
    summary = "Serve only the Canvas sandbox's REST API (a local stand-in for Canvas)."
    sandbox = commands.add_parser(
        "sandbox",
        help=summary,
        description=f"{summary} Faithful to Canvas's paging, throttle, costs, errors and ids, so "
        "a client can be developed, demonstrated and benchmarked without a Canvas instance.",
        formatter_class=HELP_FORMAT,
    )
    sandbox.add_argument(
        "--size",
        default="small",
        choices=["small", "medium", "large", "university"],
        help="Size of the generated institution.",
    )
    sandbox.add_argument("--port", type=int, default=8900, help="Port to serve on (127.0.0.1).")
    sandbox.add_argument(
        "--token", default="sandbox-token", help="The access token the sandbox accepts."
    )
    sandbox.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of the generated institution (same seed, same data).",
    )
    sandbox.add_argument(
        "--scale", type=float, default=1.0, help="Multiply each semester's courses and people."
    )
    sandbox.add_argument(
        "--account-users",
        type=int,
        help="Users in the whole account, enrolled or not (default: the size's own).",
    )
    sandbox.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="Time Canvas takes to answer any request beyond the CPU + DB time it charges; it "
        "holds the request's up-front charge in the throttle's bucket, as in Canvas.",
    )
    sandbox.add_argument(
        "--server-time",
        action="store_true",
        help="Each request also takes its X-Request-Cost in seconds (Canvas's cost is the CPU + "
        "DB time it spent).",
    )
    sandbox.add_argument(
        "--network-ms",
        type=float,
        default=0.0,
        help="Round trip between the client and Canvas, outside the throttle's bucket.",
    )
    sandbox.add_argument(
        "--cache-pages",
        action="store_true",
        help="Render each page once and keep it (the institution does not change): keeps the "
        "sandbox cheap when it serves a benchmark.",
    )
    sandbox.add_argument(
        "--keep-alive",
        action="store_true",
        help="Serve with connections kept open between requests (as Canvas does) by a threaded "
        "server; cheaper per request. Fault injection needs the default server.",
    )
    sandbox.add_argument(
        "--describe",
        type=Path,
        help="Write each term's shape (JSON) for computing the least time a sync can take.",
    )
    sandbox.set_defaults(run=run_sandbox_command)


def run_sandbox_command(args: argparse.Namespace) -> int:
    from canvas_assets.canvas.fetch import COURSE_STATES_FETCHED
    from canvas_assets.tables.registry import ENROLLMENT_STATES_FETCHED
    from canvas_sandbox.server import serve

    serve(
        size=args.size, port=args.port, token=args.token, seed=args.seed,
        scale=args.scale, account_users=args.account_users, latency_ms=args.latency_ms,
        server_time=args.server_time, network_ms=args.network_ms,
        cache_pages=args.cache_pages, keep_alive=args.keep_alive,
        describe=args.describe, states=(COURSE_STATES_FETCHED, ENROLLMENT_STATES_FETCHED),
    )  # fmt: skip
    return 0
