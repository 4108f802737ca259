"""`canvas-assets dev`: start every piece the user has not configured, then Dagster in its
production shape: a gRPC code server per code location, the webserver and the daemon.

Pieces (``tools/local_pieces.py``): embedded PostgreSQL (unless CANVAS_WAREHOUSE_URL), a local SQS
from moto's server mode (unless CANVAS_LIVE_EVENTS_QUEUE_URL), and the Canvas sandbox with its
change driver (unless CANVAS_BASE_URL). With ``--institutions north,south`` the stack serves one
sandbox institution per name, each its own code location with its own queue and schema, in one
Dagster instance and one PostgreSQL.

State lives in one folder: CANVAS_ASSETS_HOME (or ``--home``) when given, else ``.canvas-assets``
in the canvas-assets project folder around the current directory; started anywhere else, the
command refuses rather than start a second stack. A lock file stops a second copy from sharing
the folder; each sandbox's institution is saved there, so after a restart Canvas and the
warehouse still agree. Ctrl-C stops every child.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from canvas_assets.settings import ALERT_SECRETS, ALERT_WEBHOOK_URL_ENV, Settings
from canvas_devstack import dagster_services as dagster
from canvas_devstack.alert_receiver import start_alert_receiver
from canvas_devstack.local_pieces import (
    SANDBOX_SHARD,
    SANDBOX_TOKEN,
    start_postgres,
    start_sandbox,
    start_sqs,
)
from canvas_devstack.processes import DevStackError, exclusive_lock, free_port, wait_until_ready
from canvas_sandbox.server import OUTAGE_PATH

DEV_QUEUE_NAME = "canvas-live-events-dev"
OUTAGE_SECONDS = 60
STATE_FOLDER = ".canvas-assets"
LOCATION = "canvas_assets"
# What only code servers (and the runs they launch) get: the webserver and the daemon never see
# a Canvas token, the warehouse URL or AWS credentials.
CODE_ONLY = (
    "CANVAS_INSTITUTION", "CANVAS_INSTITUTIONS_FILE", "CANVAS_BASE_URL", "CANVAS_API_TOKEN",
    "CANVAS_ACCOUNT_ID",
    "CANVAS_WAREHOUSE_URL", "CANVAS_LIVE_EVENTS_QUEUE_URL", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", *ALERT_SECRETS,
)  # fmt: skip
# Written to <state>/dev.env for Dagster's own CLI (never a secret the user configured).
DEV_ENV_NAMES = (
    "DAGSTER_HOME", "CANVAS_ASSETS_HOME", "CANVAS_DAGSTER_PG_URL", "CANVAS_WAREHOUSE_URL",
    "CANVAS_INSTITUTIONS_FILE",
    "CANVAS_BASE_URL", "CANVAS_API_TOKEN", "CANVAS_LIVE_EVENTS_QUEUE_URL", "AWS_ENDPOINT_URL_SQS",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
)  # fmt: skip

__all__ = ["DevStackError", "reset_state", "run_dev", "state_folder"]


@dataclass
class Site:
    """One institution of the stack: its code location and the variables only it gets."""

    location: str
    env: dict[str, str] = field(default_factory=dict)
    sandboxes: list[str] = field(default_factory=list)  # the sandbox URLs it reads


def project_root(start: Path) -> Path | None:
    """The canvas-assets project folder holding ``start`` (its pyproject.toml names it)."""
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            with contextlib.suppress(tomllib.TOMLDecodeError, OSError):
                if tomllib.loads(pyproject.read_text()).get("project", {}).get("name") == (
                    "canvas-assets"
                ):
                    return folder
    return None


def state_folder(settings: Settings, home: Path | None, cwd: Path) -> Path:
    """Where the stack keeps its state; see the module docstring for the rule."""
    if home is not None:
        return home.expanduser().resolve()
    if settings.state_dir is not None:
        return settings.state_dir
    root = project_root(cwd)
    if root is None:
        raise DevStackError(
            f"{cwd} is not inside the canvas-assets project folder, where the local stack keeps "
            f"its state ({STATE_FOLDER}/). Run the command there, or give the stack a state "
            "folder of its own with --home DIR or CANVAS_ASSETS_HOME."
        )
    return root / STATE_FOLDER


def _single_site(env: dict[str, str], home: Path, stack, size: str, interval: float) -> Site:
    """One code location: the user's Canvas and queue where configured, else local ones."""
    site = Site(LOCATION, {k: env[k] for k in CODE_ONLY if k in env})
    client = None
    if not env.get("CANVAS_LIVE_EVENTS_QUEUE_URL"):
        client = start_sqs(env, stack)
        queue = client.create_queue(QueueName=DEV_QUEUE_NAME)["QueueUrl"]
        site.env["CANVAS_LIVE_EVENTS_QUEUE_URL"] = queue
    print(f"live events queue: {site.env['CANVAS_LIVE_EVENTS_QUEUE_URL']}")
    if env.get("CANVAS_BASE_URL"):
        print(f"canvas: {env['CANVAS_BASE_URL']} (CANVAS_BASE_URL)")
        return site
    changes = (client, site.env["CANVAS_LIVE_EVENTS_QUEUE_URL"], interval) if client else None
    sandbox = start_sandbox(home / f"sandbox-{size}.pickle", size, 0, stack, changes)
    site.env.update(
        CANVAS_BASE_URL=sandbox.url, CANVAS_API_TOKEN=SANDBOX_TOKEN, CANVAS_ACCOUNT_ID="self"
    )
    site.sandboxes.append(sandbox.url)
    return site


