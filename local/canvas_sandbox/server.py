"""The sandbox's Canvas REST API over real HTTP (werkzeug), with Canvas's paging and throttling.

Only the read endpoints a term sync needs are served. Behaviour copied from Canvas: ``Link``
paging (no ``rel="last"`` on account course/user lists), the 403 throttle text, JSON error
bodies, local ids in JSON while paths accept global ids, default state filters, and the account
user list's ``sort``/``order``.

For measurements, four switches make it answer like a Canvas under load, far away:
``latency_seconds`` (the time Canvas takes to answer any request, beyond the CPU + DB time it
charges: Rails, caches, its own network; spent inside the throttle's bucket, so it holds the
request's up-front charge, as in Canvas), ``server_time`` (a request also takes its cost in
seconds, as Canvas's cost is the CPU + DB time it spent), ``network_latency_seconds`` (a round
trip between the client and Canvas, spent outside the bucket: half before the request reaches
Canvas, half after it leaves) and ``cache_pages`` (each rendered page is kept until the
institution changes, so serving stays cheap and the sandbox is not what a benchmark measures;
only for institutions changed through ``Institution.stamp``).
``GET /_sandbox/stats`` (outside Canvas's ``/api/v1``) reports the sandbox's own counters and CPU
time; ``POST /_sandbox/outage?seconds=60`` takes Canvas down for that long (every API request
answered 503), to see alerts and recoveries with ``canvas-assets dev --alerts``.

Authentication: the fixed ``token`` (a manually generated access token), and, with a
``developer_key``, Canvas's OAuth2 endpoints and the tokens they issue (``oauth.py``): tokens that
expire, a refresh that replaces the previous token, and a scoped-key mode that refuses routes
outside the key's scopes and drops ``include[]``. Each route's scope is in ``ROUTE_SCOPES``.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import cheroot.wsgi
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from .faults import Faults, cut_halfway, reset_connection
from .institution import GLOBAL_ID_BASE, Institution, generate_institution
from .model import term_shape
from .oauth import (
    INCLUDE_PARAMS,
    SERVICE_USER,
    Authorisation,
    DeveloperKey,
    OAuthProvider,
    unknown_client,
)
from .throttle import BASE_COST, Throttle, cost_of, fmt

JSON_TYPE = "application/json; charset=utf-8"
THROTTLED_BODY = "403 Forbidden (Rate Limit Exceeded)"
NOT_FOUND = "The specified resource does not exist."
DEFAULT_COURSE_STATES = {"created", "claimed", "available", "completed"}
COURSE_STATES = DEFAULT_COURSE_STATES | {"deleted"}
# Canvas's enrollment ``state[]`` vocabulary mapped onto the stored enrollment_state values.
ENROLLMENT_STATE_FILTERS: dict[str, set[str]] = {
    "active": {"active"},
    "invited": {"invited"},
    "creation_pending": {"creation_pending"},
    "deleted": {"deleted"},
    "rejected": {"rejected"},
    "completed": {"completed"},
    "inactive": {"inactive"},
    "current_and_invited": {"active", "invited"},
    "current_and_future": {"active", "invited", "creation_pending"},
    "current_future_and_restricted": {"active", "invited", "creation_pending", "inactive"},
}
COUNTED_STUDENT_STATES = {"active", "invited"}  # what Canvas's total_students counts
USER_STUB_FIELDS = (
    "id",
    "name",
    "created_at",
    "sortable_name",
    "short_name",
    "sis_user_id",
    "integration_id",
    "login_id",
)
USER_FIELDS = (*USER_STUB_FIELDS[:5], "first_name", "last_name", *USER_STUB_FIELDS[5:])
TERM_FIELDS = ("id", "name", "start_at", "end_at", "created_at", "workflow_state", "sis_term_id")
STATS_PATH = "/_sandbox/stats"
OUTAGE_PATH = "/_sandbox/outage"
KEEP_ALIVE_THREADS = 128  # requests served at once: more than any client keeps in flight
SHUTDOWN_POLL_SECONDS = 0.05
# Which object a route's items are, for the cost model (throttle.ITEM_COSTS).
COST_KINDS = {
    "/accounts/<aid>/courses": "courses",
    "/courses/<cid>": "courses",
    "/courses/<cid>/sections": "sections",
    "/courses/<cid>/sections/<sid>": "sections",
    "/sections/<sid>": "sections",
    "/courses/<cid>/enrollments": "enrollments",
    "/sections/<sid>/enrollments": "enrollments",
    "/accounts/<aid>/enrollments/<eid>": "enrollments",
    "/accounts/<aid>/users": "users",
    "/users/<uid>": "users",
}
# Each route's scope, as Canvas's routes name it: a scoped developer key's tokens are refused on
# a route whose scope the key (and the token) lacks.
ROUTE_SCOPES = {
    "/accounts/<aid>": "/api/v1/accounts/:id",
    "/accounts/<aid>/sub_accounts": "/api/v1/accounts/:account_id/sub_accounts",
    "/accounts/<aid>/terms": "/api/v1/accounts/:account_id/terms",
    "/accounts/<aid>/courses": "/api/v1/accounts/:account_id/courses",
    "/accounts/<aid>/users": "/api/v1/accounts/:account_id/users",
    "/accounts/<aid>/enrollments/<eid>": "/api/v1/accounts/:account_id/enrollments/:id",
    "/courses/<cid>": "/api/v1/courses/:id",
    "/courses/<cid>/sections": "/api/v1/courses/:course_id/sections",
    "/courses/<cid>/sections/<sid>": "/api/v1/courses/:course_id/sections/:id",
    "/courses/<cid>/enrollments": "/api/v1/courses/:course_id/enrollments",
    "/sections/<sid>": "/api/v1/sections/:id",
    "/sections/<sid>/enrollments": "/api/v1/sections/:section_id/enrollments",
    "/users/<uid>": "/api/v1/users/:id",
}
OAUTH_AUTHORIZE = "/login/oauth2/auth"
OAUTH_TOKEN = "/login/oauth2/token"
# Canvas's oauth_token_additional_request_cost: what a token grant adds to the caller's bucket.
TOKEN_REQUEST_COST = 200.0
INSUFFICIENT_SCOPES = "Insufficient scopes on access token."
# The account user list's sort keys (Canvas: users_controller#api_index); "username" is
# sortable_name, Canvas's default.
USER_SORTS: dict[str, Callable[[dict], Any]] = {
    "username": lambda u: (u["sortable_name"].casefold(), u["id"]),
    "id": lambda u: u["id"],
    "email": lambda u: ((u.get("email") or "").casefold(), u["id"]),
    "sis_id": lambda u: (u.get("sis_user_id") or "", u["id"]),
}


class _ApiError(Exception):
    def __init__(self, status: int, message: str = NOT_FOUND) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _KeepAliveServer(cheroot.wsgi.Server):
    """A threaded server that keeps connections open between requests, as Canvas does.

    werkzeug's development server closes every connection, so each request costs a new
    connection and a new thread on both sides: too much for a benchmark at hundreds of requests
    a second on a small machine. The fault injections that reset connections need werkzeug's
    socket, so tests keep werkzeug (``keep_alive=False``)."""

    def __init__(self, bind_addr: tuple[str, int], app: Callable) -> None:
        super().__init__(bind_addr, app, numthreads=KEEP_ALIVE_THREADS, timeout=60)

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        """A client going away mid-request is normal here; nothing else is logged either."""


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Per-request access logs would drown test output."""


