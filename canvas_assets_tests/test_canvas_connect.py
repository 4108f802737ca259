"""`canvas-assets canvas connect` as an admin runs it: a separate process printing Canvas's
authorisation address, the browser's visit (here requests, following Canvas's redirect to the
local callback), the code exchanged, the refresh token printed once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from canvas_assets.canvas.oauth import TokenEndpoint
from canvas_assets.canvas.scopes import SCOPES
from canvas_devstack.processes import free_port

from .oauth import sandbox_with_key


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def keyed(institution, port):
    """A sandbox whose developer key lists the command's redirect URI."""
    uri = f"http://127.0.0.1:{port}/oauth/callback"
    server = sandbox_with_key(institution, redirect_uris=(uri,))
    yield server
    server.stop()


@contextmanager
def connecting(sandbox, port: int, *extra: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """The command running, and the authorisation address it printed."""
    key = sandbox.oauth.key
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CANVAS_")},
        "CANVAS_BASE_URL": sandbox.url,
        "CANVAS_CLIENT_ID": key.client_id,
        "CANVAS_CLIENT_SECRET": key.client_secret,
    }
    command = [sys.executable, "-m", "canvas_assets", "canvas", "connect", "--no-browser",
               "--port", str(port), "--timeout", "60", *extra]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        address = ""
        for line in process.stdout or []:
            if "/login/oauth2/auth?" in line:
                address = line.strip()
                break
        yield process, address
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_connect_prints_the_refresh_token_once_and_where_to_store_it(keyed, port) -> None:
    """Without this, an institution that forbids manual tokens could not get the refresh
    token the deployment needs, or would get it with no word on where it belongs."""
    with connecting(keyed, port) as (process, address):
        assert address.startswith(f"{keyed.url}/login/oauth2/auth?")
        page = requests.get(address, timeout=30)  # Canvas redirects the browser to the command
        assert page.status_code == 200 and "connected" in page.text
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    (refresh_token,) = [t for t in keyed.oauth.issued if t in out]  # printed, and only it
    assert out.count(refresh_token) == 1 and "CANVAS_REFRESH_TOKEN" in out
    assert keyed.oauth.key.client_secret not in out + err
    key = keyed.oauth.key
    assert TokenEndpoint(keyed.url, key.client_id, key.client_secret).refresh(refresh_token).value


def test_connect_refuses_a_redirect_that_does_not_carry_its_state(keyed, port) -> None:
    """Without this, a forged redirect (someone else's code sent to the callback) would be
    exchanged, and the deployment would read Canvas as whoever authorised that code."""
    with connecting(keyed, port) as (process, address):
        assert address
        forged = requests.get(
            f"http://127.0.0.1:{port}/oauth/callback?code=forged&state=guessed", timeout=30
        )
        out, err = process.communicate(timeout=60)
    assert forged.status_code == 400
    assert process.returncode == 1 and "state is not this command's" in err
    assert keyed.oauth.grants == 0  # nothing was exchanged


@pytest.mark.slow  # a third process of the command
def test_connect_names_the_scopes_a_scoped_key_lacks(institution, port) -> None:
    """Without this, a scoped key missing a scope failed the authorisation with a bare
    "invalid_scope", and the admin had to guess which scope to add."""
    uri = f"http://127.0.0.1:{port}/oauth/callback"
    missing = "url:GET|/api/v1/accounts/:account_id/users"
    scopes = tuple(scope for scope in SCOPES if scope != missing)
    server = sandbox_with_key(institution, redirect_uris=(uri,), scopes=scopes)
    try:
        with connecting(server, port) as (process, address):
            requests.get(address, timeout=30)
            out, err = process.communicate(timeout=60)
    finally:
        server.stop()
    assert process.returncode == 1
    assert "invalid_scope" in err and missing in err
