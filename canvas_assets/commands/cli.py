"""The ``canvas-assets`` command.

The product's own subcommand is ``events replay``. The local tools (``local/``, never in the
production image) add ``dev`` and ``sandbox`` through the ``canvas_assets.commands`` entry point
group: each entry is a function that adds its subcommand to the parser and sets the function
that runs it (``set_defaults(run=...)``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path

from canvas_assets.settings import SettingError, Settings

COMMANDS_GROUP = "canvas_assets.commands"
LOCAL_COMMANDS = ("dev", "sandbox")


def _replay(args: argparse.Namespace) -> int:
    from canvas_assets.commands.replay import run_replay

    return run_replay(args.files, Settings.from_env())


def _events_parser(commands: argparse._SubParsersAction) -> None:
    events = commands.add_parser(
        "events",
        help="Live Events tools: replay archived or dead-lettered events.",
        description="Live Events tools: replay archived or dead-lettered events.",
    )
    event_commands = events.add_subparsers(dest="events_command", required=True)
    replay = event_commands.add_parser(
        "replay",
        help="Apply events from JSON or JSON Lines files through the landing and apply path.",
        description="Apply events from JSON or JSON Lines files (Canvas envelopes, SQS messages "
        "with a Body, or lists of either) through the same landing, routing and apply path as "
        "the canvas_live_events sensor; prints how many were applied, duplicates, skipped and "
        "quarantined. It reads the code location's settings (CANVAS_BASE_URL and "
        "CANVAS_API_TOKEN, or CANVAS_INSTITUTIONS_FILE and its tokens; CANVAS_WAREHOUSE_URL, "
        "CANVAS_WAREHOUSE_SCHEMA, CANVAS_TARGET_SEMESTERS) and needs Canvas and the warehouse "
        "reachable; the Dagster stack need not be running. It applies events of the semesters "
        "on the Imported Semesters card.",
    )
    replay.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="JSON or JSON Lines files (.jsonl/.ndjson are read line by line).",
    )
    replay.set_defaults(run=_replay)


def _local_commands(commands: argparse._SubParsersAction) -> set[str]:
    """The subcommands of the local tools, when they are installed."""
    added = set()
    for entry in entry_points(group=COMMANDS_GROUP):
        entry.load()(commands)
        added.add(entry.name)
    return added


def _not_installed(name: str, commands: argparse._SubParsersAction) -> None:
    """A local tool's subcommand where the local tools are not installed: one clear line."""

    def run(args: argparse.Namespace) -> int:
        print(
            f"canvas-assets: '{name}' is one of the local tools, which are not installed here "
            "(production images leave them out); in the project folder run "
            ".venv/bin/pip install -e '.[dev]' -e ./local",
            file=sys.stderr,
        )
        return 2

    command = commands.add_parser(name, help=f"(local tools, not installed) {name}")
    command.add_argument("ignored", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    command.set_defaults(run=run)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="canvas-assets",
        description="Keep a PostgreSQL copy of a Canvas LMS institution current with Dagster.",
    )
    commands = top.add_subparsers(dest="command", required=True)
    _events_parser(commands)
    added = _local_commands(commands)
    for name in LOCAL_COMMANDS:
        if name not in added:
            _not_installed(name, commands)
    return top


def main(argv: list[str] | None = None) -> int:
    # pgserver's platformdirs warns on machines without a login session; it changes nothing.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except SettingError as exc:
        print(f"canvas-assets: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
