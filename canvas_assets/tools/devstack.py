"""`canvas-assets dev`: start every piece the user has not configured, then `dagster dev`.

Pieces: embedded PostgreSQL (unless CANVAS_WAREHOUSE_URL), a local SQS from moto's server mode
with a ``canvas-live-events-dev`` queue (unless CANVAS_LIVE_EVENTS_QUEUE_URL), the Canvas sandbox
and its change driver (unless CANVAS_BASE_URL), and the Dagster webserver + daemon with the
instance stored in PostgreSQL. A lock file in the state folder stops a second copy from sharing
the same state; Ctrl-C stops every child.

The children get the environment with the pieces' addresses added: it is how Dagster's own
processes learn them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from canvas_assets.settings import Settings
from canvas_assets.tools.processes import (
    DevStackError,
    exclusive_lock,
    free_port,
    stop_process_group,
    wait_until_ready,
)
from canvas_assets.warehouse.embedded import (
    DAGSTER_DATABASE,
    WAREHOUSE_DATABASE,
    embedded_server,
    ensure_database,
    redact_url,
)

SANDBOX_TOKEN = "sandbox-token"
DEV_QUEUE_NAME = "canvas-live-events-dev"
LOCAL_SQS_CREDENTIALS = {"aws_access_key_id": "local-sqs", "aws_secret_access_key": "local-sqs"}
PROJECT_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["DevStackError", "dagster_storage_url", "run_dev"]


def dagster_storage_url(url: str) -> str:
    """dagster-postgres speaks psycopg2; SQLAlchemy 2.1 would pick psycopg 3 for a bare
    postgresql:// URL, and Dagster's NOTIFY statements fail under it."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def dagster_yaml_source() -> Path:
    for candidate in (Path.cwd() / "dagster.yaml", PROJECT_ROOT / "dagster.yaml"):
        if candidate.is_file():
            return candidate
    raise DevStackError("dagster.yaml not found in the current folder or the project root.")


def _start_postgres(env: dict[str, str], home: Path) -> None:
    """The warehouse and the Dagster instance: CANVAS_WAREHOUSE_URL, or embedded PostgreSQL."""
    if env.get("CANVAS_WAREHOUSE_URL"):
        print(f"warehouse: {redact_url(env['CANVAS_WAREHOUSE_URL'])} (CANVAS_WAREHOUSE_URL)")
        env.setdefault("CANVAS_DAGSTER_PG_URL", env["CANVAS_WAREHOUSE_URL"])
    else:
        server = embedded_server(home / "postgres")
        ensure_database(server.get_uri(), WAREHOUSE_DATABASE)
        ensure_database(server.get_uri(), DAGSTER_DATABASE)
        env["CANVAS_WAREHOUSE_URL"] = server.get_uri(WAREHOUSE_DATABASE)
        env.setdefault("CANVAS_DAGSTER_PG_URL", server.get_uri(DAGSTER_DATABASE))
        print(f"warehouse: embedded PostgreSQL in {home / 'postgres'}")
    env["CANVAS_DAGSTER_PG_URL"] = dagster_storage_url(env["CANVAS_DAGSTER_PG_URL"])


def _start_sqs(env: dict[str, str], stack: contextlib.ExitStack):
    """A moto SQS server with the dev queue, unless CANVAS_LIVE_EVENTS_QUEUE_URL is set; returns
    a client for the local queue (None for a real one: the sandbox publishes only locally)."""
    if env.get("CANVAS_LIVE_EVENTS_QUEUE_URL"):
        print(f"live events queue: {env['CANVAS_LIVE_EVENTS_QUEUE_URL']}")
        return None
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    # moto's werkzeug server logs every request; the stack's console is for the user.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stack.callback(server.stop)
    env["AWS_ENDPOINT_URL_SQS"] = f"http://127.0.0.1:{port}"
    env.setdefault("AWS_REGION", "us-east-1")
    env.setdefault("AWS_DEFAULT_REGION", env["AWS_REGION"])
    # moto accepts any credentials; real ones must never be sent to it.
    env["AWS_ACCESS_KEY_ID"] = LOCAL_SQS_CREDENTIALS["aws_access_key_id"]
    env["AWS_SECRET_ACCESS_KEY"] = LOCAL_SQS_CREDENTIALS["aws_secret_access_key"]
    client = boto3.client(
        "sqs",
        endpoint_url=env["AWS_ENDPOINT_URL_SQS"],
        region_name=env["AWS_REGION"],
        **LOCAL_SQS_CREDENTIALS,
    )
    env["CANVAS_LIVE_EVENTS_QUEUE_URL"] = client.create_queue(QueueName=DEV_QUEUE_NAME)["QueueUrl"]
    print(f"live events queue: {env['CANVAS_LIVE_EVENTS_QUEUE_URL']}")
    return client


def _start_canvas(
    env: dict[str, str], stack: contextlib.ExitStack, size: str, change_interval: float, sqs
) -> None:
    """The Canvas sandbox and its change driver, unless CANVAS_BASE_URL is set."""
    if env.get("CANVAS_BASE_URL"):
        print(f"canvas: {env['CANVAS_BASE_URL']} (CANVAS_BASE_URL)")
        return
    from canvas_assets.sandbox import ChangeDriver, SandboxServer, generate_institution

    institution = generate_institution(size, seed=0)
    sandbox = SandboxServer(institution, token=SANDBOX_TOKEN, port=free_port()).start()
    stack.callback(sandbox.stop)
    env.update(
        CANVAS_BASE_URL=sandbox.url, CANVAS_API_TOKEN=SANDBOX_TOKEN, CANVAS_ACCOUNT_ID="self"
    )
    if sqs is not None:
        queue_url = env["CANVAS_LIVE_EVENTS_QUEUE_URL"]
        driver = ChangeDriver(institution, sqs, queue_url, seed=0, follow_wall_clock=True)
        driver.start_background(change_interval)
        stack.callback(driver.stop)
    print(f"canvas: sandbox ({size}) at {sandbox.url}, token {SANDBOX_TOKEN}")


def _start_dagster(
    env: dict[str, str], home: Path, ui_port: int, stack: contextlib.ExitStack
) -> tuple[subprocess.Popen, int]:
    """`dagster dev` (webserver + daemon) in its own process group, instance in PostgreSQL."""
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dagster_yaml_source(), dagster_home / "dagster.yaml")
    env["DAGSTER_HOME"] = str(dagster_home)
    port = free_port(ui_port)
    command = [
        sys.executable, "-m", "dagster", "dev",
        "-m", "canvas_assets.definitions",
        "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    stack.callback(stop_process_group, proc)
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
    size: str = "medium",
    ui_port: int = 3000,
    change_interval_seconds: float = 15.0,
) -> int:
    home = settings.state_dir
    env = dict(os.environ)
    env["CANVAS_ASSETS_HOME"] = str(home)
    with exclusive_lock(home / "dev.lock"), contextlib.ExitStack() as stack:
        _start_postgres(env, home)
        sqs = _start_sqs(env, stack)
        _start_canvas(env, stack, size, change_interval_seconds, sqs)
        proc, port = _start_dagster(env, home, ui_port, stack)
        return _serve(proc, port, settings.dev_exit_when_ready)