Result = tuple[Any, int, dict[str, str]]  # body, items counted for cost, extra headers


class _Encoded(bytes):
    """A response body already rendered to JSON (a cached page)."""


class SandboxStats:
    """What the sandbox served, for benchmarks: admitted and throttled requests, the summed
    cost it charged, its own CPU time, and when the current window's first request arrived and
    its last answer left (wall clock; ``POST /_sandbox/stats`` opens a new window)."""

    def __init__(self) -> None:
        self.admitted = 0
        self.throttled = 0
        self.cost = 0.0
        self.first_request_at: float | None = None
        self.last_answer_at: float | None = None
        self._lock = threading.Lock()

    def arrived(self) -> None:
        with self._lock:
            if self.first_request_at is None:
                self.first_request_at = time.time()

    def add(self, admitted: int = 0, throttled: int = 0, cost: float = 0.0) -> None:
        with self._lock:
            self.admitted += admitted
            self.throttled += throttled
            self.cost += cost
            self.last_answer_at = time.time()

    def new_window(self) -> None:
        with self._lock:
            self.first_request_at = self.last_answer_at = None

    def as_dict(self) -> dict[str, float | None]:
        with self._lock:
            return {
                "admitted": self.admitted,
                "throttled": self.throttled,
                "cost": round(self.cost, 3),
                "cpu_seconds": round(time.process_time(), 3),
                "first_request_at": self.first_request_at,
                "last_answer_at": self.last_answer_at,
            }


