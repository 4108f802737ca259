"""Canvas's OAuth2 for an API developer key, as the sandbox serves it.

Copied from Canvas (``oauth2_provider_controller.rb``, ``lib/canvas/oauth/``,
``access_token.rb``, ``doc/api/developer_keys.md``):

* ``GET /login/oauth2/auth`` checks the client id (401 ``invalid_client``) and the redirect URI
  (400 ``invalid_request``, one of the key's Redirect URIs exactly), then, for a scoped key,
  that scopes were requested and the key holds them all (else a redirect with
  ``error=invalid_scope`` naming those it lacks). The sandbox's service account authorises at
  once (Canvas would show its login and consent pages) and redirects with ``code`` and
  ``state``.
* ``POST /login/oauth2/token`` takes the client id and secret in the form or as HTTP Basic.
  ``authorization_code`` returns ``access_token``, ``token_type``, ``user``, ``refresh_token``
  and ``expires_in``; ``refresh_token`` returns a new access token and no refresh token (the
  refresh token is reused and never expires). A refresh regenerates the authorisation's one
  access token: the previous one stops working at once. Errors: 401 ``invalid_client``
  (unknown client, wrong secret), 400 ``invalid_request`` "refresh_token not found", 400
  ``invalid_grant`` "authorization_code not found". A grant costs ``token_request_cost`` (200,
  Canvas's ``oauth_token_additional_request_cost``) in the caller's throttle bucket.
* ``DELETE /login/oauth2/token`` with an access token deletes its authorisation (a user
  logging the integration out): both of its tokens stop working.
* A token lives ``token_lifetime_seconds`` (an hour, Canvas's default); an expired, replaced or
  revoked one gets 401 "Invalid access token." with ``WWW-Authenticate``. A scoped key's token
  is refused on routes whose scope it lacks: 401 "Insufficient scopes on access token." without
  ``WWW-Authenticate``; its ``include[]`` are dropped unless the key allows include parameters.

Only the flows a sync needs are served: no PKCE, no client_credentials for API keys (Canvas gives
an API key no REST token that way), no consent page.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

SERVICE_USER = {"id": 90001, "name": "Canvas Sync Service"}
INCLUDE_PARAMS = ("include", "include[]", "includes", "includes[]")


@dataclass
class DeveloperKey:
    """An API developer key as an admin configures it (its fields can be changed at runtime,
    as an admin would: a scope removed, "Allow Include Parameters" switched off)."""

    client_id: str = "10000000000001"
    client_secret: str = "sandbox-client-secret"
    redirect_uris: tuple[str, ...] = ("http://127.0.0.1:8765/oauth/callback",)
    scopes: tuple[str, ...] | None = None  # None: an unscoped key
    allow_includes: bool = False  # only a scoped key drops includes
    token_lifetime_seconds: float = 3600.0

    @property
    def scoped(self) -> bool:
        return self.scopes is not None


@dataclass
class Authorisation:
    """One authorisation of the key: its refresh token and its one current access token."""

    refresh_token: str = field(repr=False)
    scopes: tuple[str, ...]
    access_token: str = field(default="", repr=False)
    expires_at: float = 0.0  # monotonic


@dataclass(frozen=True)
class Answer:
    """What an OAuth endpoint answers: a status, a JSON body or a redirect, and whether a token
    was granted (which costs the throttle's token request cost)."""

    status: int
    body: dict | None = None
    location: str | None = None
    granted: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, error: str, description: str) -> Answer:
    headers = {"WWW-Authenticate": "Canvas OAuth 2.0"} if status == 401 else {}
    return Answer(status, {"error": error, "error_description": description}, headers=headers)


def unknown_client() -> Answer:
    return _error(401, "invalid_client", "unknown client")


def _redirect(uri: str, **query: str) -> Answer:
    separator = "&" if "?" in uri else "?"
    return Answer(302, location=f"{uri}{separator}{urlencode(query)}")