def _institution_sites(
    env: dict[str, str], names: list[str], home: Path, stack, size: str, interval: float
) -> list[Site]:
    """A vendor's deployment: one code location serving a sandbox institution per name (its own
    shard, root account uuid and schema canvas_<name>), all publishing to one shared queue,
    named in an institutions file (CANVAS_INSTITUTIONS_FILE) as a vendor writes it."""
    configured = [k for k in ("CANVAS_BASE_URL", "CANVAS_LIVE_EVENTS_QUEUE_URL") if env.get(k)]
    if configured:
        raise DevStackError(
            f"--institutions serves sandbox institutions; unset {', '.join(configured)} (or run "
            "one institution per stack against real services)."
        )
    client = start_sqs(env, stack)
    queue = client.create_queue(QueueName=DEV_QUEUE_NAME)["QueueUrl"]
    site = Site(LOCATION, {"CANVAS_LIVE_EVENTS_QUEUE_URL": queue})
    entries = []
    for index, name in enumerate(names):
        path = home / f"sandbox-{size}-{name}.pickle"
        shard = SANDBOX_SHARD + index
        sandbox = start_sandbox(path, size, index, stack, (client, queue, interval), shard)
        token_env = f"{name.upper()}_CANVAS_TOKEN"
        site.env[token_env] = SANDBOX_TOKEN
        site.sandboxes.append(sandbox.url)
        entries.append(
            {
                "name": name,
                "base_url": sandbox.url,
                "root_account_uuid": sandbox.root_account_uuid,
                "token_env": token_env,
            }
        )
        print(f"institution {name}: shard {shard}, schema canvas_{name}")
    institutions_file = home / "institutions.yaml"
    institutions_file.write_text(yaml.safe_dump({"institutions": entries}, sort_keys=False))
    site.env["CANVAS_INSTITUTIONS_FILE"] = str(institutions_file)
    print(f"institutions: {institutions_file}; one shared queue {queue}")
    return [site]


def _write_dev_env(env: dict[str, str], home: Path, stack: contextlib.ExitStack) -> None:
    """``<state>/dev.env``: the stack's addresses, for Dagster's CLI in another terminal."""
    started = {name: env[name] for name in DEV_ENV_NAMES if name in env}
    # The sandbox institutions' tokens (CANVAS_INSTITUTIONS_FILE names them): not secrets.
    started.update(
        {k: v for k, v in env.items() if k.endswith("_CANVAS_TOKEN") and v == SANDBOX_TOKEN}
    )
    if os.environ.get("CANVAS_API_TOKEN"):
        started.pop("CANVAS_API_TOKEN", None)  # the user's own token is never written
    if os.environ.get("CANVAS_WAREHOUSE_URL"):
        started.pop("CANVAS_WAREHOUSE_URL", None)
        started.pop("CANVAS_DAGSTER_PG_URL", None)
    path = home / "dev.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in started.items()))
    stack.callback(path.unlink, missing_ok=True)


