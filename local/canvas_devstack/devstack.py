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
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from canvas_assets.settings import Settings
from canvas_devstack import dagster_services as dagster
from canvas_devstack.local_pieces import (
    SANDBOX_SHARD,
    SANDBOX_TOKEN,
    StartedSandbox,
    start_postgres,
    start_sandbox,
    start_sqs,
)
from canvas_devstack.processes import DevStackError, exclusive_lock, wait_until_ready

DEV_QUEUE_NAME = "canvas-live-events-dev"
STATE_FOLDER = ".canvas-assets"
LOCATION = "canvas_assets"
# What only code servers (and the runs they launch) get: the webserver and the daemon never see
# a Canvas token, the warehouse URL or AWS credentials.
CODE_ONLY = (
    "CANVAS_INSTITUTION", "CANVAS_INSTITUTIONS_FILE", "CANVAS_BASE_URL", "CANVAS_API_TOKEN",
    "CANVAS_CLIENT_ID", "CANVAS_CLIENT_SECRET", "CANVAS_REFRESH_TOKEN", "CANVAS_ACCOUNT_ID",
    "CANVAS_WAREHOUSE_URL", "CANVAS_LIVE_EVENTS_QUEUE_URL", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
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
    env: dict[str, str], sites: list[Site], home: Path, ui_port: int, stack
) -> tuple[subprocess.Popen, int]:
    env["DAGSTER_HOME"] = str(dagster.write_instance(home))
    servers = [dagster.start_code_server(s.location, {**env, **s.env}, stack) for s in sites]
    dagster.wait_for_code_servers(servers, env)
    workspace = dagster.write_workspace(home, servers)
    services_env = {k: v for k, v in env.items() if k not in CODE_ONLY}
    proc, port = dagster.start_webserver_and_daemon(services_env, workspace, ui_port, stack)
    print(f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops everything)", flush=True)
    return proc, port


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
    token_lifetime: float | None = None,
) -> int:
    """Start the stack; ``token_lifetime``: its sandboxes serve a developer key (--oauth)."""
    folder = state_folder(settings, home, Path.cwd())
    env = dict(os.environ)
    env["CANVAS_ASSETS_HOME"] = str(folder)
    print(f"state folder: {folder}")
    with exclusive_lock(folder / "dev.lock"), contextlib.ExitStack() as stack:
        start_postgres(env, folder)
        if institutions:
            sites = _institution_sites(
                env, institutions, folder, stack, size, change_interval_seconds, token_lifetime
            )
        else:
            sites = [
                _single_site(env, folder, stack, size, change_interval_seconds, token_lifetime)
            ]
        proc, port = _start_dagster(env, sites, folder, ui_port, stack)
        _write_dev_env({**env, **sites[0].env}, folder, stack)
        return _serve(proc, port, settings.dev_exit_when_ready)


def reset_state(settings: Settings, home: Path | None) -> Path:
    """Delete a stopped stack's state folder: tables, Dagster history, the saved sandbox."""
    folder = state_folder(settings, home, Path.cwd())
    if folder.exists():
        with exclusive_lock(folder / "dev.lock"):  # refuses while a stack runs there
            shutil.rmtree(folder)
    return folder
