"""Developer keys in tests: a sandbox serving one, its one-time authorisation done over HTTP as
`canvas-assets canvas connect` does it, and the Canvas resource a deployment configured with the
key builds."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlsplit

import requests
from psycopg import sql
from psycopg.rows import dict_row

from canvas_assets.canvas.oauth import TokenEndpoint
from canvas_assets.canvas.scopes import SCOPES
from canvas_assets.defs.canvas_oauth import OAuthCanvasResource
from canvas_assets.live_events.land import Destinations, land_messages
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.identifiers import qualified_table
from canvas_sandbox import DeveloperKey, SandboxServer

REDIRECT_URI = "http://127.0.0.1:8765/oauth/callback"


def developer_key(**fields: object) -> DeveloperKey:
    """A key with a secret of its own per test (a secrets scan looks for it)."""
    return DeveloperKey(client_secret=f"secret-{uuid.uuid4().hex}", **fields)  # type: ignore[arg-type]


def authorise(sandbox: SandboxServer, scopes: tuple[str, ...] = SCOPES) -> str:
    """The refresh token of a new authorisation: the authorize redirect, then the code
    exchange, both over HTTP."""
    key = sandbox.oauth.key
    endpoint = TokenEndpoint(sandbox.url, key.client_id, key.client_secret)
    url = endpoint.authorize_url(REDIRECT_URI, "test-state", scopes)
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["state"] == ["test-state"] and "code" in query, query
    return endpoint.exchange(query["code"][0], REDIRECT_URI).refresh_token


def oauth_canvas(
    sandbox: SandboxServer, warehouse: WarehouseResource, refresh_token: str, **fields: object
) -> OAuthCanvasResource:
    key = sandbox.oauth.key
    return OAuthCanvasResource(
        base_url=sandbox.url,
        client_id=key.client_id,
        client_secret=key.client_secret,
        refresh_token=refresh_token,
        warehouse=warehouse,
        **fields,  # type: ignore[arg-type]
    )


def developer_key_env(sandbox: SandboxServer, refresh_token: str) -> dict[str, str]:
    """The settings of a deployment configured only with the key and its refresh token."""
    key = sandbox.oauth.key
    return {
        "CANVAS_BASE_URL": sandbox.url,
        "CANVAS_CLIENT_ID": key.client_id,
        "CANVAS_CLIENT_SECRET": key.client_secret,
        "CANVAS_REFRESH_TOKEN": refresh_token,
    }


def sandbox_with_key(institution, **key_fields: object) -> SandboxServer:
    """A sandbox serving a developer key. Tests whose tokens live a second ask for one about
    every second; at Canvas's default of 200 units a grant that would throttle the token
    endpoint itself (waited out, but slowly), so they lower Canvas's
    oauth_token_additional_request_cost setting, as an instance may."""
    short = float(key_fields.get("token_lifetime_seconds", 3600)) < 60  # type: ignore[arg-type]
    return SandboxServer(
        institution,
        token="not-this-one",
        developer_key=developer_key(**key_fields),
        token_request_cost=20.0 if short else 200.0,
    ).start()


def rotate_outside(sandbox: SandboxServer, refresh_token: str) -> str:
    """A refresh by a process that does not share the token (a misconfigured copy, a script):
    Canvas regenerates the authorisation's token, so the one the warehouse holds stops working
    while it is not due for a refresh."""
    key = sandbox.oauth.key
    return TokenEndpoint(sandbox.url, key.client_id, key.client_secret).refresh(refresh_token).value


def revoke(sandbox: SandboxServer, access_token: str) -> None:
    """The authorisation deleted in Canvas (DELETE /login/oauth2/token with one of its tokens)."""
    answer = requests.delete(
        f"{sandbox.url}/login/oauth2/token",
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def land_event(warehouse: WarehouseResource, event: dict) -> None:
    """One Canvas-format Live Event landed as the sensor lands it."""
    with warehouse.connect() as conn:
        result = land_messages(
            conn, Destinations.one_institution(warehouse.table_schema()),
            [(f"m-{uuid.uuid4().hex}", json.dumps(event))],
        )  # fmt: skip
    assert result.landed == 1


def card(warehouse: WarehouseResource, semester: str) -> dict:
    """The semester's row of the Imported Semesters card."""
    with warehouse.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        query = sql.SQL("SELECT status, last_error FROM {} WHERE semester = %s").format(
            qualified_table(warehouse.table_schema(), "semester_sync_status")
        )
        return cur.execute(query, (semester,)).fetchone() or {}


class AlwaysRejected:
    """A token source whose every token Canvas rejects, counting the replacements asked for:
    how a session treats a rejection, whatever the source behind it."""

    rejection = "rejected for the test"
    who = "the test"

    def __init__(self) -> None:
        self.replacements = 0

    def current(self) -> str:
        return f"unknown-{self.replacements}"

    def replace(self, rejected: str) -> bool:
        self.replacements += 1
        return True
