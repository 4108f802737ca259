"""The sandbox's OAuth2 behaves as Canvas's does where a client can tell (real HTTP): the
authorize redirect, both grants (client credentials in the form or as HTTP Basic), expiring
tokens, a refresh that replaces the previous token, the cost of a grant, Canvas's errors, and
scoped keys that refuse routes and drop includes."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from canvas_sandbox import DeveloperKey, SandboxServer, generate_institution
from canvas_sandbox.server import ROUTE_SCOPES

REDIRECT = "http://127.0.0.1:8765/oauth/callback"
KEY = DeveloperKey(client_secret="fidelity-secret", redirect_uris=(REDIRECT,))


@pytest.fixture(scope="module")
def inst():
    return generate_institution("small", seed=11)


@pytest.fixture
def server(inst):
    with SandboxServer(inst, token="static", developer_key=DeveloperKey(**vars(KEY))) as running:
        yield running


def _authorize(server: SandboxServer, **params: str) -> requests.Response:
    query = {"client_id": KEY.client_id, "response_type": "code", "redirect_uri": REDIRECT,
             "state": "s1", **params}  # fmt: skip
    return requests.get(
        f"{server.url}/login/oauth2/auth", params=query, allow_redirects=False, timeout=10
    )


def _code(server: SandboxServer, **params: str) -> str:
    answer = _authorize(server, **params)
    assert answer.status_code == 302, answer.text
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert answer.headers["Location"].startswith(REDIRECT) and query["state"] == ["s1"]
    return query["code"][0]


def _token(server: SandboxServer, auth=None, **form: str) -> requests.Response:
    if auth is None:
        form = {"client_id": KEY.client_id, "client_secret": KEY.client_secret, **form}
    return requests.post(f"{server.url}/login/oauth2/token", data=form, auth=auth, timeout=10)


def _get(server: SandboxServer, token: str, path: str = "/api/v1/users/self", **params):
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(f"{server.url}{path}", params=params, headers=headers, timeout=10)


def test_authorisation_code_then_refresh_as_canvas_answers_them(server) -> None:
    """Without this, a client that expected a new refresh token from each refresh, or kept
    using the previous access token after a refresh, would pass here and fail on Canvas."""
    granted = _token(server, grant_type="authorization_code", code=_code(server),
                     redirect_uri=REDIRECT)  # fmt: skip
    assert granted.status_code == 200
    body = granted.json()
    assert {"access_token", "token_type", "user", "refresh_token", "expires_in"} <= body.keys()
    assert body["expires_in"] == 3600 and body["token_type"] == "Bearer"
    assert _get(server, body["access_token"]).status_code == 200
    # Client id and secret as HTTP Basic, as Canvas also takes them.
    refreshed = _token(server, auth=(KEY.client_id, KEY.client_secret),
                       grant_type="refresh_token", refresh_token=body["refresh_token"])  # fmt: skip
    assert refreshed.status_code == 200 and "refresh_token" not in refreshed.json()
    old = _get(server, body["access_token"])
    assert old.status_code == 401 and old.headers["WWW-Authenticate"] == 'Bearer realm="canvas-lms"'
    assert old.json() == {"errors": [{"message": "Invalid access token."}]}
    assert _get(server, refreshed.json()["access_token"]).status_code == 200


@pytest.mark.parametrize(
    ("form", "auth", "status", "error"),
    [
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, None, 400,
         {"error": "invalid_request", "error_description": "refresh_token not found"}),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, (KEY.client_id, "wrong"), 401,
         {"error": "invalid_client", "error_description": "invalid client"}),
        ({"grant_type": "authorization_code", "code": "nope"}, None, 400,
         {"error": "invalid_grant", "error_description": "authorization_code not found"}),
    ],
)  # fmt: skip
def test_the_token_endpoint_refuses_as_canvas_does(server, form, auth, status, error) -> None:
    """Without this, the client's messages for a revoked refresh token or a wrong secret were
    never tried against the answers Canvas gives."""
    answer = _token(server, auth=auth, **form)
    assert answer.status_code == status and answer.json() == error


def test_authorize_refuses_an_unknown_client_or_redirect(server) -> None:
    """Without this, `canvas connect` would never meet Canvas's refusals of a wrong client id or
    an unregistered Redirect URI."""
    unknown = _authorize(server, client_id="999")
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    elsewhere = _authorize(server, redirect_uri="http://127.0.0.1:9/oauth/callback")
    assert elsewhere.status_code == 400
    assert elsewhere.json()["error_description"] == "redirect_uri does not match client settings"


def test_a_grant_costs_200_units_of_the_callers_bucket(server) -> None:
    """Without this, a client refreshing too often would never meet the throttle on Canvas's
    token endpoint."""
    code = _code(server)
    before = float(_authorize(server).headers["X-Rate-Limit-Remaining"])
    granted = _token(server, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    remaining = float(granted.headers["X-Rate-Limit-Remaining"])
    assert 195 <= before - remaining <= 205
    assert float(granted.headers["X-Request-Cost"]) >= 200


@pytest.mark.slow  # waits for a token to expire
def test_tokens_expire_after_their_lifetime(inst) -> None:
    """Without this, refreshing ahead of expiry could never be seen to matter."""
    key = DeveloperKey(redirect_uris=(REDIRECT,), token_lifetime_seconds=1)
    with SandboxServer(inst, developer_key=key) as short:
        body = _token(short, client_secret=key.client_secret, grant_type="authorization_code",
                      code=_code(short), redirect_uri=REDIRECT).json()  # fmt: skip
        assert body["expires_in"] == 1
        assert _get(short, body["access_token"]).status_code == 200
        time.sleep(1.1)
        expired = _get(short, body["access_token"])
    assert expired.status_code == 401 and "WWW-Authenticate" in expired.headers


def test_a_scoped_key_refuses_other_routes_and_drops_includes(inst) -> None:
    """Without this, the missing-scope and no-include behaviours the project must handle
    would exist only in its own assumptions."""
    every = (f"url:GET|{route}" for route in ROUTE_SCOPES.values())
    scopes = tuple(s for s in every if s != "url:GET|/api/v1/courses/:course_id/sections")
    key = DeveloperKey(redirect_uris=(REDIRECT,), scopes=scopes)
    with SandboxServer(inst, developer_key=key) as scoped:
        refused = _authorize(scoped)  # a scoped key needs scopes requested
        assert "error=invalid_scope" in refused.headers["Location"]
        code = _code(scoped, scope=" ".join(scopes))
        token = _token(scoped, client_secret=key.client_secret, grant_type="authorization_code",
                       code=code, redirect_uri=REDIRECT).json()["access_token"]  # fmt: skip
        course = next(c for c, v in inst.courses.items() if v["workflow_state"] == "available")
        sections = _get(scoped, token, f"/api/v1/courses/{course}/sections")
        dropped = _get(scoped, token, f"/api/v1/courses/{course}", **{"include[]": "term"})
        key.allow_includes = True
        kept = _get(scoped, token, f"/api/v1/courses/{course}", **{"include[]": "term"})
    assert sections.status_code == 401 and "WWW-Authenticate" not in sections.headers
    assert sections.json() == {"errors": [{"message": "Insufficient scopes on access token."}]}
    assert dropped.status_code == 200 and "term" not in dropped.json()
    assert "term" in kept.json()


def test_deleting_the_token_revokes_the_authorisation(server) -> None:
    """Without this, a revoked refresh token (the case `canvas connect` exists for) could not be
    produced the way Canvas produces it."""
    body = _token(server, grant_type="authorization_code", code=_code(server),
                  redirect_uri=REDIRECT).json()  # fmt: skip
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    deleted = requests.delete(f"{server.url}/login/oauth2/token", headers=headers, timeout=10)
    assert deleted.status_code == 200
    assert _get(server, body["access_token"]).status_code == 401
    again = _token(server, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert again.json()["error_description"] == "refresh_token not found"
