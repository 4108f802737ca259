"""Canvas's OAuth2 endpoints for an API developer key.

An admin creates the key (client id and secret); a service account authorises it once
(``canvas-assets canvas connect``: ``GET /login/oauth2/auth`` redirects back with a code, which
``POST /login/oauth2/token`` with ``grant_type=authorization_code`` exchanges for a refresh
token); from then on every process gets access tokens with ``grant_type=refresh_token``.

What Canvas does (instructure/canvas-lms, ``oauth2_provider_controller.rb``,
``lib/canvas/oauth/``): a refresh returns a new ``access_token`` (and ``expires_in``, 3600 for
keys that expire their tokens) but no new refresh token: the refresh token is reused and lives
until it is revoked. A bad refresh token gets 400 ``invalid_request`` "refresh_token not found",
a refresh token of another key 400 ``invalid_grant``, a wrong client 401 ``invalid_client``. Each
token request costs 200 units of the caller's throttle bucket, so a throttled token request is
waited out like any other.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from canvas_assets.canvas.errors import (
    CanvasAuthError,
    CanvasReconnectError,
    CanvasRequestError,
    CanvasThrottledError,
)
from canvas_assets.canvas.session import USER_AGENT, is_throttle, normalize_base_url
from canvas_assets.canvas.tokens import AccessToken, utc_now

AUTHORIZE_PATH = "/login/oauth2/auth"
TOKEN_PATH = "/login/oauth2/token"
CALLBACK_PATH = "/oauth/callback"
TRANSIENT_STATUSES = (500, 502, 503, 504)


@dataclass(frozen=True)
class KeySettings:
    """The variables that hold a developer key's credentials: named in messages, never read
    here (the values come through ``dg.EnvVar``)."""

    client_id: str = "CANVAS_CLIENT_ID"
    client_secret: str = "CANVAS_CLIENT_SECRET"
    refresh_token: str = "CANVAS_REFRESH_TOKEN"

    def reconnect(self) -> str:
        return (
            f"run `canvas-assets canvas connect` (with {self.client_id} and "
            f"{self.client_secret} set) and store the refresh token it prints in "
            f"{self.refresh_token}"
        )


@dataclass(frozen=True)
class Authorisation:
    """What the one-time authorisation-code exchange gives: the refresh token every process
    will use, and who authorised it."""

    refresh_token: str = field(repr=False)
    user_name: str
    user_id: object


class TokenEndpoint:
    """``POST /login/oauth2/token`` of one Canvas for one developer key."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        settings: KeySettings = KeySettings(),
        *,
        timeout_seconds: float = 30.0,
        max_retries: int = 5,
        max_throttle_waits: int = 12,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.settings = settings
        self._client = {"client_id": client_id, "client_secret": client_secret}
        self._timeout = timeout_seconds
        self._throttle_waits = max_throttle_waits
        # A lost answer to a refresh only means the next refresh regenerates the token again.
        self._retry = Retry(
            total=max_retries, backoff_factor=0.25, backoff_jitter=0.25, backoff_max=10,
            status_forcelist=TRANSIENT_STATUSES, allowed_methods=frozenset({"POST"}),
            raise_on_status=False,
        )  # fmt: skip

    def authorize_url(self, redirect_uri: str, state: str, scopes: tuple[str, ...]) -> str:
        """Where the authorising user goes: Canvas asks them to log in and allow the key, then
        redirects to ``redirect_uri`` with ``code`` and ``state``."""
        query = {
            "client_id": self._client["client_id"],
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "state": state,
        }
        if scopes:
            query["scope"] = " ".join(scopes)
        return f"{self.base_url}{AUTHORIZE_PATH}?{urlencode(query)}"

    def refresh(self, refresh_token: str) -> AccessToken:
        """A new access token for the authorisation (Canvas regenerates its one token)."""
        body = self._post({"grant_type": "refresh_token", "refresh_token": refresh_token})
        # Its life counts from the answer: waits for a throttled token request came before.
        return AccessToken.issued(_access_token(body), body.get("expires_in"), utc_now())

    def exchange(self, code: str, redirect_uri: str) -> Authorisation:
        """The refresh token of a new authorisation, from the code Canvas redirected with."""
        body = self._post(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        )
        refresh_token = body.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            raise CanvasRequestError(
                "Canvas's token endpoint answered without a refresh token: is the developer "
                "key an API key (not an LTI key)?"
            )
        user = body.get("user") if isinstance(body.get("user"), dict) else {}
        return Authorisation(refresh_token, str(user.get("name") or "?"), user.get("id"))

    def _post(self, form: dict[str, str]) -> dict[str, Any]:
        """POST to the token endpoint, waiting out throttling; a refusal raises a CanvasError
        that says what to fix."""
        url = f"{self.base_url}{TOKEN_PATH}"
        for attempt in range(self._throttle_waits + 1):
            try:
                response = self._send(url, {**form, **self._client})
            except requests.RequestException as exc:
                raise CanvasRequestError(
                    f"Canvas's token endpoint ({url}) did not answer after retries "
                    f"({type(exc).__name__}). Check CANVAS_BASE_URL and that Canvas is reachable."
                ) from None
            if is_throttle(response):
                time.sleep(min(20.0, 0.5 * 2**attempt) * (0.5 + random.random()))
                continue
            if response.status_code < 400:
                return _json(response)
            raise self._refusal(form["grant_type"], response)
        raise CanvasThrottledError(
            f"Canvas kept throttling its token endpoint after {self._throttle_waits} waits: "
            "something else is asking for tokens from this address."
        )

    def _send(self, url: str, form: dict[str, str]) -> requests.Response:
        # A connection of its own: tokens are asked for about once an hour.
        with requests.Session() as http:
            http.mount(url, HTTPAdapter(max_retries=self._retry))
            headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
            return http.post(url, data=form, headers=headers, timeout=self._timeout)

    def _refusal(self, grant: str, response: requests.Response) -> Exception:
        body = _json(response)
        error = str(body.get("error") or f"HTTP {response.status_code}")
        described = f"{error}: {body.get('error_description') or 'no description'}"
        names = self.settings
        if response.status_code == 401 or error == "invalid_client":
            return CanvasAuthError(
                f"Canvas does not accept the developer key in {names.client_id} and "
                f"{names.client_secret} ({described}). Copy both from Admin > Developer Keys "
                f"(the key must be On); if the key changed, {names.reconnect()}."
            )
        if grant == "refresh_token" and response.status_code == 400:
            return CanvasReconnectError(
                f"Canvas no longer accepts {names.refresh_token} ({described}): the "
                "authorisation was revoked, or was made for another developer key. To "
                f"reconnect, {names.reconnect()}."
            )
        if response.status_code < 500:
            return CanvasAuthError(
                f"Canvas refused the {grant} grant ({described}); run `canvas-assets canvas "
                "connect` again."
            )
        return CanvasRequestError(
            f"Canvas's token endpoint answered HTTP {response.status_code} after retries."
        )


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _access_token(body: dict[str, Any]) -> str:
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise CanvasRequestError("Canvas's token endpoint answered without an access token.")
    return token
