"""The pieces `canvas-assets dev` starts when the user has not configured real ones: an embedded
PostgreSQL, a local SQS (moto's server mode) and Canvas sandboxes whose institutions are saved in
the state folder after every change."""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from canvas_assets.outcomes import first_line, redact_url
from canvas_assets.warehouse.embedded import (
    DAGSTER_DATABASE,
    WAREHOUSE_DATABASE,
    embedded_server,
    ensure_database,
)
from canvas_devstack.processes import free_port

SANDBOX_TOKEN = "sandbox-token"
SANDBOX_SHARD = 2107  # the first sandbox's shard; each further institution gets the next
# The sandbox's developer key redirects here (nothing listens: the stack reads the redirect).
SANDBOX_REDIRECT_URI = "http://127.0.0.1:8765/oauth/callback"
LOCAL_SQS_CREDENTIALS = {"aws_access_key_id": "local-sqs", "aws_secret_access_key": "local-sqs"}


def start_postgres(env: dict[str, str], home: Path) -> None:
    """The warehouse and the Dagster instance: CANVAS_WAREHOUSE_URL, or embedded PostgreSQL."""
    if env.get("CANVAS_WAREHOUSE_URL"):
        print(f"warehouse: {redact_url(env['CANVAS_WAREHOUSE_URL'])} (CANVAS_WAREHOUSE_URL)")
        if not env.get("CANVAS_DAGSTER_PG_URL"):
            print("Dagster's run history: the same database (set CANVAS_DAGSTER_PG_URL to move it)")
        env.setdefault("CANVAS_DAGSTER_PG_URL", env["CANVAS_WAREHOUSE_URL"])
        return
    server = embedded_server(home / "postgres")
    ensure_database(server.get_uri(), WAREHOUSE_DATABASE)
    ensure_database(server.get_uri(), DAGSTER_DATABASE)
    env["CANVAS_WAREHOUSE_URL"] = server.get_uri(WAREHOUSE_DATABASE)
    env.setdefault("CANVAS_DAGSTER_PG_URL", server.get_uri(DAGSTER_DATABASE))
    print(f"warehouse: embedded PostgreSQL in {home / 'postgres'}")


def start_sqs(env: dict[str, str], stack: contextlib.ExitStack):
    """A moto SQS server; its address and (throwaway) credentials go into ``env``. Returns a
    client for creating queues and publishing the sandbox's events."""
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
    return boto3.client(
        "sqs",
        endpoint_url=env["AWS_ENDPOINT_URL_SQS"],
        region_name=env["AWS_REGION"],
        **LOCAL_SQS_CREDENTIALS,
    )


def load_institution(path: Path, size: str, seed: int = 0, shard_id: int = SANDBOX_SHARD):
    """The sandbox's institution as the last session left it (True), or a new one (False)."""
    from canvas_sandbox import Institution, generate_institution

    if path.is_file():
        with path.open("rb") as handle:
            saved = pickle.load(handle)
        if saved.get("size") == size and saved["fields"].get("shard_id") == shard_id:
            return Institution(**saved["fields"]), True
    return generate_institution(size, seed=seed, shard_id=shard_id), False


def save_institution(institution, path: Path, size: str) -> None:
    """Write the institution atomically (the lock is not state)."""
    with institution.lock:
        state = {f.name: getattr(institution, f.name) for f in fields(institution)}
        state.pop("lock")
        data = pickle.dumps({"size": size, "fields": state})
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(path)


def change_line(label: str, envelopes: list[dict]) -> str:
    """One terminal line for one sandbox change: its Live Events, by name."""
    names = [envelope["metadata"]["event_name"] for envelope in envelopes]
    counted = {name: names.count(name) for name in dict.fromkeys(names)}
    shown = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counted.items())
    return f"sandbox {label}: changed; published {shown or 'nothing'}"


