"""Canvas REST client: pagination, throttle-aware concurrency, retries, clear errors.

Canvas throttles with a leaky bucket per access token (high-water mark 600, 50 units charged up
front for every request it is serving, 10 units a second drained), reports what is left in
``X-Rate-Limit-Remaining`` and each request's cost in ``X-Request-Cost``, and answers a throttled
request with 403 "Rate Limit Exceeded" (newer versions: 429). The session keeps as many requests
in flight as those reports say the bucket admits (``limiter.BudgetLimiter``), lets the next page of
a chain go before fan-out work, and waits and retries a throttled request instead of failing.
Transient failures (5xx, connection errors, timeouts) are retried by urllib3 with jittered
exponential backoff.

Tokens come from a ``TokenSource`` (``canvas.tokens``): a fixed token, or a developer key's shared
token. A 401 with ``WWW-Authenticate`` (an expired or replaced token) asks the source for the
current token and retries once; a 401 without it is a scoped key refusing a route, reported with
the scope it lacks. Every ``include[]`` a request asks for must come back: Canvas filters them
away for a scoped key without "Allow Include Parameters", and an answer without them would be
stored as empty values. The token is only ever placed in the Authorization header.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import requests.auth
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from canvas_assets.canvas.errors import (
    CanvasAuthError,
    CanvasError,
    CanvasIncludesWithheldError,
    CanvasNotFoundError,
    CanvasPermissionError,
    CanvasRequestError,
    CanvasScopeError,
    CanvasThrottledError,
)
from canvas_assets.canvas.limiter import (
    CONTINUATION,
    FAN_OUT,
    BudgetLimiter,
    CanvasStats,
    Ticket,
)
from canvas_assets.canvas.scopes import endpoint_for
from canvas_assets.canvas.tokens import TokenSource

T = TypeVar("T")
R = TypeVar("R")

USER_AGENT = "canvas-assets/0.1 (+https://github.com/canvas-assets)"
RETRYABLE_STATUSES = (500, 502, 503, 504)
BODY_ERRORS = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)


def is_throttle(response: requests.Response) -> bool:
    if response.status_code == 429:
        return True
    return response.status_code == 403 and "rate limit exceeded" in response.text.lower()


def _header_float(response: requests.Response, name: str) -> float | None:
    value = response.headers.get(name)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _remaining(response: requests.Response) -> float | None:
    return _header_float(response, "X-Rate-Limit-Remaining")


def path_template(path: str) -> str:
    """``/api/v1/courses/123/sections`` → ``/courses/:id/sections``: what kind of read it was."""
    parts = path.removeprefix("/api/v1").split("/")
    return "/".join(":id" if part.isdigit() or part == "self" else part for part in parts)


def normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    if url.endswith("/api/v1"):
        url = url[: -len("/api/v1")]
    if not url.startswith(("http://", "https://")):
        raise CanvasError(
            f"CANVAS_BASE_URL must start with http:// or https:// (e.g. "
            f"https://school.instructure.com), got {base_url!r}."
        )
    return url


class _BearerToken(requests.auth.AuthBase):
    """The token in the Authorization header of one request. Given as the request's auth, it
    also spares requests a look for a ~/.netrc file on every request."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


def _includes(params: Any) -> list[str]:
    """The names a request asks for with ``include[]``."""
    pairs = params.items() if isinstance(params, dict) else (params or [])
    found: list[str] = []
    for name, value in pairs:
        if name == "include[]":
            found.extend(value if isinstance(value, list | tuple) else [value])
    return [str(value) for value in found]


def _route(display: str) -> str:
    endpoint = endpoint_for(display)
    return endpoint.route if endpoint else path_template(display)


def _check_includes(body: Any, includes: list[str], display: str) -> None:
    """Every object of the answer holds each field asked for with ``include[]``."""
    objects = [item for item in (body if isinstance(body, list) else [body]) if item]
    missing = sorted({name for item in objects for name in includes if name not in item})
    if missing:
        raise CanvasIncludesWithheldError(_route(display), missing)