class OAuthProvider:
    """The developer key's authorisations and tokens. ``issued`` keeps every access and refresh
    token handed out (a secrets scan looks for each); ``grants`` counts token grants."""

    def __init__(self, key: DeveloperKey, shard_id: int) -> None:
        self.key = key
        self.shard_id = shard_id
        self.grants = 0
        self.issued: list[str] = []
        self._codes: dict[str, tuple[tuple[str, ...], str]] = {}
        self._by_refresh: dict[str, Authorisation] = {}
        self._by_access: dict[str, Authorisation] = {}
        self._lock = threading.Lock()

    def _new_secret(self) -> str:
        value = f"{self.shard_id}~{secrets.token_urlsafe(48)}"  # Canvas's token shape
        self.issued.append(value)
        return value

    def authorize(self, args: dict[str, str]) -> Answer:
        key = self.key
        if args.get("client_id") != key.client_id:
            return unknown_client()
        redirect_uri = args.get("redirect_uri", "")
        if redirect_uri not in key.redirect_uris:
            return _error(400, "invalid_request", "redirect_uri does not match client settings")
        state = {"state": args["state"]} if "state" in args else {}
        requested = tuple((args.get("scope") or args.get("scopes") or "").split())
        if key.scoped:
            lacking = [s for s in requested if s not in (key.scopes or ())]
            if not requested or lacking:
                description = "A requested scope is invalid, unknown, malformed, or exceeds the "
                description += "scope granted by the resource owner. The following scopes were "
                description += f"requested, but not granted: {', '.join(lacking) or '(none)'}"
                return _redirect(
                    redirect_uri, error="invalid_scope", error_description=description, **state
                )
        if args.get("response_type") != "code":
            return _redirect(redirect_uri, error="unsupported_response_type", **state)
        code = secrets.token_hex(64)
        with self._lock:
            self._codes[code] = (requested, redirect_uri)
        return _redirect(redirect_uri, code=code, **state)

    def token(self, form: dict[str, str], authorization: str | None) -> Answer:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            decoded = base64.b64decode(authorization[6:]).decode("utf-8", "replace")
            basic_id, _, basic_secret = decoded.partition(":")
            client_id, secret = client_id or basic_id, secret or basic_secret
        if client_id != self.key.client_id:
            return unknown_client()
        if secret != self.key.client_secret:
            return _error(401, "invalid_client", "invalid client")
        grant = form.get("grant_type") or ("authorization_code" if form.get("code") else "")
        with self._lock:
            if grant == "authorization_code":
                return self._exchange(form)
            if grant == "refresh_token":
                return self._refresh(form)
        return _error(
            400, "unsupported_grant_type", "The grant_type you requested is not currently supported"
        )

    def _exchange(self, form: dict[str, str]) -> Answer:
        found = self._codes.pop(form.get("code", ""), None)
        if found is None:
            return _error(400, "invalid_grant", "authorization_code not found")
        scopes, redirect_uri = found
        if form.get("redirect_uri") and form["redirect_uri"] != redirect_uri:
            return _error(400, "invalid_request", "redirect_uri does not match client settings")
        authorisation = Authorisation(self._new_secret(), scopes)
        self._by_refresh[authorisation.refresh_token] = authorisation
        body = self._regenerate(authorisation)
        return Answer(200, {**body, "refresh_token": authorisation.refresh_token}, granted=True)

    def _refresh(self, form: dict[str, str]) -> Answer:
        if not form.get("refresh_token"):
            return _error(
                400, "invalid_request", "You must provide the refresh_token parameter when using "
                "the refresh_token grant type",
            )  # fmt: skip
        authorisation = self._by_refresh.get(form["refresh_token"])
        if authorisation is None:
            return _error(400, "invalid_request", "refresh_token not found")
        return Answer(200, self._regenerate(authorisation), granted=True)

    def _regenerate(self, authorisation: Authorisation) -> dict:
        """A new access token for the authorisation; its previous one stops working."""
        self._by_access.pop(authorisation.access_token, None)
        authorisation.access_token = self._new_secret()
        lifetime = self.key.token_lifetime_seconds
        authorisation.expires_at = time.monotonic() + lifetime
        self._by_access[authorisation.access_token] = authorisation
        self.grants += 1
        user = {**SERVICE_USER, "global_id": str(self.shard_id * 10**13 + SERVICE_USER["id"])}
        return {
            "access_token": authorisation.access_token,
            "token_type": "Bearer",
            "user": {**user, "effective_locale": "en"},
            "expires_in": round(lifetime),
        }

    def authenticate(self, token: str | None) -> Authorisation | None:
        """The authorisation whose current, unexpired access token ``token`` is."""
        with self._lock:
            found = self._by_access.get(token or "")
            if found is None or time.monotonic() >= found.expires_at:
                return None
            return found

    def allows(self, authorisation: Authorisation, scope: str | None) -> bool:
        """Whether a token of ``authorisation`` may call the route of ``scope``."""
        if not self.key.scoped:
            return True
        return scope is not None and scope in authorisation.scopes and scope in self.key.scopes

    def drops_includes(self) -> bool:
        return self.key.scoped and not self.key.allow_includes

    def revoke(self, access_token: str | None) -> Answer:
        """DELETE /login/oauth2/token: the authorisation of ``access_token`` is deleted."""
        with self._lock:
            authorisation = self._by_access.pop(access_token or "", None)
            if authorisation is None:
                return Answer(
                    400, {"message": "can't delete OAuth access token when not using an OAuth "
                          "access token"},
                )  # fmt: skip
            self._by_refresh.pop(authorisation.refresh_token, None)
        return Answer(200, {})
