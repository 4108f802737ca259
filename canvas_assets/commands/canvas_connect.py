"""`canvas-assets canvas connect`: authorise the developer key once, by OAuth2, and print the
refresh token every process will use.

The command prints (and opens, where a browser is at hand) Canvas's ``/login/oauth2/auth``
address with a local redirect, ``http://127.0.0.1:<port>/oauth/callback`` (the key's Redirect
URI), and a random ``state``. It waits for Canvas's redirect on that address, refuses one whose
``state`` is not its own, exchanges the code and prints the refresh token once, saying where to
store it. It keeps nothing: the refresh token is shown, never written anywhere. The client id
and secret come from their variables, read through ``dg.EnvVar``.
"""

from __future__ import annotations

import secrets
import sys
import time
import webbrowser
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TextIO
from urllib.parse import parse_qs, urlsplit

import dagster as dg

from canvas_assets.canvas import CanvasError
from canvas_assets.canvas.oauth import CALLBACK_PATH, Authorisation, KeySettings, TokenEndpoint
from canvas_assets.outcomes import first_line

PAGE = "<!doctype html><title>canvas-assets</title><p>{}</p>"


@dataclass(frozen=True)
class ConnectOptions:
    base_url: str | None
    settings: KeySettings
    port: int
    open_browser: bool = True
    timeout_seconds: float = 300.0
    scopes: tuple[str, ...] = ()


@dataclass
class Callback:
    """What Canvas's redirect brought: its query, once it arrived."""

    query: dict[str, str] = field(default_factory=dict)
    arrived: bool = False


def _handler(callback: Callback, state: str) -> type[BaseHTTPRequestHandler]:
    class CallbackHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            if url.path != CALLBACK_PATH:  # a browser's favicon, say
                self._answer(404, "Not the OAuth callback.")
                return
            callback.query = {k: v[0] for k, v in parse_qs(url.query).items()}
            callback.arrived = True
            if callback.query.get("state") != state:
                self._answer(400, "This redirect is not the one canvas-assets started.")
            elif "code" in callback.query:
                self._answer(200, "Canvas is connected: return to the terminal.")
            else:
                self._answer(400, "Canvas did not authorise the key: see the terminal.")

        def _answer(self, status: int, text: str) -> None:
            body = PAGE.format(text).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """The query holds the code: never written to the terminal."""

    return CallbackHandler


def _wait(server: HTTPServer, callback: Callback, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while not callback.arrived:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        server.timeout = min(1.0, left)
        server.handle_request()
    return True


def _secret(name: str) -> str | None:
    value = dg.EnvVar(name).get_value()
    return value.strip() if value and value.strip() else None


def _endpoint(options: ConnectOptions) -> TokenEndpoint:
    names = options.settings
    if not options.base_url:
        raise CanvasError("CANVAS_BASE_URL is not set: give --base-url or set it.")
    values = {name: _secret(name) for name in (names.client_id, names.client_secret)}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise CanvasError(
            f"{' and '.join(missing)} not set: copy the developer key's client id and secret "
            "(Admin > Developer Keys) into them first."
        )
    client_id, client_secret = values[names.client_id] or "", values[names.client_secret] or ""
    return TokenEndpoint(options.base_url, client_id, client_secret, names)


def _authorise(options: ConnectOptions, endpoint: TokenEndpoint, out: TextIO) -> Authorisation:
    state = secrets.token_urlsafe(32)
    redirect_uri = f"http://127.0.0.1:{options.port}{CALLBACK_PATH}"
    callback = Callback()
    try:
        server = HTTPServer(("127.0.0.1", options.port), _handler(callback, state))
    except OSError as exc:
        raise CanvasError(
            f"Port {options.port} on 127.0.0.1 is taken ({exc.strerror}): give another with "
            "--port, and add its redirect URI to the developer key."
        ) from None
    url = endpoint.authorize_url(redirect_uri, state, options.scopes)
    print(f"Redirect URI (the developer key must list it): {redirect_uri}", file=out)
    print("Open this address, log in to Canvas as the account that will own the", file=out)
    print(f"authorisation (a service account), and authorise the key:\n\n  {url}\n", file=out)
    out.flush()
    with server:
        if options.open_browser:
            webbrowser.open(url)
        if not _wait(server, callback, options.timeout_seconds):
            raise CanvasError(
                f"No redirect from Canvas within {options.timeout_seconds:.0f} s; run the "
                "command again (--timeout gives more time)."
            )
    query = callback.query
    if query.get("state") != state:
        raise CanvasError(
            "The redirect's state is not this command's: it did not come from the authorisation "
            "started here, so nothing was exchanged. Run the command again."
        )
    if "code" not in query:
        error = query.get("error", "no code")
        fix = (
            " Add them to the developer key's scopes (Admin > Developer Keys > edit the key)."
            if error == "invalid_scope"
            else ""
        )
        raise CanvasError(
            f"Canvas did not authorise the key ({error}: "
            f"{query.get('error_description', '')}).{fix}"
        )
    return endpoint.exchange(query["code"], redirect_uri)


def run_connect(options: ConnectOptions, out: TextIO | None = None) -> int:
    """The command; 0 once the refresh token is printed, 1 when Canvas or the user refused."""
    out = out or sys.stdout
    names = options.settings
    try:
        authorisation = _authorise(options, _endpoint(options), out)
    except CanvasError as exc:
        print(f"canvas-assets canvas connect: {first_line(exc)}", file=sys.stderr)
        return 1
    print(
        f"Connected as {authorisation.user_name} (Canvas user {authorisation.user_id}).\n"
        "The refresh token, shown this once (it stays valid until the authorisation is revoked "
        "in Canvas):\n\n"
        f"  {authorisation.refresh_token}\n\n"
        f"Store it as {names.refresh_token} in the secret store the code location reads, beside "
        f"{names.client_id} and {names.client_secret} (DEPLOYMENT.md), instead of a token. "
        "Then run `canvas-assets canvas check`.",
        file=out,
    )
    return 0
