"""The Canvas instance as a Dagster resource: settings in, a client session out.

``CanvasResource`` reaches Canvas with a fixed access token (``CANVAS_API_TOKEN``). A developer
key's tokens are shared through the warehouse, which this room does not know: the resource for
them subclasses this one where both are wired together (``defs/canvas_oauth.py``) and gives its
sessions another ``token_source``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from canvas_assets.canvas.errors import CanvasAuthError
from canvas_assets.canvas.session import CanvasSession
from canvas_assets.canvas.tokens import StaticToken, TokenSource


class CanvasResource(dg.ConfigurableResource):
    """A Canvas LMS instance reached over its REST API with an access token."""

    base_url: str = Field(description="Canvas root URL, e.g. https://school.instructure.com")
    api_token: str | None = Field(
        default=None,
        description="Canvas access token (use dg.EnvVar('CANVAS_API_TOKEN')); None for a "
        "developer key (the subclass in defs/canvas_oauth.py).",
    )
    token_setting: str = Field(
        default="CANVAS_API_TOKEN",
        description="The variable holding api_token, named in messages (never its value).",
    )
    account_id: str = Field(
        default="self", description="Root account id to sync; 'self' is the token's root account."
    )
    max_concurrency: int = Field(
        default=16,
        description="Most requests in flight. The client itself keeps no more in flight "
        "than Canvas's bucket admits (11 per token with Canvas's defaults).",
    )
    rate_limit_floor: float = Field(
        default=60.0,
        description="Allowance (X-Rate-Limit-Remaining) the client keeps once every request it "
        "has in flight holds its charge: the next request's 50-unit charge plus a margin for "
        "costs still on their way.",
    )
    request_timeout_seconds: float = Field(default=30.0)
    max_retries: int = Field(default=5, description="Retries for 5xx, connection errors, timeouts.")
    max_throttle_retries: int = Field(default=12)

    def token_source(self) -> TokenSource:
        """Where each request's token comes from."""
        if not self.api_token:
            raise CanvasAuthError(f"{self.token_setting} is not set: Canvas needs a token.")
        return StaticToken(self.api_token, self.token_setting)

    def session(
        self,
        log: Any | None = None,
        *,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
        max_throttle_retries: int | None = None,
    ) -> CanvasSession:
        """A client session; the keyword overrides give a caller with a deadline (a sensor
        tick) calls that fail fast instead of the run-sized timeout and retry budget."""
        return CanvasSession(
            self.base_url,
            self.token_source(),
            self.account_id,
            max_concurrency=self.max_concurrency,
            rate_limit_floor=self.rate_limit_floor,
            timeout_seconds=(
                self.request_timeout_seconds if timeout_seconds is None else timeout_seconds
            ),
            max_retries=self.max_retries if max_retries is None else max_retries,
            max_throttle_retries=(
                self.max_throttle_retries if max_throttle_retries is None else max_throttle_retries
            ),
            log=log,
        )
