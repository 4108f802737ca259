"""`canvas-assets dev`: start every piece the user has not configured, then `dagster dev`.

Pieces: embedded PostgreSQL (unless CANVAS_WAREHOUSE_URL), a local SQS from moto's server mode
with a ``canvas-live-events-dev`` queue (unless CANVAS_LIVE_EVENTS_QUEUE_URL), the Canvas sandbox
and its change driver (unless CANVAS_BASE_URL), and the Dagster webserver + daemon with the
instance stored in PostgreSQL. A lock file in the state folder stops a second copy from sharing
the same state; Ctrl-C stops every child.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from canvas_assets.settings import state_dir
from canvas_assets.warehouse import (
    DAGSTER_DATABASE,
    WAREHOUSE_DATABASE,
    embedded_server,
    ensure_database,
    redact_url,
)

SANDBOX_TOKEN = "sandbox-token"
DEV_QUEUE_NAME = "canvas-live-events-dev"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class DevStackError(RuntimeError):
    pass


def dagster_storage_url(url: str) -> str:
    """dagster-postgres speaks psycopg2; SQLAlchemy 2.1 would pick psycopg 3 for a bare
    postgresql:// URL, and Dagster's NOTIFY statements fail under it."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    candidates = [preferred] if preferred else []
    for port in [*candidates, 0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise DevStackError("No free TCP port on 127.0.0.1.")


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise DevStackError(
            f"canvas-assets dev is already running with state folder {path.parent} ({owner}). "
            "Stop it, or set CANVAS_ASSETS_HOME to another folder to run a second stack."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def dagster_yaml_source() -> Path:
    for candidate in (Path.cwd() / "dagster.yaml", PROJECT_ROOT / "dagster.yaml"):
        if candidate.is_file():
            return candidate
    raise DevStackError("dagster.yaml not found in the current folder or the project root.")


def start_local_sqs(env: dict[str, str], stack: contextlib.ExitStack) -> str:
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
    env["AWS_ACCESS_KEY_ID"] = "local-sqs"
    env["AWS_SECRET_ACCESS_KEY"] = "local-sqs"
    client = boto3.client(
        "sqs",
        endpoint_url=env["AWS_ENDPOINT_URL_SQS"],
        region_name=env["AWS_REGION"],
        aws_access_key_id="local-sqs",
        aws_secret_access_key="local-sqs",
    )
    queue_url = client.create_queue(QueueName=DEV_QUEUE_NAME)["QueueUrl"]
    env["CANVAS_LIVE_EVENTS_QUEUE_URL"] = queue_url
    return queue_url


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(proc: subprocess.Popen, grace_seconds: float = 30.0) -> None:
    """Ctrl-C for `dagster dev` and everything it started (webserver, daemon, code server, run
    workers); whatever is still alive after the grace period is killed."""
    deadline = time.monotonic() + grace_seconds
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_seconds)
    # Run workers can outlive `dagster dev` for a moment while they record the interruption.
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_dev(
    *, size: str = "medium", ui_port: int = 3000, change_interval_seconds: float = 15.0
) -> int:
    home = state_dir()
    env = dict(os.environ)
    env["CANVAS_ASSETS_HOME"] = str(home)
    with exclusive_lock(home / "dev.lock"), contextlib.ExitStack() as stack:
        # PostgreSQL: the warehouse and the Dagster instance.
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

        # SQS.
        sqs_client = None
        if env.get("CANVAS_LIVE_EVENTS_QUEUE_URL"):
            queue_url = env["CANVAS_LIVE_EVENTS_QUEUE_URL"]
        else:
            queue_url = start_local_sqs(env, stack)
            import boto3

            sqs_client = boto3.client(
                "sqs",
                endpoint_url=env["AWS_ENDPOINT_URL_SQS"],
                region_name=env["AWS_REGION"],
                aws_access_key_id="local-sqs",
                aws_secret_access_key="local-sqs",
            )
        print(f"live events queue: {queue_url}")

        # Canvas.
        if env.get("CANVAS_BASE_URL"):
            print(f"canvas: {env['CANVAS_BASE_URL']} (CANVAS_BASE_URL)")
        else:
            from canvas_assets.sandbox import ChangeDriver, SandboxServer, generate_institution

            institution = generate_institution(size, seed=0)
            sandbox = SandboxServer(institution, token=SANDBOX_TOKEN, port=free_port()).start()
            stack.callback(sandbox.stop)
            env.update(
                CANVAS_BASE_URL=sandbox.url,
                CANVAS_API_TOKEN=SANDBOX_TOKEN,
                CANVAS_ACCOUNT_ID="self",
            )
            if sqs_client is not None:
                driver = ChangeDriver(
                    institution, sqs_client, queue_url, seed=0, follow_wall_clock=True
                )
                driver.start_background(change_interval_seconds)
                stack.callback(driver.stop)
            print(f"canvas: sandbox ({size}) at {sandbox.url}, token {SANDBOX_TOKEN}")

        # Dagster.
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

        def _terminate(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _terminate)
        exit_when_ready = env.get("CANVAS_ASSETS_DEV_EXIT_WHEN_READY", "").lower() in ("1", "true")
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


def wait_until_ready(proc: subprocess.Popen, url: str, timeout_seconds: float = 240.0) -> bool:
    """Poll the webserver until it answers; False if dagster exits or the time runs out."""
    import requests

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return True
        time.sleep(1.0)
    return False
