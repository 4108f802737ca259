"""``canvas-assets dev`` and ``canvas-assets sandbox``: the subcommands the local tools add to the
product's command line (entry point group ``canvas_assets.commands``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from canvas_assets.settings import Settings


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
    )
    dev.add_argument(
        "--size",
        default="medium",
        choices=["small", "medium", "large"],
        help="Size of the sandbox institution (default: medium).",
    )
    dev.add_argument(
        "--port",
        type=int,
        default=3000,
        help="Preferred Dagster UI port; another free one if it is taken (default: 3000).",
    )
    dev.add_argument(
        "--change-interval",
        type=float,
        default=15.0,
        help="Seconds between sandbox changes published as Live Events (default: 15).",
    )
    dev.add_argument(
        "--home",
        type=Path,
        help="State folder (default: CANVAS_ASSETS_HOME, else .canvas-assets in the project).",
    )
    dev.add_argument(
        "--institutions",
        type=_institutions,
        help="A vendor's deployment: one sandbox institution per name, e.g. north,south, in an "
        "institutions file, one code location and one shared queue (default: one institution).",
    )
    dev.add_argument(
        "--oauth",
        action="store_true",
        help="Reach the sandbox with a developer key (OAuth2) instead of its token: the sandbox "
        "serves the key, the stack authorises it once as `canvas-assets canvas connect` does, and "
        "the code location gets CANVAS_CLIENT_ID, CANVAS_CLIENT_SECRET and CANVAS_REFRESH_TOKEN "
        "(per institution with --institutions), sharing its access tokens through the warehouse "
        "(default: the sandbox's token).",
    )
    dev.add_argument(
        "--token-lifetime",
        type=float,
        default=3600.0,
        help="With --oauth: seconds each sandbox access token lives (default: 3600, as Canvas).",
    )
    dev.add_argument(
        "--alerts",
        action="store_true",
        help="Send alerts (CANVAS_ALERT_WEBHOOK_URL) to a local receiver that prints them here "
        "(default: alerts go to the channels configured, if any).",
    )
    dev.add_argument(
        "--outage-after",
        type=float,
        metavar="SECONDS",
        help="Make the sandbox's Canvas fail (HTTP 503) for a minute, SECONDS after the start, "
        "to see alerts and recoveries (with --alerts). Any time: curl -X POST "
        "'<sandbox>/_sandbox/outage?seconds=60' (default: no outage).",
    )
    dev.add_argument(
        "--reset",
        action="store_true",
        help="Delete the state folder first: tables, Dagster history, the saved sandbox "
        "(default: keep them).",
    )
    dev.add_argument(
        "--verbose",
        action="store_true",
        help="Show Dagster's own output (webserver access log, daemon and code server lines) in "
        "the terminal (default: in the state folder's logs/).",
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
            verbose=args.verbose,
            token_lifetime=args.token_lifetime if args.oauth else None,
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
    )
    sandbox.add_argument(
        "--size",
        default="small",
        choices=["small", "medium", "large", "university"],
        help="Size of the generated institution (default: small).",
    )
    sandbox.add_argument(
        "--port", type=int, default=8900, help="Port to serve on, on 127.0.0.1 (default: 8900)."
    )
    sandbox.add_argument(
        "--token",
        default="sandbox-token",
        help="The access token the sandbox accepts (default: sandbox-token).",
    )
    sandbox.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of the generated institution: same seed, same data (default: 0).",
    )
    sandbox.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="Multiply each semester's courses and people (default: 1).",
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
        "holds the request's up-front charge in the throttle's bucket, as in Canvas (default: 0).",
    )
    sandbox.add_argument(
        "--server-time",
        action="store_true",
        help="Each request also takes its X-Request-Cost in seconds (Canvas's cost is the CPU + "
        "DB time it spent) (default: answer at once).",
    )
    sandbox.add_argument(
        "--network-ms",
        type=float,
        default=0.0,
        help="Round trip between the client and Canvas, outside the throttle's bucket "
        "(default: 0).",
    )
    sandbox.add_argument(
        "--cache-pages",
        action="store_true",
        help="Render each page once and keep it (the institution does not change): keeps the "
        "sandbox cheap when it serves a benchmark (default: render every request).",
    )
    sandbox.add_argument(
        "--keep-alive",
        action="store_true",
        help="Serve with connections kept open between requests (as Canvas does) by a threaded "
        "server; cheaper per request. Fault injection needs the default server (default: "
        "close each connection).",
    )
    sandbox.add_argument(
        "--developer-key",
        action="store_true",
        help="Also serve Canvas's OAuth2 endpoints for an API developer key (client id "
        "10000000000001, secret sandbox-client-secret, redirect URI "
        "http://127.0.0.1:8765/oauth/callback): authorize, then the authorization_code and "
        "refresh_token grants (default: the token only).",
    )
    sandbox.add_argument(
        "--token-lifetime",
        type=float,
        default=3600.0,
        help="With --developer-key: seconds an access token lives (default: 3600).",
    )
    sandbox.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        help="With --developer-key: make it a scoped key holding this scope (repeat for each, "
        "e.g. url:GET|/api/v1/accounts/:account_id/courses); default: an unscoped key.",
    )
    sandbox.add_argument(
        "--allow-includes",
        action="store_true",
        help='With --scope: the key\'s "Allow Include Parameters" (default: off, include[] '
        "is dropped).",
    )
    sandbox.add_argument(
        "--describe",
        type=Path,
        help="Write each term's shape (JSON) for computing the least time a sync can take "
        "(default: none written).",
    )
    sandbox.set_defaults(run=run_sandbox_command)


def run_sandbox_command(args: argparse.Namespace) -> int:
    from canvas_assets.canvas.fetch import COURSE_STATES_FETCHED
    from canvas_assets.tables.registry import ENROLLMENT_STATES_FETCHED
    from canvas_sandbox import DeveloperKey
    from canvas_sandbox.server import serve

    key = None
    if args.developer_key:
        key = DeveloperKey(
            scopes=tuple(args.scopes) if args.scopes else None,
            allow_includes=args.allow_includes,
            token_lifetime_seconds=args.token_lifetime,
        )
    serve(
        size=args.size, port=args.port, token=args.token, seed=args.seed,
        scale=args.scale, account_users=args.account_users, latency_ms=args.latency_ms,
        server_time=args.server_time, network_ms=args.network_ms,
        cache_pages=args.cache_pages, keep_alive=args.keep_alive,
        describe=args.describe, states=(COURSE_STATES_FETCHED, ENROLLMENT_STATES_FETCHED),
        developer_key=key,
    )  # fmt: skip
    return 0
