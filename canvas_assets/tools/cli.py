"""The ``canvas-assets`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from canvas_assets.settings import SettingError, Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canvas-assets",
        description="Keep a PostgreSQL copy of a Canvas LMS institution current with Dagster.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

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

    sandbox = commands.add_parser("sandbox", help="Serve only the Canvas sandbox REST API.")
    sandbox.add_argument("--size", default="small", choices=["small", "medium", "large"])
    sandbox.add_argument("--port", type=int, default=8900)
    sandbox.add_argument("--token", default="sandbox-token")
    sandbox.add_argument("--seed", type=int, default=0)

    events = commands.add_parser("events", help="Live Events tools.")
    event_commands = events.add_subparsers(dest="events_command", required=True)
    replay = event_commands.add_parser(
        "replay",
        help="Apply events from JSON or JSON Lines files (Canvas envelopes or SQS messages with a "
        "Body) through the landing and apply path; reports applied/duplicate/skipped/quarantined.",
    )
    replay.add_argument("files", nargs="+", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev":
            from canvas_assets.tools.devstack import DevStackError, run_dev

            try:
                return run_dev(
                    Settings.from_env(),
                    size=args.size,
                    ui_port=args.port,
                    change_interval_seconds=args.change_interval,
                )
            except DevStackError as exc:
                print(f"canvas-assets dev: {exc}", file=sys.stderr)
                return 2
        if args.command == "sandbox":
            from canvas_assets.sandbox.server import serve

            serve(size=args.size, port=args.port, token=args.token, seed=args.seed)
            return 0
        if args.command == "events" and args.events_command == "replay":
            from canvas_assets.tools.replay import replay, resources

            missing = [str(p) for p in args.files if not p.is_file()]
            if missing:
                print(f"canvas-assets: no such file: {', '.join(missing)}", file=sys.stderr)
                return 2
            settings = Settings.from_env()
            canvas, warehouse = resources(settings)
            report = replay(args.files, canvas, warehouse, settings)
            print(report.line())
            return 0
    except SettingError as exc:
        print(f"canvas-assets: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