def _drive_changes(institution, driver, path: Path, size: str, interval: float, stop) -> None:
    """Change the institution every ``interval`` seconds and save it after each change."""
    label = path.stem.removeprefix("sandbox-")
    while not stop.wait(interval):
        try:
            print(change_line(label, driver.step()), flush=True)
            save_institution(institution, path, size)
        except Exception as exc:  # keep the dev stack alive; the next step may succeed
            print(f"failed: sandbox {label} change: {first_line(exc)}", flush=True)


@dataclass(frozen=True)
class KeyCredentials:
    """A sandbox developer key and the refresh token of its authorisation: what an institution
    configures instead of a token (sandbox values, not secrets)."""

    client_id: str
    client_secret: str
    refresh_token: str


@dataclass(frozen=True)
class StartedSandbox:
    url: str
    root_account_uuid: str
    key: KeyCredentials | None = None


def authorise(url: str, client_id: str, client_secret: str) -> KeyCredentials:
    """The one-time authorisation `canvas-assets canvas connect` makes, done by the stack itself:
    the sandbox's service account authorises at once, so the redirect is read, not served."""
    import requests

    from canvas_assets.canvas.oauth import TokenEndpoint
    from canvas_assets.canvas.scopes import SCOPES

    endpoint = TokenEndpoint(url, client_id, client_secret)
    answer = requests.get(
        endpoint.authorize_url(SANDBOX_REDIRECT_URI, "dev", SCOPES),
        allow_redirects=False,
        timeout=30,
    )
    code = parse_qs(urlsplit(answer.headers.get("Location", "")).query).get("code")
    if answer.status_code != 302 or not code:
        raise RuntimeError(f"the sandbox did not authorise its developer key: {answer.text}")
    refresh_token = endpoint.exchange(code[0], SANDBOX_REDIRECT_URI).refresh_token
    return KeyCredentials(client_id, client_secret, refresh_token)


def start_sandbox(
    path: Path,
    size: str,
    seed: int,
    stack: contextlib.ExitStack,
    changes: tuple | None = None,
    shard_id: int = SANDBOX_SHARD,
    token_lifetime: float | None = None,
) -> StartedSandbox:
    """Serve the institution saved at ``path`` (or a new one); with ``changes`` = (SQS client,
    queue URL, seconds), change it and publish its Live Events; with ``token_lifetime``, serve
    a developer key whose tokens live that many seconds, authorised once (``key``)."""
    from canvas_sandbox import ChangeDriver, DeveloperKey, SandboxServer

    institution, restored = load_institution(path, size, seed, shard_id)
    save_institution(institution, path, size)
    developer_key = None
    if token_lifetime is not None:
        developer_key = DeveloperKey(
            client_secret=f"sandbox-secret-{shard_id}",
            redirect_uris=(SANDBOX_REDIRECT_URI,),
            token_lifetime_seconds=token_lifetime,
        )
    sandbox = SandboxServer(
        institution, token=SANDBOX_TOKEN, port=free_port(), developer_key=developer_key
    ).start()
    stack.callback(sandbox.stop)
    if changes is not None:
        client, queue_url, interval = changes
        # A new seed per session, so a restart does not replay the same changes.
        driver = ChangeDriver(
            institution, client, queue_url, seed=seed + institution.version, follow_wall_clock=True
        )
        stop = threading.Event()
        thread = threading.Thread(
            target=_drive_changes,
            args=(institution, driver, path, size, interval, stop),
            daemon=True,
            name=f"sandbox-changes-{path.stem}",
        )
        thread.start()
        stack.callback(thread.join, 10)
        stack.callback(stop.set)
    state = f"restored from {path.name}" if restored else "newly generated"
    if developer_key is None:
        print(f"canvas: sandbox ({size}, {state}) at {sandbox.url}, token {SANDBOX_TOKEN}")
        return StartedSandbox(sandbox.url, institution.root_account_uuid)
    key = authorise(sandbox.url, developer_key.client_id, developer_key.client_secret)
    print(
        f"canvas: sandbox ({size}, {state}) at {sandbox.url}, developer key "
        f"{developer_key.client_id} (tokens live {token_lifetime:g} s)"
    )
    return StartedSandbox(sandbox.url, institution.root_account_uuid, key)
