"""The sandbox's Canvas REST API over real HTTP (werkzeug), with Canvas's paging and throttling.

Only the read endpoints a term sync needs are served. Behaviour copied from Canvas: ``Link``
paging (no ``rel="last"`` on account course/user lists), the 403 throttle text, JSON error
bodies, local ids in JSON while paths accept global ids, and default state filters.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from .faults import Faults
from .institution import GLOBAL_ID_BASE, Institution, generate_institution
from .throttle import Throttle, fmt, request_cost

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


class _ApiError(Exception):
    def __init__(self, status: int, message: str = NOT_FOUND) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Per-request access logs would drown test output."""


Result = tuple[Any, int, dict[str, str]]  # body, items counted for cost, extra headers


class SandboxServer:
    def __init__(
        self,
        institution: Institution,
        token: str = "sandbox-token",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        seed: int = 0,
    ) -> None:
        self.institution = institution
        self.token = token
        self.host, self.port = host, port
        self.faults = faults or Faults()
        self.throttle = Throttle()
        self.url = ""
        self.request_count = 0
        self.request_log: list[tuple[str, str, int]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._users_cache: tuple[int, list[dict]] = (-1, [])
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
            self._handlers[path] = handler

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        self._server = make_server(
            self.host, self.port, self.wsgi, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name=f"canvas-sandbox-{self.port}"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
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
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        headers = {"X-Request-Context-Id": str(uuid.uuid4()), "X-Request-Cost": fmt(0)}
        auth = request.headers.get("Authorization")
        if auth != f"Bearer {self.token}":
            message = "user authorization required" if not auth else "Invalid access token."
            headers["WWW-Authenticate"] = 'Bearer realm="canvas-lms"'
            # Unauthenticated callers are throttled by address in Canvas; report that bucket.
            remote = self.throttle.bucket(f"ip:{request.remote_addr}").remaining()
            headers["X-Rate-Limit-Remaining"] = fmt(remote)
            return _json({"errors": [{"message": message}]}, 401, headers)
        bucket = self.throttle.bucket(self.token)
        if self.faults.throttle_storm or not bucket.reserve():
            remaining = 0.0 if self.faults.throttle_storm else bucket.remaining()
            headers["X-Rate-Limit-Remaining"] = fmt(remaining)
            return Response(THROTTLED_BODY, 403, headers, content_type="text/plain; charset=utf-8")
        items = 0
        try:
            response, items = self._admitted(request, headers)
        finally:
            cost = request_cost(items)
            headers["X-Request-Cost"] = fmt(cost)
            headers["X-Rate-Limit-Remaining"] = fmt(bucket.release(cost))
        response.headers.update(headers)
        return response

    def _admitted(self, request: Request, headers: dict[str, str]) -> tuple[Response, int]:
        with self._lock:
            injected = self.faults.draw(self._rng)
        if injected.status is not None:
            return _json({"errors": [{"message": "An error occurred."}]}, injected.status, {}), 0
        if injected.stall_seconds:
            time.sleep(injected.stall_seconds)
        if self.faults.latency_seconds:
            time.sleep(self.faults.latency_seconds)
        try:
            endpoint, args = self._map.bind_to_environ(request.environ).match()
            with self.institution.lock:
                body, items, extra = self._handlers[endpoint](request, **args)
        except _ApiError as exc:
            return _json({"errors": [{"message": exc.message}]}, exc.status, {}), 0
        except HTTPException:  # unknown route or non-GET: Canvas answers 404 JSON
            return _json({"errors": [{"message": NOT_FOUND}]}, 404, {}), 0
        return _json(body, 200, extra), items

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
        version, users = self._users_cache
        if version != inst.version or not users:
            users = sorted(
                (u for u in inst.users.values() if u["workflow_state"] != "deleted"),
                key=lambda u: (u["sortable_name"].casefold(), u["id"]),
            )
            self._users_cache = (inst.version, users)
        search = (request.args.get("search_term") or "").casefold()
        if search:
            users = [
                u for u in users if search in f"{u['name']} {u['login_id']} {u['email']}".casefold()
            ]
        page, headers = self._page(request, users, last=False)
        email = "email" in request.args.getlist("include[]")
        return [_user_json(u, email) for u in page], len(page), headers

    def _user(self, request: Request, uid: str) -> Result:
        return _user_json(self._get(self.institution.users, uid, True), True), 1, {}


def _json(body: Any, status: int, headers: dict[str, str]) -> Response:
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
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


def serve(size: str, port: int, token: str, seed: int) -> None:
    """Generate an institution, serve it, and block until Ctrl-C."""
    server = SandboxServer(generate_institution(size, seed), token=token, port=port).start()
    print(f"Canvas sandbox ({size}, seed {seed}) at {server.url} token {token}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
