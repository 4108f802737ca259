"""`canvas-assets dev`: start every piece the user has not configured, then Dagster in its
production shape: a gRPC code server per code location, the webserver and the daemon.

Pieces (``tools/local_pieces.py``): embedded PostgreSQL (unless CANVAS_WAREHOUSE_URL), a local SQS
from moto's server mode (unless CANVAS_LIVE_EVENTS_QUEUE_URL), and the Canvas sandbox with its
change driver (unless CANVAS_BASE_URL). With ``--institutions north,south`` the stack serves one
sandbox institution per name, each its own code location with its own queue and schema, in one
Dagster instance and one PostgreSQL. With ``--oauth`` each sandbox serves a developer key,
which the stack authorises once, as ``canvas-assets canvas connect`` does: the code location gets
the key and its refresh token instead of the sandbox token.

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
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from canvas_assets.settings import ALERT_SECRETS, ALERT_WEBHOOK_URL_ENV, Settings
from canvas_devstack import dagster_services as dagster
from canvas_devstack.alert_receiver import start_alert_receiver
from canvas_devstack.console import (
    FailureWatcher,
    cancel_runs_in_flight,
    say,
    service_output,
)
from canvas_devstack.local_pieces import (
    SANDBOX_SHARD,
    SANDBOX_TOKEN,
    StartedSandbox,
    start_postgres,
    start_sandbox,
    start_sqs,
)
from canvas_devstack.preflight import check_canvas, check_warehouse, untargeted_semesters
from canvas_devstack.processes import (
    DevStackError,
    exclusive_lock,
    free_port,
    stop_process_group,
    wait_until_ready,
)
from canvas_sandbox.server import OUTAGE_PATH

DEV_QUEUE_NAME = "canvas-live-events-dev"
OUTAGE_SECONDS = 60
STATE_FOLDER = ".canvas-assets"
LOCATION = "canvas_assets"
# What only code servers (and the runs they launch) get: the webserver and the daemon never see
# a Canvas token, the warehouse URL or AWS credentials.
CODE_ONLY = (
    "CANVAS_INSTITUTION", "CANVAS_INSTITUTIONS_FILE", "CANVAS_BASE_URL", "CANVAS_API_TOKEN",
    "CANVAS_CLIENT_ID", "CANVAS_CLIENT_SECRET", "CANVAS_REFRESH_TOKEN", "CANVAS_ACCOUNT_ID",
    "CANVAS_WAREHOUSE_URL", "CANVAS_LIVE_EVENTS_QUEUE_URL", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", *ALERT_SECRETS,
)  # fmt: skip
# Written to <state>/dev.env for Dagster's own CLI (never a secret the user configured).
DEV_ENV_NAMES = (
    "DAGSTER_HOME", "CANVAS_ASSETS_HOME", "CANVAS_DAGSTER_PG_URL", "CANVAS_WAREHOUSE_URL",
    "CANVAS_INSTITUTIONS_FILE",
    "CANVAS_BASE_URL", "CANVAS_API_TOKEN", "CANVAS_CLIENT_ID", "CANVAS_CLIENT_SECRET",
    "CANVAS_REFRESH_TOKEN", "CANVAS_LIVE_EVENTS_QUEUE_URL", "AWS_ENDPOINT_URL_SQS",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
)  # fmt: skip

__all__ = ["DevStackError", "reset_state", "run_dev", "state_folder"]


@dataclass
class Site:
    """One institution of the stack: its code location and the variables only it gets."""

    location: str
    env: dict[str, str] = field(default_factory=dict)
    sandboxes: list[str] = field(default_factory=list)  # the sandbox URLs it reads


# Where a sandbox's credentials go: the variables themselves (the single institution), and the
# entry fields naming them (an institutions file).
KEY_VARIABLES = ("CANVAS_CLIENT_ID", "CANVAS_CLIENT_SECRET", "CANVAS_REFRESH_TOKEN")
KEY_FIELDS = ("client_id_env", "client_secret_env", "refresh_token_env")


def _credentials(sandbox: StartedSandbox, prefix: str = "") -> tuple[dict, dict]:
    """The variables a sandbox's credentials are given in (``prefix`` + their usual names) and
    the institutions-file fields that name them."""
    if sandbox.key is None:
        variable = f"{prefix}CANVAS_TOKEN" if prefix else "CANVAS_API_TOKEN"
        return {variable: SANDBOX_TOKEN}, {"token_env": variable}
    values = (sandbox.key.client_id, sandbox.key.client_secret, sandbox.key.refresh_token)
    names = (f"{prefix}{name}" for name in KEY_VARIABLES)
    variables = dict(zip(names, values, strict=True))
    return variables, dict(zip(KEY_FIELDS, variables, strict=True))


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


def _single_site(
    env: dict[str, str], home: Path, stack, size: str, interval: float, lifetime: float | None
) -> Site:
    """One code location: the user's Canvas and queue where configured, else local ones (with a
    developer key whose tokens live ``lifetime`` seconds, when given)."""
    site = Site(LOCATION, {k: env[k] for k in CODE_ONLY if k in env})
    client = None
    if not env.get("CANVAS_LIVE_EVENTS_QUEUE_URL"):
        client = start_sqs(env, stack)
        queue = client.create_queue(QueueName=DEV_QUEUE_NAME)["QueueUrl"]
        site.env["CANVAS_LIVE_EVENTS_QUEUE_URL"] = queue
    print(f"live events queue: {site.env['CANVAS_LIVE_EVENTS_QUEUE_URL']}")
    if env.get("CANVAS_BASE_URL"):
        if lifetime is not None:
            raise DevStackError(
                "--oauth gives the sandbox a developer key; with CANVAS_BASE_URL set, configure "
                "your own key (CANVAS_CLIENT_ID, CANVAS_CLIENT_SECRET, CANVAS_REFRESH_TOKEN)."
            )
        print(f"canvas: {env['CANVAS_BASE_URL']} (CANVAS_BASE_URL)")
        return site
    changes = (client, site.env["CANVAS_LIVE_EVENTS_QUEUE_URL"], interval) if client else None
    path = home / f"sandbox-{size}.pickle"
    sandbox = start_sandbox(path, size, 0, stack, changes, token_lifetime=lifetime)
    variables, _ = _credentials(sandbox)
    for name in ("CANVAS_API_TOKEN", *KEY_VARIABLES):  # the sandbox's own, one way only
        site.env.pop(name, None)
    site.env.update(CANVAS_BASE_URL=sandbox.url, CANVAS_ACCOUNT_ID="self", **variables)
    site.sandboxes.append(sandbox.url)
    return site


def _institution_sites(
    env: dict[str, str],
    names: list[str],
    home: Path,
    stack,
    size: str,
    interval: float,
    lifetime: float | None,
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
        changes = (client, queue, interval)
        sandbox = start_sandbox(path, size, index, stack, changes, shard, lifetime)
        variables, fields_ = _credentials(sandbox, f"{name.upper()}_")
        site.env.update(variables)
        site.sandboxes.append(sandbox.url)
        entries.append(
            {
                "name": name,
                "base_url": sandbox.url,
                "root_account_uuid": sandbox.root_account_uuid,
                **fields_,
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
    # The sandbox institutions' tokens and keys (CANVAS_INSTITUTIONS_FILE names them): not
    # secrets. The user's own never reach here (--institutions serves sandboxes only).
    started.update(
        {
            k: v
            for k, v in env.items()
            if k.endswith(("_CANVAS_TOKEN", *(f"_{name}" for name in KEY_VARIABLES)))
            and k not in os.environ
        }
    )
    for name in ("CANVAS_API_TOKEN", *KEY_VARIABLES):
        if os.environ.get(name):
            started.pop(name, None)  # the user's own token or key is never written
    if os.environ.get("CANVAS_WAREHOUSE_URL"):
        started.pop("CANVAS_WAREHOUSE_URL", None)
        started.pop("CANVAS_DAGSTER_PG_URL", None)
    path = home / "dev.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in started.items()))
    stack.callback(path.unlink, missing_ok=True)


def _start_dagster(
    env: dict[str, str], sites: list[Site], home: Path, ui_port: int, stack, verbose: bool
) -> dagster.Services:
    env["DAGSTER_HOME"] = str(dagster.write_instance(home))
    port = free_port(ui_port)  # chosen first: alerts link into the UI (CANVAS_ASSETS_UI_URL)
    env.setdefault("CANVAS_ASSETS_UI_URL", f"http://127.0.0.1:{port}")
    logs = [service_output(home, name, verbose) for name in ("code-server", "webserver", "daemon")]
    for log in logs:
        if log is not None:
            stack.callback(log.close)
    servers = [
        dagster.start_code_server(s.location, {**env, **s.env}, stack, logs[0]) for s in sites
    ]
    dagster.wait_for_code_servers(servers, env)
    workspace = dagster.write_workspace(home, servers)
    services_env = {k: v for k, v in env.items() if k not in CODE_ONLY}
    services = dagster.start_webserver_and_daemon(
        services_env, workspace, port, stack, (logs[1], logs[2])
    )
    where = "" if verbose else f"; Dagster's own logs in {home / 'logs'} (--verbose shows them)"
    say(f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops everything{where})")
    return services


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
        say(f"canvas: sandbox outage for {OUTAGE_SECONDS} s starts now")
        for url in sandboxes:
            with contextlib.suppress(requests.RequestException):
                requests.post(f"{url}{OUTAGE_PATH}", params={"seconds": OUTAGE_SECONDS}, timeout=5)

    timer = threading.Timer(after, outage)
    timer.daemon = True
    timer.start()
    stack.callback(timer.cancel)
    print(f"canvas: the sandbox fails for {OUTAGE_SECONDS} s in {after:g} s (--outage-after)")


class _Stop(Exception):
    """Ctrl-C or SIGTERM: stop the stack."""


def _on_signal(signum: int, frame: object) -> None:
    raise _Stop


def _serve(services: dagster.Services, env: dict[str, str], exit_when_ready: bool) -> int:
    """Wait for the UI, then until Dagster exits or the user stops the stack. Stopping stops
    the daemon first (no new runs), then cancels the runs in flight through Dagster, so none is
    left to fail."""
    proc, port = services.webserver, services.port
    try:
        if not wait_until_ready(proc, f"http://127.0.0.1:{port}/server_info"):
            say("Dagster did not start; see its logs in the state folder (or run with --verbose).")
            return 1
        say(f"ready: Dagster UI answers at http://127.0.0.1:{port}")
        if exit_when_ready:
            return 0
        with contextlib.closing(FailureWatcher(env).start()):
            while proc.poll() is None:
                time.sleep(0.5)
    except _Stop:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop
        say("stopping: canceling runs in flight…")
        stop_process_group(services.daemon)
        canceled = cancel_runs_in_flight(env)
        runs = "1 run" if canceled == 1 else f"{canceled} runs"
        say(f"stopping: {runs} canceled; stopping Dagster and the local pieces…")
        return 0
    return proc.returncode or 0


def _preflight(settings: Settings, env: dict[str, str]) -> None:
    """Check what the user configured (the warehouse, every Canvas) before starting anything."""
    for setting in ("CANVAS_WAREHOUSE_URL", "CANVAS_DAGSTER_PG_URL"):
        if env.get(setting):
            check_warehouse(env[setting], setting)
    if not (env.get("CANVAS_BASE_URL") or settings.institutions_file):
        return  # the stack serves its own sandbox
    for institution in settings.institutions:
        check_canvas(settings, institution)


def run_dev(
    settings: Settings,
    *,
    home: Path | None = None,
    size: str = "medium",
    ui_port: int = 3000,
    change_interval_seconds: float = 15.0,
    institutions: list[str] | None = None,
    verbose: bool = False,
    token_lifetime: float | None = None,
    alerts: bool = False,
    outage_after: float | None = None,
) -> int:
    """Start the stack; ``token_lifetime``: its sandboxes serve a developer key (--oauth)."""
    folder = state_folder(settings, home, Path.cwd())
    env = dict(os.environ)
    env["CANVAS_ASSETS_HOME"] = str(folder)
    _preflight(settings, env)
    # Installed even where the parent left SIGINT ignored (a shell's background job).
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    say(f"state folder: {folder}")
    try:
        with exclusive_lock(folder / "dev.lock"), contextlib.ExitStack() as stack:
            start_postgres(env, folder)
            if alerts:
                _watch_alerts(env, stack)
            for line in untargeted_semesters(settings, env["CANVAS_WAREHOUSE_URL"]):
                say(line)
            if institutions:
                sites = _institution_sites(
                    env, institutions, folder, stack, size, change_interval_seconds, token_lifetime
                )
            else:
                sites = [
                    _single_site(env, folder, stack, size, change_interval_seconds, token_lifetime)
                ]
            services = _start_dagster(env, sites, folder, ui_port, stack, verbose)
            if outage_after is not None:
                sandboxes = [url for site in sites for url in site.sandboxes]
                _outage_later(sandboxes, outage_after, stack)
            _write_dev_env({**env, **sites[0].env}, folder, stack)
            code = _serve(services, env, settings.dev_exit_when_ready)
    except _Stop:  # stopped while still starting: what started is stopped on the way out
        code = 0
    say("stopped: Dagster and every local piece this command started are down.")
    return code


def reset_state(settings: Settings, home: Path | None) -> Path:
    """Delete a stopped stack's state folder: tables, Dagster history, the saved sandbox."""
    folder = state_folder(settings, home, Path.cwd())
    if folder.exists():
        with exclusive_lock(folder / "dev.lock"):  # refuses while a stack runs there
            shutil.rmtree(folder)
    return folder