def _start_dagster(
    env: dict[str, str], sites: list[Site], home: Path, ui_port: int, stack
) -> tuple[subprocess.Popen, int]:
    env["DAGSTER_HOME"] = str(dagster.write_instance(home))
    port = free_port(ui_port)  # chosen first: alerts link into the UI (CANVAS_ASSETS_UI_URL)
    env.setdefault("CANVAS_ASSETS_UI_URL", f"http://127.0.0.1:{port}")
    servers = [dagster.start_code_server(s.location, {**env, **s.env}, stack) for s in sites]
    dagster.wait_for_code_servers(servers, env)
    workspace = dagster.write_workspace(home, servers)
    services_env = {k: v for k, v in env.items() if k not in CODE_ONLY}
    proc = dagster.start_webserver_and_daemon(services_env, workspace, port, stack)
    print(f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops everything)", flush=True)
    return proc, port


def _watch_alerts(env: dict[str, str], stack: contextlib.ExitStack) -> None:
    """``--alerts``: the generic webhook points at a receiver that prints each alert here."""
    if env.get(ALERT_WEBHOOK_URL_ENV):
        raise DevStackError(
            f"--alerts starts a local webhook receiver; unset {ALERT_WEBHOOK_URL_ENV} (or leave "
            "out --alerts to send alerts to yours)."
        )
    env[ALERT_WEBHOOK_URL_ENV] = start_alert_receiver(stack)
    print(f"alerts: printed here as they arrive (webhook {env[ALERT_WEBHOOK_URL_ENV]})")


def _outage_later(sandboxes: list[str], after: float, stack: contextlib.ExitStack) -> None:
    """``--outage-after``: every sandbox answers 503 for a minute, ``after`` seconds from now;
    the apply and backfill runs of that minute fail, and alert, then recover."""
    import requests

    def outage() -> None:
        print(f"canvas: sandbox outage for {OUTAGE_SECONDS} s starts now", flush=True)
        for url in sandboxes:
            with contextlib.suppress(requests.RequestException):
                requests.post(f"{url}{OUTAGE_PATH}", params={"seconds": OUTAGE_SECONDS}, timeout=5)

    timer = threading.Timer(after, outage)
    timer.daemon = True
    timer.start()
    stack.callback(timer.cancel)
    print(f"canvas: the sandbox fails for {OUTAGE_SECONDS} s in {after:g} s (--outage-after)")


def _serve(proc: subprocess.Popen, port: int, exit_when_ready: bool) -> int:
    """Wait for the UI, then until Dagster exits or the user stops the stack."""

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        if not wait_until_ready(proc, f"http://127.0.0.1:{port}/server_info"):
            print("Dagster did not start; see its output above.", file=sys.stderr)
            return 1
        print(f"ready: Dagster UI answers at http://127.0.0.1:{port}", flush=True)
        if exit_when_ready:
            return 0
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping…", flush=True)
        return 0
    return proc.returncode or 0


def run_dev(
    settings: Settings,
    *,
    home: Path | None = None,
    size: str = "medium",
    ui_port: int = 3000,
    change_interval_seconds: float = 15.0,
    institutions: list[str] | None = None,
    alerts: bool = False,
    outage_after: float | None = None,
) -> int:
    folder = state_folder(settings, home, Path.cwd())
    env = dict(os.environ)
    env["CANVAS_ASSETS_HOME"] = str(folder)
    print(f"state folder: {folder}")
    with exclusive_lock(folder / "dev.lock"), contextlib.ExitStack() as stack:
        start_postgres(env, folder)
        if alerts:
            _watch_alerts(env, stack)
        if institutions:
            sites = _institution_sites(
                env, institutions, folder, stack, size, change_interval_seconds
            )
        else:
            sites = [_single_site(env, folder, stack, size, change_interval_seconds)]
        proc, port = _start_dagster(env, sites, folder, ui_port, stack)
        if outage_after is not None:
            _outage_later([url for site in sites for url in site.sandboxes], outage_after, stack)
        _write_dev_env({**env, **sites[0].env}, folder, stack)
        return _serve(proc, port, settings.dev_exit_when_ready)


def reset_state(settings: Settings, home: Path | None) -> Path:
    """Delete a stopped stack's state folder: tables, Dagster history, the saved sandbox."""
    folder = state_folder(settings, home, Path.cwd())
    if folder.exists():
        with exclusive_lock(folder / "dev.lock"):  # refuses while a stack runs there
            shutil.rmtree(folder)
    return folder