class SandboxServer:
    def __init__(
        self,
        institution: Institution,
        token: str = "sandbox-token",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        seed: int = 0,
        latency_seconds: float = 0.0,
        server_time: bool = False,
        network_latency_seconds: float = 0.0,
        cache_pages: bool = False,
        keep_alive: bool = False,
        developer_key: DeveloperKey | None = None,
        token_request_cost: float = TOKEN_REQUEST_COST,
    ) -> None:
        self.institution = institution
        self.token = token
        self.oauth = OAuthProvider(developer_key, institution.shard_id) if developer_key else None
        self.token_request_cost = token_request_cost
        self.host, self.port = host, port
        self.faults = faults or Faults()
        self.throttle = Throttle()
        self.latency_seconds = latency_seconds
        self.server_time = server_time
        self.network_latency_seconds = network_latency_seconds
        self.keep_alive = keep_alive
        self.stats = SandboxStats()
        self._pages: dict[tuple, tuple[int, Result]] = {}
        self.url = ""
        self.request_count = 0
        self.request_log: list[tuple[str, str, int]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | _KeepAliveServer | None = None
        self._thread: threading.Thread | None = None
        self._users_cache: dict[tuple[str, bool], tuple[int, list[dict]]] = {}
        rules = {
            "/accounts/<aid>": self._account,
            "/accounts/<aid>/sub_accounts": self._sub_accounts,
            "/accounts/<aid>/terms": self._terms,
            "/accounts/<aid>/courses": self._courses,
            "/accounts/<aid>/users": self._users,
            "/accounts/<aid>/enrollments/<eid>": self._enrollment,
            "/courses/<cid>": self._course,
            "/courses/<cid>/sections": self._course_sections,
            "/courses/<cid>/sections/<sid>": self._section,
            "/courses/<cid>/enrollments": self._enrollments,
            "/sections/<sid>": self._section,
            "/sections/<sid>/enrollments": self._enrollments,
            "/users/<uid>": self._user,
        }
        self._handlers: dict[str, Callable[..., Result]] = {}
        self._map = Map(strict_slashes=False)
        for path, handler in rules.items():
            self._map.add(Rule(f"/api/v1{path}", endpoint=path, methods=["GET"]))
            self._handlers[path] = self._cached(path, handler) if cache_pages else handler

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        if self.keep_alive:
            self._server = _KeepAliveServer((self.host, self.port), self.wsgi)
            self._server.prepare()
            self.port = self._server.bind_addr[1]
            serve = self._server.serve
        else:
            self._server = make_server(
                self.host, self.port, self.wsgi, threaded=True, request_handler=_QuietHandler
            )
            self.port = self._server.server_port
            server = self._server
            # stop() waits for the serving loop to look for a shutdown: every half second by
            # default, which a test suite starting a sandbox per test paid at each stop.
            serve = lambda: server.serve_forever(poll_interval=SHUTDOWN_POLL_SECONDS)  # noqa: E731
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=serve, daemon=True, name=f"canvas-sandbox-{self.port}"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if isinstance(self._server, _KeepAliveServer):
            self._server.stop()
        elif self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request pipeline --------------------------------------------------------------------

    def wsgi(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        response = self._handle(request)
        query = request.query_string.decode()
        with self._lock:
            self.request_count += 1
            self.request_log.append(
                (
                    request.method,
                    request.path + (f"?{query}" if query else ""),
                    response.status_code,
                )
            )
            if len(self.request_log) > 10_000:
                del self.request_log[0]
        if getattr(response, "cut_halfway", False):  # an injected page that breaks off
            return cut_halfway(response, environ, start_response)
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if request.path == STATS_PATH:
            if request.method == "POST":
                self.stats.new_window()
            grants = {"token_grants": self.oauth.grants} if self.oauth else {}
            return _json({**self.stats.as_dict(), **grants}, 200, {})
        if request.path == OUTAGE_PATH and request.method == "POST":
            seconds = float(request.args.get("seconds", "60"))
            with self._lock:
                self.faults.outage(seconds)
            return _json({"outage_seconds": seconds}, 200, {})
        self.stats.arrived()
        if self.network_latency_seconds:  # the request travelling to Canvas
            time.sleep(self.network_latency_seconds / 2)
        response = self._handle_in_canvas(request)
        if self.network_latency_seconds:  # and the response travelling back
            time.sleep(self.network_latency_seconds / 2)
        return response

    def _handle_in_canvas(self, request: Request) -> Response:
        headers = {"X-Request-Context-Id": str(uuid.uuid4()), "X-Request-Cost": fmt(0)}
        if request.path in (OAUTH_AUTHORIZE, OAUTH_TOKEN):
            return self._oauth_request(request, headers)
        auth = request.headers.get("Authorization")
        token = auth[len("Bearer ") :] if auth and auth.startswith("Bearer ") else None
        granted = self.oauth.authenticate(token) if self.oauth else None
        if token is None or (token != self.token and granted is None):
            message = "user authorization required" if not auth else "Invalid access token."
            headers["WWW-Authenticate"] = 'Bearer realm="canvas-lms"'
            # Unauthenticated callers are throttled by address in Canvas; report that bucket.
            remote = self.throttle.bucket(f"ip:{request.remote_addr}").remaining()
            headers["X-Rate-Limit-Remaining"] = fmt(remote)
            return _json({"errors": [{"message": message}]}, 401, headers)
        bucket = self.throttle.bucket(token)  # Canvas keeps a bucket per access token
        if self.faults.throttle_storm or not bucket.reserve():
            remaining = 0.0 if self.faults.throttle_storm else bucket.remaining()
            headers["X-Rate-Limit-Remaining"] = fmt(remaining)
            self.stats.add(throttled=1)
            return Response(THROTTLED_BODY, 403, headers, content_type="text/plain; charset=utf-8")
        items = 0
        started = time.perf_counter()
        try:
            response, items = self._admitted(request, headers, granted)
        finally:
            cost = cost_of(self._cost_kind(request), items)
            # What Canvas spends answering: its own latency plus the CPU + DB time it charges.
            busy = self.latency_seconds + (cost if self.server_time else 0.0)
            time.sleep(max(0.0, busy - (time.perf_counter() - started)))
            headers["X-Request-Cost"] = fmt(cost)
            headers["X-Rate-Limit-Remaining"] = fmt(bucket.release(cost))
            self.stats.add(admitted=1, cost=cost)
        response.headers.update(headers)
        return response

    def _oauth_request(self, request: Request, headers: dict[str, str]) -> Response:
        """The authorize redirect or a token request, charged to the caller's address (a token
        request carries no access token): a grant costs ``token_request_cost`` more."""
        bucket = self.throttle.bucket(f"ip:{request.remote_addr}")
        if not bucket.reserve():
            headers["X-Rate-Limit-Remaining"] = fmt(bucket.remaining())
            self.stats.add(throttled=1)
            return Response(THROTTLED_BODY, 403, headers, content_type="text/plain; charset=utf-8")
        answer = None
        try:
            if self.oauth is None:  # no developer key: every client id is unknown
                answer = unknown_client()
            elif request.path == OAUTH_AUTHORIZE and request.method == "GET":
                answer = self.oauth.authorize(request.args.to_dict())
            elif request.path == OAUTH_TOKEN and request.method == "POST":
                answer = self.oauth.token(
                    request.form.to_dict(), request.headers.get("Authorization")
                )
            elif request.path == OAUTH_TOKEN and request.method == "DELETE":
                bearer = request.headers.get("Authorization", "")
                answer = self.oauth.revoke(bearer.removeprefix("Bearer ") or None)
        finally:
            granted = answer is not None and answer.granted
            cost = BASE_COST + (self.token_request_cost if granted else 0.0)
            headers["X-Request-Cost"] = fmt(cost)
            headers["X-Rate-Limit-Remaining"] = fmt(bucket.release(cost))
            self.stats.add(admitted=1, cost=cost)
        if answer is None:
            return _json({"errors": [{"message": NOT_FOUND}]}, 404, headers)
        headers.update(answer.headers)
        if answer.location is not None:
            return Response("", answer.status, {**headers, "Location": answer.location})
        return _json(answer.body, answer.status, headers)

    def _cost_kind(self, request: Request) -> str | None:
        try:
            endpoint, _ = self._map.bind_to_environ(request.environ).match()
        except HTTPException:
            return None
        return COST_KINDS.get(endpoint)

    def _cached(self, endpoint: str, handler: Callable[..., Result]) -> Callable[..., Result]:
        """``handler`` with each rendered page kept until the institution's version changes."""

        def cached(request: Request, **args: str) -> Result:
            key = (endpoint, tuple(sorted(args.items())), tuple(request.args.items(multi=True)))
            version = self.institution.version
            hit = self._pages.get(key)
            if hit is not None and hit[0] == version:
                return hit[1]
            body, items, extra = handler(request, **args)
            result: Result = (_Encoded(_dumps(body)), items, extra)
            self._pages[key] = (version, result)
            return result

        return cached

    def _admitted(
        self, request: Request, headers: dict[str, str], granted: Authorisation | None
    ) -> tuple[Response, int]:
        with self._lock:
            injected = self.faults.draw(self._rng, request.path, request.args.get("page"))
        if injected.reset:
            raise reset_connection(request.environ)
        if injected.status is not None:
            return _json({"errors": [{"message": "An error occurred."}]}, injected.status, {}), 0
        if injected.stall_seconds:
            time.sleep(injected.stall_seconds)
        if self.faults.latency_seconds:
            time.sleep(self.faults.latency_seconds)
        try:
            endpoint, args = self._map.bind_to_environ(request.environ).match()
            if granted is not None and self.oauth is not None:
                if not self.oauth.allows(granted, f"url:GET|{ROUTE_SCOPES[endpoint]}"):
                    return _json({"errors": [{"message": INSUFFICIENT_SCOPES}]}, 401, {}), 0
                if self.oauth.drops_includes():
                    request.args = ImmutableMultiDict(  # type: ignore[misc]
                        [(k, v) for k, v in request.args.items(multi=True)
                         if k not in INCLUDE_PARAMS]
                    )  # fmt: skip
            with self.institution.lock:
                body, items, extra = self._handlers[endpoint](request, **args)
        except _ApiError as exc:
            return _json({"errors": [{"message": exc.message}]}, exc.status, {}), 0
        except HTTPException:  # unknown route or non-GET: Canvas answers 404 JSON
            return _json({"errors": [{"message": NOT_FOUND}]}, 404, {}), 0
        response = _json(self.faults.reshape(request.path, body), 200, extra)
        response.cut_halfway = injected.truncate  # type: ignore[attr-defined]
        return response, items

    # -- helpers -----------------------------------------------------------------------------

    def _local(self, raw: str) -> int:
        """Accept a local id or a global id of our shard; anything else is a 404."""
        try:
            value = int(raw)
        except ValueError:
            raise _ApiError(404) from None
        if value >= GLOBAL_ID_BASE:
            shard, value = divmod(value, GLOBAL_ID_BASE)
            if shard != self.institution.shard_id:
                raise _ApiError(404)
        return value

    def _get(self, table: dict[int, dict], raw: str, deleted_ok: bool = False) -> dict:
        record = table.get(self._local(raw))
        if record is None or (not deleted_ok and record.get("workflow_state") == "deleted"):
            raise _ApiError(404)
        return record

    def _account_of(self, raw: str) -> dict:
        raw = str(self.institution.root_account_id) if raw == "self" else raw
        return self._get(self.institution.accounts, raw)

    def _page(self, request: Request, items: list, last: bool) -> tuple[list, dict[str, str]]:
        args = request.args
        try:
            per_page = min(100, max(1, int(args.get("per_page", 10))))
        except ValueError:
            per_page = 10
        try:
            page = max(1, int(args.get("page", 1)))
        except ValueError:
            page = 1
        pages = max(1, math.ceil(len(items) / per_page))
        kept = [(k, v) for k, v in args.items(multi=True) if k not in ("page", "per_page")]
        base = request.host_url.rstrip("/") + request.path

        def link(number: int, rel: str) -> str:
            query = urlencode([*kept, ("page", number), ("per_page", per_page)])
            return f'<{base}?{query}>; rel="{rel}"'

        links = [link(page, "current")]
        if page < pages:
            links.append(link(page + 1, "next"))
        if page > 1:
            links.append(link(page - 1, "prev"))
        links.append(link(1, "first"))
        if last:
            links.append(link(pages, "last"))
        return items[(page - 1) * per_page : page * per_page], {"Link": ",".join(links)}

    def _students(self, enrollment_ids: Iterable[int]) -> int:
        enrollments = self.institution.enrollments
        return sum(
            1
            for i in enrollment_ids
            if enrollments[i]["type"] == "StudentEnrollment"
            and enrollments[i]["enrollment_state"] in COUNTED_STUDENT_STATES
        )

    def _course_json(self, course: dict, include: set[str]) -> dict:
        inst, base = self.institution, self.url
        out = dict(course)
        # Canvas's API reports created/claimed courses as "unpublished" (Course#api_state).
        if out["workflow_state"] in ("created", "claimed"):
            out["workflow_state"] = "unpublished"
        if "account" in include:
            account = inst.accounts[course["account_id"]]
            out["account"] = {
                k: account[k]
                for k in ("id", "name", "parent_account_id", "root_account_id", "workflow_state")
            }
        if "term" in include:
            out["term"] = _term_json(inst.terms[course["enrollment_term_id"]])
        if "total_students" in include:
            out["total_students"] = self._students(inst.enrollments_by_course.get(course["id"], []))
        if "account_name" in include:
            out["account_name"] = inst.accounts[course["account_id"]]["name"]
        if "teachers" in include:
            teachers: dict[int, dict] = {}
            for eid in inst.enrollments_by_course.get(course["id"], []):
                e = inst.enrollments[eid]
                if e["type"] == "TeacherEnrollment" and e["enrollment_state"] == "active":
                    user = inst.users[e["user_id"]]
                    teachers.setdefault(
                        user["id"],
                        {
                            "id": user["id"],
                            "display_name": user["short_name"],
                            "anonymous_id": _base36(user["id"]),
                            "avatar_image_url": f"{base}/images/messages/avatar-50.png",
                            "html_url": f"{base}/courses/{course['id']}/users/{user['id']}",
                            "pronouns": None,
                        },
                    )
            out["teachers"] = list(teachers.values())
        return out

    def _section_json(self, section: dict, include: set[str]) -> dict:
        out = dict(section)
        if "total_students" in include:
            ids = self.institution.enrollments_by_section.get(section["id"], [])
            out["total_students"] = self._students(ids)
        return out

    def _enrollment_json(self, e: dict) -> dict:
        user = self.institution.users[e["user_id"]]
        out = {k: v for k, v in e.items() if k != "grades"}
        out["html_url"] = f"{self.url}/courses/{e['course_id']}/users/{e['user_id']}"
        if e["type"] == "StudentEnrollment":
            out["grades"] = {
                **e["grades"],
                "html_url": f"{self.url}/courses/{e['course_id']}/grades/{e['user_id']}",
            }
        out["user"] = {k: user[k] for k in USER_STUB_FIELDS}
        return out

    def _live_course(self, raw: str) -> dict:
        return self._get(self.institution.courses, raw)

    # -- handlers (called with institution.lock held) ------------------------------------------

    def _account(self, request: Request, aid: str) -> Result:
        return dict(self._account_of(aid)), 1, {}

    def _sub_accounts(self, request: Request, aid: str) -> Result:
        account = self._account_of(aid)
        accounts = self.institution.accounts.values()
        if request.args.get("recursive") in ("true", "1"):
            ids = self.institution.descendant_accounts(account["id"]) - {account["id"]}
            found = [a for a in accounts if a["id"] in ids]
        else:
            found = [a for a in accounts if a["parent_account_id"] == account["id"]]
        page, headers = self._page(request, sorted(found, key=lambda a: a["id"]), last=False)
        return [dict(a) for a in page], len(page), headers

    def _terms(self, request: Request, aid: str) -> Result:
        self._account_of(aid)
        terms = [
            t
            for t in sorted(self.institution.terms.values(), key=lambda t: t["id"])
            if t["workflow_state"] != "deleted"
        ]
        page, headers = self._page(request, terms, last=True)
        return {"enrollment_terms": [_term_json(t) for t in page]}, len(page), headers

    def _courses(self, request: Request, aid: str) -> Result:
        inst, args = self.institution, request.args
        accounts = inst.descendant_accounts(self._account_of(aid)["id"])
        states = set(args.getlist("state[]")) or DEFAULT_COURSE_STATES
        if "all" in states:
            states = COURSE_STATES
        term_id = self._term_filter(args.get("enrollment_term_id"))
        search = (args.get("search_term") or "").casefold()
        with_enrollments = args.get("with_enrollments")
        found = []
        for course in inst.courses.values():
            if course["account_id"] not in accounts or course["workflow_state"] not in states:
                continue
            if term_id is not None and course["enrollment_term_id"] != term_id:
                continue
            if search and search not in f"{course['name']} {course['course_code']}".casefold():
                continue
            if with_enrollments in ("true", "false") and (
                bool(inst.enrollments_by_course.get(course["id"])) != (with_enrollments == "true")
            ):
                continue
            found.append(course)
        found.sort(key=lambda c: c["id"])
        page, headers = self._page(request, found, last=False)
        include = set(args.getlist("include[]"))
        return [self._course_json(c, include) for c in page], len(page), headers

    def _term_filter(self, raw: str | None) -> int | None:
        if not raw:
            return None
        if raw.startswith("sis_term_id:"):
            sis = raw.split(":", 1)[1]
            match = [t["id"] for t in self.institution.terms.values() if t["sis_term_id"] == sis]
            return match[0] if match else -1
        try:
            return self._local(raw)
        except _ApiError:
            return -1

    def _course(self, request: Request, cid: str) -> Result:
        include = set(request.args.getlist("include[]"))
        return self._course_json(self._live_course(cid), include), 1, {}

    def _course_sections(self, request: Request, cid: str) -> Result:
        inst = self.institution
        course = self._live_course(cid)
        sections = [
            inst.sections[s]
            for s in sorted(inst.sections_by_course.get(course["id"], []))
            if inst.sections[s]["workflow_state"] != "deleted"
        ]
        page, headers = self._page(request, sections, last=True)
        include = set(request.args.getlist("include[]"))
        return [self._section_json(s, include) for s in page], len(page), headers

    def _section(self, request: Request, sid: str, cid: str | None = None) -> Result:
        section = self._get(self.institution.sections, sid)
        if cid is not None and section["course_id"] != self._live_course(cid)["id"]:
            raise _ApiError(404)
        include = set(request.args.getlist("include[]"))
        return self._section_json(section, include), 1, {}

    def _enrollments(
        self, request: Request, cid: str | None = None, sid: str | None = None
    ) -> Result:
        inst, args = self.institution, request.args
        if cid is not None:
            ids = inst.enrollments_by_course.get(self._live_course(cid)["id"], [])
        else:
            ids = inst.enrollments_by_section.get(self._get(inst.sections, sid or "")["id"], [])
        wanted = args.getlist("state[]") or args.getlist("state") or ["active", "invited"]
        states = set().union(*(ENROLLMENT_STATE_FILTERS.get(s, set()) for s in wanted))
        types = set(args.getlist("type[]") or args.getlist("type"))
        user_id = self._local(args["user_id"]) if args.get("user_id") else None
        found = [inst.enrollments[i] for i in sorted(ids)]
        found = [
            e
            for e in found
            if e["enrollment_state"] in states
            and (not types or e["type"] in types)
            and (user_id is None or e["user_id"] == user_id)
        ]
        page, headers = self._page(request, found, last=True)
        return [self._enrollment_json(e) for e in page], len(page), headers

    def _enrollment(self, request: Request, aid: str, eid: str) -> Result:
        self._account_of(aid)
        # Canvas shows an admin every enrollment by id, deleted ones included.
        return self._enrollment_json(self._get(self.institution.enrollments, eid, True)), 1, {}

    def _users(self, request: Request, aid: str) -> Result:
        inst = self.institution
        self._account_of(aid)  # every user belongs to the root account here
        sort = request.args.get("sort", "username")
        sort = sort if sort in USER_SORTS else "username"
        descending = request.args.get("order") == "desc"
        version, users = self._users_cache.get((sort, descending), (-1, []))
        if version != inst.version or not users:
            users = sorted(
                (u for u in inst.users.values() if u["workflow_state"] != "deleted"),
                key=USER_SORTS[sort],
                reverse=descending,
            )
            self._users_cache[(sort, descending)] = (inst.version, users)
        search = (request.args.get("search_term") or "").casefold()
        if search:
            users = [
                u for u in users if search in f"{u['name']} {u['login_id']} {u['email']}".casefold()
            ]
        page, headers = self._page(request, users, last=False)
        email = "email" in request.args.getlist("include[]")
        return [_user_json(u, email) for u in page], len(page), headers

    def _user(self, request: Request, uid: str) -> Result:
        if uid == "self":  # every token here belongs to the sandbox's service account
            return {**SERVICE_USER, "sortable_name": "Service, Canvas Sync"}, 1, {}
        return _user_json(self._get(self.institution.users, uid, True), True), 1, {}


def _dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _json(body: Any, status: int, headers: dict[str, str]) -> Response:
    data = body if isinstance(body, _Encoded) else _dumps(body)
    return Response(data, status, headers, content_type=JSON_TYPE)


def _term_json(term: dict) -> dict:
    return {**{k: term[k] for k in TERM_FIELDS}, "grading_period_group_id": None}


def _user_json(user: dict, email: bool) -> dict:
    out = {k: user[k] for k in USER_FIELDS}
    if email:
        out["email"] = user["email"]
    return out


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rem = divmod(value, 36)
        out = digits[rem] + out
        if not value:
            return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(
    size: str,
    port: int,
    token: str,
    seed: int,
    *,
    scale: float = 1.0,
    account_users: int | None = None,
    latency_ms: float = 0.0,
    server_time: bool = False,
    network_ms: float = 0.0,
    cache_pages: bool = False,
    keep_alive: bool = False,
    describe: Path | None = None,
    states: tuple[Sequence[str], Sequence[str]] = ((), ()),
    developer_key: DeveloperKey | None = None,
) -> None:
    """Generate an institution, serve it, and block until Ctrl-C or SIGTERM. ``describe``: write
    each term's shape as a client reading courses and enrollments in ``states`` sees it (JSON,
    for the floor in ``sandbox.model``) before serving."""
    institution = generate_institution(size, seed, scale, account_users)
    if describe is not None:
        shapes = {
            t["sis_term_id"] or f"term-{t['id']}": asdict(term_shape(institution, t["id"], *states))
            for t in institution.terms.values()
        }
        describe.write_text(json.dumps(shapes))
    server = SandboxServer(
        institution,
        token=token,
        port=port,
        latency_seconds=latency_ms / 1000,
        server_time=server_time,
        network_latency_seconds=network_ms / 1000,
        cache_pages=cache_pages,
        keep_alive=keep_alive,
        developer_key=developer_key,
    ).start()
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"Canvas sandbox ({size}, seed {seed}) at {server.url} token {token}", flush=True)
    if developer_key is not None:
        kind = "scoped" if developer_key.scoped else "unscoped"
        print(f"developer key {developer_key.client_id} ({kind}), secret "
              f"{developer_key.client_secret}", flush=True)  # fmt: skip
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
