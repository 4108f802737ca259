"""The ``canvas-assets`` command."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from canvas_assets.settings import SettingError, Settings


def _dev_parser(commands) -> None:
    dev = commands.add_parser(
        "dev", help="Start the whole local stack: Postgres, SQS, Canvas sandbox, Dagster UI+daemon."
    )
    dev.add_argument("--size", default="medium", choices=["small", "medium", "large"])
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
        type=lambda value: [name.strip() for name in value.split(",") if name.strip()],
        help="Serve several sandbox institutions, e.g. north,south: each its own code location, "
        "queue and schema (canvas_<name>) in one Dagster instance.",
    )
    dev.add_argument(
        "--reset",
        action="store_true",
        help="Delete the state folder first (tables, Dagster history, the saved sandbox).",
    )


def _sandbox_parser(commands) -> None:
    sandbox = commands.add_parser("sandbox", help="Serve only the Canvas sandbox REST API.")
    sandbox.add_argument(
        "--size", default="small", choices=["small", "medium", "large", "university"]
    )
    sandbox.add_argument("--port", type=int, default=8900)
    sandbox.add_argument("--token", default="sandbox-token")
    sandbox.add_argument("--seed", type=int, default=0)
    sandbox.add_argument(
        "--scale", type=float, default=1.0, help="Multiply each semester's courses and people."
    )
    sandbox.add_argument(
        "--account-users", type=int, help="Users in the whole account, enrolled or not."
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


def _events_parser(commands) -> None:
    events = commands.add_parser("events", help="Live Events tools.")
    event_commands = events.add_subparsers(dest="events_command", required=True)
    replay = event_commands.add_parser(
        "replay",
        help="Apply events from JSON or JSON Lines files (Canvas envelopes or SQS messages with a "
        "Body) through the landing and apply path; reports applied/duplicate/skipped/quarantined.",
    )
    replay.add_argument("files", nargs="+", type=Path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canvas-assets",
        description="Keep a PostgreSQL copy of a Canvas LMS institution current with Dagster.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _dev_parser(commands)
    _sandbox_parser(commands)
    _events_parser(commands)
    return parser


def _dev(args: argparse.Namespace) -> int:
    from canvas_assets.tools.devstack import DevStackError, reset_state, run_dev

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
        )
    except DevStackError as exc:
        print(f"canvas-assets dev: {exc}", file=sys.stderr)
        return 2


def _sandbox(args: argparse.Namespace) -> int:
    from canvas_assets.canvas.fetch import COURSE_STATES_FETCHED
    from canvas_assets.sandbox.server import serve
    from canvas_assets.tables.registry import ENROLLMENT_STATES_FETCHED

    serve(
        size=args.size, port=args.port, token=args.token, seed=args.seed,
        scale=args.scale, account_users=args.account_users, latency_ms=args.latency_ms,
        server_time=args.server_time, network_ms=args.network_ms,
        cache_pages=args.cache_pages, keep_alive=args.keep_alive,
        describe=args.describe, states=(COURSE_STATES_FETCHED, ENROLLMENT_STATES_FETCHED),
    )  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    # pgserver's platformdirs warns on machines without a login session; it changes nothing.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev":
            return _dev(args)
        if args.command == "sandbox":
            return _sandbox(args)
        if args.command == "events" and args.events_command == "replay":
            from canvas_assets.tools.replay import run_replay

            return run_replay(args.files, Settings.from_env())
    except SettingError as exc:
        print(f"canvas-assets: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
