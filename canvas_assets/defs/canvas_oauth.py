"""Canvas through a developer key (OAuth2): the resource whose sessions take the institution's
shared access token, kept in its warehouse schema.

The two halves live in rooms that never import each other: ``canvas/`` knows how to refresh a
token and when (``canvas.tokens.SharedToken``, ``canvas.oauth.TokenEndpoint``), ``warehouse/``
how to keep one row under a lock (``warehouse.tokens``); this module joins them. The client
secret and refresh token reach the resource as ``dg.EnvVar`` and the access token lives only in
that row (readable by the code location's role alone) and in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from pydantic import Field

from canvas_assets.canvas import CanvasResource
from canvas_assets.canvas.oauth import KeySettings, TokenEndpoint
from canvas_assets.canvas.tokens import AccessToken, SharedToken, TokenSource
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.tokens import StoredToken, read_token, token_lock, write_token


def authorisation_digest(client_id: str, refresh_token: str) -> str:
    """Which authorisation a stored token belongs to, without storing its secrets: after a
    reconnect (a new refresh token) the old authorisation's token is not used."""
    return hashlib.sha256(f"{client_id}\n{refresh_token}".encode()).hexdigest()


class WarehouseTokenStore:
    """``canvas.tokens.TokenStore`` on the institution's ``canvas_access_token`` row."""

    def __init__(self, warehouse: WarehouseResource, authorisation: str) -> None:
        self._warehouse = warehouse
        self._authorisation = authorisation

    def _mine(self, row: StoredToken | None) -> AccessToken | None:
        if row is None or row.authorisation != self._authorisation:
            return None
        return AccessToken(row.access_token, row.expires_at, row.refresh_at)

    def read(self) -> AccessToken | None:
        with self._warehouse.connect() as conn:
            return self._mine(read_token(conn, self._warehouse.table_schema()))

    def update(self, decide: Callable[[AccessToken | None], AccessToken | None]) -> AccessToken:
        schema = self._warehouse.table_schema()
        with self._warehouse.connect() as conn, token_lock(conn, schema):
            stored = self._mine(read_token(conn, schema))
            issued = decide(stored)
            if issued is None:
                assert stored is not None  # decide keeps only a stored token
                return stored
            row = StoredToken(
                self._authorisation, issued.value, issued.expires_at, issued.refresh_at
            )
            write_token(conn, schema, row)
            return issued


class OAuthCanvasResource(CanvasResource):
    """Canvas reached with a developer key's access tokens, shared by every process of the
    institution through its warehouse schema and refreshed with the refresh grant."""

    client_id: str = Field(description="Developer key client id (dg.EnvVar('CANVAS_CLIENT_ID')).")
    client_secret: str = Field(
        description="Developer key client secret (dg.EnvVar('CANVAS_CLIENT_SECRET'))."
    )
    refresh_token: str = Field(
        description="Refresh token of the key's authorisation (dg.EnvVar('CANVAS_REFRESH_TOKEN'))."
    )
    key_settings: list[str] = Field(
        default=["CANVAS_CLIENT_ID", "CANVAS_CLIENT_SECRET", "CANVAS_REFRESH_TOKEN"],
        description="The variables of client id, client secret and refresh token, named in "
        "messages (never their values).",
    )
    warehouse: WarehouseResource = Field(
        description="The institution's warehouse schema, which keeps the shared access token."
    )

    def token_source(self) -> TokenSource:
        names = KeySettings(*self.key_settings)
        endpoint = TokenEndpoint(
            self.base_url,
            self.client_id,
            self.client_secret,
            names,
            timeout_seconds=self.request_timeout_seconds,
            max_retries=self.max_retries,
            max_throttle_waits=self.max_throttle_retries,
        )
        store = WarehouseTokenStore(
            self.warehouse, authorisation_digest(self.client_id, self.refresh_token)
        )
        return SharedToken(
            store,
            lambda: endpoint.refresh(self.refresh_token),
            rejection=(
                "Canvas rejected a freshly refreshed access token (HTTP 401). Check that the "
                f"developer key of {names.client_id} is On and enabled for this account, and "
                "that the user who authorised it is active; else, to reconnect, "
                f"{names.reconnect()}."
            ),
            who=f"the user who authorised the developer key of {names.client_id}",
        )
