"""The ``canvas-assets`` command.

The product's own subcommands are ``events replay``, ``canvas connect`` (authorise a developer
key once, by OAuth2) and ``canvas check`` (what the configured credentials may read). The local
tools (``local/``, never in the production image) add ``dev`` and ``sandbox`` through the
``canvas_assets.commands`` entry point group: each entry is a function that adds its subcommand
to the parser and sets the function that runs it (``set_defaults(run=...)``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path

from canvas_assets.settings import SettingError, Settings

COMMANDS_GROUP = "canvas_assets.commands"
LOCAL_COMMANDS = ("dev", "sandbox")
HELP_FORMAT = argparse.ArgumentDefaultsHelpFormatter
# `canvas connect`'s redirect, http://127.0.0.1:8765/oauth/callback: the README's Redirect URI.
CONNECT_PORT = 8765


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


def _connect(args: argparse.Namespace) -> int:
    from canvas_assets.canvas.oauth import KeySettings
    from canvas_assets.canvas.scopes import SCOPES
    from canvas_assets.commands.canvas_connect import ConnectOptions, run_connect

    options = ConnectOptions(
        base_url=args.base_url,
        settings=KeySettings(args.client_id_env, args.client_secret_env, args.store_as),
        port=args.port,
        open_browser=not args.no_browser,
        timeout_seconds=args.timeout,
        scopes=SCOPES if args.scopes == "project" else (),
    )
    return run_connect(options)


def _check(args: argparse.Namespace) -> int:
    from canvas_assets.commands.canvas_check import run_check

    return run_check(Settings.from_env(), args.institution)


def _connect_parser(canvas: argparse._SubParsersAction) -> None:
    summary = "Authorise the developer key once (OAuth2) and print its refresh token."
    connect = canvas.add_parser(
        "connect",
        help=summary,
        description=f"{summary} Prints (and opens) Canvas's authorisation address; log in as "
        "the service account and authorise the key; Canvas redirects to "
        "http://127.0.0.1:PORT/oauth/callback (add it to the key's Redirect URIs), the code is "
        "exchanged, and the refresh token is printed once, to be stored as "
        "CANVAS_REFRESH_TOKEN. The client id and secret are read from their variables.",
        formatter_class=HELP_FORMAT,
    )
    connect.add_argument(
        "--base-url",
        default=os.environ.get("CANVAS_BASE_URL"),
        help="Canvas root URL; the default is CANVAS_BASE_URL's value.",
    )
    connect.add_argument("--port", type=int, default=CONNECT_PORT, help="Local redirect port.")
    connect.add_argument(
        "--no-browser", action="store_true", help="Only print the address; open no browser."
    )
    connect.add_argument(
        "--timeout", type=float, default=300.0, help="Seconds to wait for Canvas's redirect."
    )
    connect.add_argument(
        "--client-id-env", default="CANVAS_CLIENT_ID", help="Variable holding the client id."
    )
    connect.add_argument(
        "--client-secret-env",
        default="CANVAS_CLIENT_SECRET",
        help="Variable holding the client secret.",
    )
    connect.add_argument(
        "--store-as",
        default="CANVAS_REFRESH_TOKEN",
        help="Variable the refresh token is to be stored in (named in the instructions; for an "
        "institutions file, its entry's refresh_token_env).",
    )
    connect.add_argument(
        "--scopes",
        choices=["project", "none"],
        default="project",
        help="Scopes to request: every scope the project needs (a scoped key must hold them "
        "all; an unscoped key ignores them), or none.",
    )
    connect.set_defaults(run=_connect)


def _canvas_parser(commands: argparse._SubParsersAction) -> None:
    summary = "Connect to Canvas with a developer key, and check what the credentials may read."
    canvas = commands.add_parser(
        "canvas", help=summary, description=summary, formatter_class=HELP_FORMAT
    )
    canvas_commands = canvas.add_subparsers(dest="canvas_command", required=True)
    _connect_parser(canvas_commands)
    summary = "Call each Canvas endpoint the project uses once and report what is missing."
    check = canvas_commands.add_parser(
        "check",
        help=summary,
        description=f"{summary} With the configured credentials (CANVAS_API_TOKEN, or the "
        "developer key's shared token): who they are, whether the account is reachable, each "
        "endpoint allowed or refused (naming the missing scope), whether includes are honoured, "
        "and the throttle headroom. Exits 1 when anything is missing, naming the fix.",
        formatter_class=HELP_FORMAT,
    )
    check.add_argument(
        "--institution",
        default=None,
        help="Check only this institution of CANVAS_INSTITUTIONS_FILE; none given: every "
        "institution.",
    )
    check.set_defaults(run=_check)


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
    _canvas_parser(commands)
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