class CanvasSession:
    """One run's connection pool, limiter and counters. Thread safe; use it as a context
    manager so its connections are closed."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        account_id: str,
        *,
        max_concurrency: int,
        rate_limit_floor: float,
        timeout_seconds: float,
        max_retries: int,
        max_throttle_retries: int,
        log: Any | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.account_id = str(account_id)
        self.max_concurrency = max(1, max_concurrency)
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.max_throttle_retries = max_throttle_retries
        self.stats = CanvasStats()
        self.limiter = BudgetLimiter(maximum=self.max_concurrency, reserve=rate_limit_floor)
        self._log = log
        self._tokens = tokens
        self._http = requests.Session()
        retry = Retry(
            total=max_retries,
            connect=max_retries,
            read=max_retries,
            status=max_retries,
            backoff_factor=0.25,
            backoff_jitter=0.25,
            backoff_max=10,
            status_forcelist=RETRYABLE_STATUSES,
            allowed_methods=frozenset({"GET"}),
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(
            max_retries=retry, pool_connections=4, pool_maxsize=self.max_concurrency + 8
        )
        self._http.mount("http://", adapter)
        self._http.mount("https://", adapter)
        self._http.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})

    # -- low level ---------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            # The session sends the token with every request: never to another origin.
            origin = "://".join(urlsplit(path)[:2]).lower()
            if origin != "://".join(urlsplit(self.base_url)[:2]).lower():
                raise CanvasError(
                    f"Canvas returned a link to {origin}, which is not CANVAS_BASE_URL "
                    f"({self.base_url}); refusing to send the token there. Set CANVAS_BASE_URL "
                    "to the address Canvas uses in its own links."
                )
            return path
        return f"{self.base_url}/api/v1/{path.lstrip('/')}"

    def _get(self, url: str, params: Any, token: str) -> requests.Response:
        """A GET, again when the answer broke off mid-body (a reset, a cut connection): urllib3
        retries only failures before the body starts."""
        auth = _BearerToken(token)
        for attempt in range(self.max_retries + 1):
            try:
                return self._http.get(url, params=params, timeout=self.timeout_seconds, auth=auth)
            except BODY_ERRORS:
                if attempt == self.max_retries:
                    raise
                self.stats.add(retries=1)
                time.sleep(min(10.0, 0.25 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _send(
        self, url: str, params: Any, display: str, priority: int, held: Ticket | None, keep: bool
    ) -> tuple[requests.Response, str, Ticket | None]:
        """One GET (urllib3 retrying transient failures) holding a slot of the limiter (``held``
        if a previous page passed one on); returns the answer, the token it was sent with, and,
        if ``keep`` and the answer links a next page, the slot kept for that page
        (``BudgetLimiter.pass_on``)."""
        ticket: Ticket = held or self.limiter.acquire(priority)
        try:
            # Taken once the request may go: a token taken earlier could be replaced (by a
            # refresh, here or in another process) while the request waits for its slot.
            token = self._tokens.current()
            self.limiter.sending(ticket)
            response = self._get(url, params, token)
        except requests.RequestException as exc:
            self.limiter.release(ticket, None)
            raise CanvasRequestError(
                f"Canvas did not answer GET {display} after retries "
                f"({type(exc).__name__}). Check CANVAS_BASE_URL and that Canvas is reachable."
            ) from None
        except BaseException:  # no token (Canvas refused the refresh, the store is down)
            self.limiter.release(ticket, None)
            raise
        throttled, remaining = is_throttle(response), _remaining(response)
        cost = _header_float(response, "X-Request-Cost")
        kept = None
        if keep and response.ok and remaining is not None and "next" in response.links:
            self.limiter.pass_on(ticket, remaining, cost or 0.0)
            kept = ticket
        else:
            self.limiter.release(ticket, remaining, cost, throttled=throttled)
        if cost is not None and not throttled:
            self.stats.add(cost=cost)
        return response, token, kept

    def _path(self, url: str) -> str:
        """``/api/v1/...`` of a URL of this Canvas, without its query."""
        return url.split("?", 1)[0].replace(self.base_url, "")

    def _request(
        self,
        url: str,
        params: Any = None,
        priority: int = FAN_OUT,
        held: Ticket | None = None,
        keep: bool = False,
    ) -> tuple[requests.Response, Ticket | None]:
        """GET with throttle handling and one retry after a rejected token; returns a 2xx
        response (or raises a CanvasError) and, if ``keep`` and the answer links a next page,
        the slot kept for it."""
        display = self._path(url)
        retried_token = False
        for attempt in range(self.max_throttle_retries + 1):
            response, token, kept = self._send(url, params, display, priority, held, keep)
            held = None
            remaining = _remaining(response)
            throttled = is_throttle(response)
            history = getattr(getattr(response.raw, "retries", None), "history", ()) or ()
            self.stats.add(requests=1 + len(history), retries=len(history))
            self.stats.count_path(path_template(display), 1 + len(history))
            if remaining is not None:
                self.stats.saw_remaining(remaining)
            if throttled:
                wait = min(20.0, 0.5 * 2**attempt) * (0.5 + random.random())
                self.stats.add(throttle_waits=1)
                if self._log is not None:
                    self._log.info(f"Canvas throttled GET {display}; waiting {wait:.1f}s")
                time.sleep(wait)
                continue
            # Canvas marks an expired or replaced token with WWW-Authenticate.
            rejected = response.status_code == 401 and "WWW-Authenticate" in response.headers
            if rejected and not retried_token and self._tokens.replace(token):
                retried_token = True
                continue
            self._raise_for_status(response, display)
            return response, kept
        raise CanvasThrottledError(
            f"Canvas kept throttling GET {display} after {self.max_throttle_retries} waits. "
            "Another client may be using the same token; lower CANVAS_MAX_CONCURRENCY."
        )

    def _raise_for_status(self, response: requests.Response, display: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 401 and "WWW-Authenticate" in response.headers:
            raise CanvasAuthError(self._tokens.rejection)
        if status == 401 and "insufficient scopes" in response.text.lower():
            scope = f"url:GET|{_route(display)}"
            raise CanvasScopeError(
                f"Canvas refused GET {display}: the developer key lacks the scope {scope} (HTTP "
                "401 Insufficient scopes on access token). Add it to the key's scopes (Admin > "
                "Developer Keys > edit the key); `canvas-assets canvas check` lists any other "
                "scope missing."
            )
        if status in (401, 403):
            raise CanvasPermissionError(
                f"Canvas refused GET {display} (HTTP {status}): {self._tokens.who} needs "
                "account-admin read access to courses, sections, enrollments and users."
            )
        if status == 404:
            if display.startswith(f"/api/v1/accounts/{self.account_id}"):
                raise CanvasNotFoundError(
                    f"Canvas has no account {self.account_id!r} (HTTP 404 on {display}). "
                    "Check CANVAS_ACCOUNT_ID (use 'self' for the token's root account)."
                )
            raise CanvasNotFoundError(f"Canvas has no object at {display} (HTTP 404).")
        raise CanvasRequestError(f"Canvas answered GET {display} with HTTP {status} after retries.")

    # -- API -----------------------------------------------------------------------------------
    def get(self, path: str, params: Any = None, *, priority: int = FAN_OUT) -> Any:
        url = self._url(path)
        response, _ = self._request(url, params, priority)
        self.stats.add(pages=1)
        body = response.json()
        includes = _includes(params)
        if includes:
            _check_includes(body, includes, self._path(url))
        return body

    def pages(
        self,
        path: str,
        params: Any = None,
        *,
        key: str | None = None,
        priority: int = FAN_OUT,
    ) -> Iterator[list[dict]]:
        """Yield each page of a paginated list as it arrives, following ``Link: rel="next"`` as
        opaque URLs. Pages after the first wait for room at ``CONTINUATION`` priority or better,
        ahead of fan-out work: the rest of the list waits on each of them."""
        query = list(params.items() if isinstance(params, dict) else (params or []))
        if not any(name == "per_page" for name, _ in query):
            query.append(("per_page", 100))
        url: str | None = self._url(path)
        request_params: Any = query
        includes = _includes(query)
        held: Ticket | None = None  # the slot kept for the next page
        try:
            while url:
                response, held = self._request(url, request_params, priority, held, keep=True)
                self.stats.add(pages=1)
                body = response.json()
                items = body[key] if key is not None else body
                if includes:
                    _check_includes(items, includes, self._path(url))
                yield items
                next_url = response.links.get("next", {}).get("url")
                url = self._url(next_url) if next_url else None
                request_params = None  # the next URL already carries every parameter
                priority = min(priority, CONTINUATION)
        finally:
            if held is not None:  # the list was left before its end (or failed): free the slot
                self.limiter.release(held, None)

    def paginate(
        self, path: str, params: Any = None, *, key: str | None = None, priority: int = FAN_OUT
    ) -> Iterator[dict]:
        """Yield every item of a paginated list (see ``pages``)."""
        for page in self.pages(path, params, key=key, priority=priority):
            yield from page

    def account_path(self, suffix: str = "") -> str:
        return f"/accounts/{self.account_id}{suffix}"

    def map_concurrent(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """Run ``fn`` over ``items`` on a thread pool; the limiter caps requests in flight."""
        work = list(items)
        if not work:
            return []
        with ThreadPoolExecutor(
            max_workers=min(self.max_concurrency, len(work)), thread_name_prefix="canvas"
        ) as pool:
            return list(pool.map(fn, work))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CanvasSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
