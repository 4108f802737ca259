"""`canvas-assets canvas check`: call each Canvas endpoint the project uses once, with the
configured credentials (a token, or the developer key's shared token), and say what is missing.

It reports who the credentials are, whether the account is reachable, each endpoint allowed or
refused (naming the scope a scoped key lacks), whether Canvas honours ``include[]`` (a scoped
key without "Allow Include Parameters" drops them), and the throttle's headroom
(``X-Rate-Limit-Remaining``). It exits 1 when anything is missing, with the fix. Endpoints that
read one object take an id from an earlier answer; without one they are asked for an object that
does not exist: Canvas checks the scope first, so a 404 still says the route is allowed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from canvas_assets.canvas import (
    CanvasError,
    CanvasIncludesWithheldError,
    CanvasNotFoundError,
    CanvasPermissionError,
    CanvasResource,
    CanvasScopeError,
    CanvasSession,
)
from canvas_assets.canvas.fetch import COURSE_INCLUDES, SINGLE_COURSE_INCLUDES
from canvas_assets.canvas.scopes import ENDPOINTS, Endpoint
from canvas_assets.defs.resources import canvas_resource, ready
from canvas_assets.institutions import Institution
from canvas_assets.outcomes import first_line
from canvas_assets.settings import SettingError, Settings
from canvas_assets.tables.registry import ENROLLMENT_STATES_FETCHED, SECTIONS
from canvas_assets.warehouse import WarehouseError

MISSING_ID = 0  # no Canvas object has it


@dataclass
class Report:
    """One institution's findings: lines to print, and the fixes for what failed."""

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    missing_scopes: list[str] = field(default_factory=list)
    ids: dict[str, Any] = field(default_factory=dict)  # found so far, for the next calls

    @property
    def failed(self) -> bool:
        return bool(self.fixes or self.missing_scopes)

    def ok(self, text: str) -> None:
        self.lines.append(f"  ok      {text}")

    def fail(self, text: str, fix: str) -> None:
        """A finding, and how to fix it (said once however many findings share it)."""
        self.lines.append(f"  FAIL    {text}")
        self.failures.append(text)
        if fix not in self.fixes:
            self.fixes.append(fix)

    def refused(self, endpoint: Endpoint) -> None:
        text = (
            f"GET {endpoint.route}: refused, the key lacks {endpoint.scope} (needed for "
            f"{endpoint.purpose})"
        )
        self.lines.append(f"  FAIL    {text}")
        self.failures.append(text)
        self.missing_scopes.append(endpoint.scope)

    def first_failure(self) -> str:
        """The first thing that failed, and its fix, in one line (for `canvas-assets dev`)."""
        more = len(self.failures) - 1
        also = f" (and {more} more: run `canvas-assets canvas check`)" if more else ""
        return f"{self.failures[0]}; to fix: {self.to_fix()[0]}{also}"

    def to_fix(self) -> list[str]:
        scopes = ", ".join(self.missing_scopes)
        add = f"add to the developer key's scopes (Admin > Developer Keys > edit the key): {scopes}"
        return ([add] if self.missing_scopes else []) + self.fixes


def _offered(body: Any, offers: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The ids the first object of an answer offers to the next calls."""
    item = body[0] if isinstance(body, list) and body else body
    if not isinstance(item, dict):
        return {}
    return {name: item[key] for name, key in offers if item.get(key) is not None}


@dataclass(frozen=True)
class Call:
    """One endpoint's call: its path and parameters from the ids found so far, and the ids its
    answer offers to later calls (name, field of its first object)."""

    endpoint: Endpoint
    path: Callable[[dict[str, Any]], str]
    params: tuple[tuple[str, object], ...] = ()
    offers: tuple[tuple[str, str], ...] = ()


def _includes(names: tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    return tuple(("include[]", name) for name in names)


def _calls(account: str) -> list[Call]:
    by_route = {endpoint.route: endpoint for endpoint in ENDPOINTS}

    def at(route: str) -> Endpoint:
        return by_route[f"/api/v1{route}"]

    return [
        Call(at("/accounts/:account_id/courses"), lambda ids: f"/accounts/{account}/courses",
             (*_includes(COURSE_INCLUDES), ("per_page", 10)), (("course", "id"),)),
        Call(at("/courses/:id"), lambda ids: f"/courses/{ids.get('course', MISSING_ID)}",
             _includes(SINGLE_COURSE_INCLUDES)),
        Call(at("/courses/:course_id/sections"),
             lambda ids: f"/courses/{ids.get('course', MISSING_ID)}/sections",
             SECTIONS.source.params if SECTIONS.source else ()),
        Call(at("/courses/:course_id/enrollments"),
             lambda ids: f"/courses/{ids.get('course', MISSING_ID)}/enrollments",
             (*(("state[]", s) for s in ENROLLMENT_STATES_FETCHED), ("per_page", 10)),
             (("enrollment", "id"),)),
        Call(at("/accounts/:account_id/enrollments/:id"),
             lambda ids: f"/accounts/{account}/enrollments/{ids.get('enrollment', MISSING_ID)}"),
        Call(at("/accounts/:account_id/users"), lambda ids: f"/accounts/{account}/users",
             (*_includes(("email",)), ("per_page", 10))),
    ]  # fmt: skip


def _call(session: CanvasSession, call: Call, report: Report) -> None:
    route = f"GET {call.endpoint.route}"
    try:
        body = session.get(call.path(report.ids), list(call.params))
    except CanvasScopeError:
        report.refused(call.endpoint)
        return
    except CanvasIncludesWithheldError as exc:
        report.ok(f"{route}: allowed")
        report.fail(
            f"includes not honoured: Canvas left out {', '.join(exc.missing)} from GET {exc.route}",
            'turn on "Allow Include Parameters" on the developer key (Admin > Developer Keys > '
            "edit the key)",
        )
        return
    except CanvasNotFoundError:  # asked for an object that does not exist: the route is allowed
        report.ok(f"{route}: allowed (its scope checked; no object read)")
        return
    except CanvasPermissionError as exc:
        report.fail(f"{route}: {first_line(exc)}", "give the authorising user account-admin read "
                    "access to courses, sections, enrollments and users")  # fmt: skip
        return
    report.ids.update(_offered(body, call.offers))
    asked = [value for name, value in call.params if name == "include[]"]
    report.ok(f"{route}: allowed" + (f", includes honoured ({', '.join(asked)})" if asked else ""))


def _reachable(session: CanvasSession, canvas: CanvasResource, report: Report) -> bool:
    """Who the credentials are and whether the account answers; False when nothing else can
    be checked."""
    by_route = {endpoint.route: endpoint for endpoint in ENDPOINTS}
    try:
        me = session.get("/users/self")
        report.ok(f"authenticated as {me.get('name')} (Canvas user {me.get('id')})")
    except CanvasScopeError:
        report.refused(by_route["/api/v1/users/:id"])
    terms = session.account_path("/terms")
    try:
        found = list(session.paginate(terms, key="enrollment_terms"))
    except CanvasScopeError:
        report.refused(by_route["/api/v1/accounts/:account_id/terms"])
        return True
    except CanvasNotFoundError as exc:
        report.fail(f"account {canvas.account_id}: {first_line(exc)}", "set CANVAS_ACCOUNT_ID")
        return False
    report.ok(f"account {canvas.account_id} reachable ({len(found)} terms)")
    return True


def check_institution(canvas: CanvasResource) -> Report:
    """Every check for one institution's Canvas."""
    report = Report()
    with canvas.session(timeout_seconds=20, max_retries=1, max_throttle_retries=3) as session:
        try:
            if _reachable(session, canvas, report):
                for call in _calls(canvas.account_id):
                    _call(session, call, report)
        except (CanvasError, WarehouseError) as exc:  # the credentials themselves
            report.fail(first_line(exc), "the credentials, as the line above says")
            return report
        headroom = session.stats.lowest_rate_limit_remaining
    if headroom is not None:
        report.ok(f"throttle headroom: {headroom:.0f} units left (X-Rate-Limit-Remaining)")
    return report


def _print(institution: Institution, canvas: CanvasResource, report: Report, out: TextIO) -> None:
    how = (
        f"developer key {institution.client_id_env}"
        if institution.developer_key
        else f"token {institution.token_env}"
    )
    print(f"{institution.label}: {canvas.base_url} (account {canvas.account_id}), {how}", file=out)
    print("\n".join(report.lines), file=out)
    fixes = report.to_fix()
    if fixes:
        print("  to fix:", file=out)
    for fix in fixes:
        print(f"    - {fix}", file=out)


def run_check(settings: Settings, only: str | None = None, out: TextIO | None = None) -> int:
    """The command: 0 when every institution's Canvas allows everything the project needs."""
    out = out or sys.stdout
    if settings.institutions_file is None and not settings.canvas_configured:
        raise SettingError("CANVAS_BASE_URL is not set: the check needs the Canvas to call.")
    institutions = [i for i in settings.institutions if only is None or i.label == only]
    if not institutions:
        raise SettingError(f"--institution {only}: no such institution in the settings.")
    failed = False
    for institution in institutions:
        canvas = ready(canvas_resource(settings, institution))
        report = check_institution(canvas)
        _print(institution, canvas, report, out)
        failed = failed or report.failed
    return 1 if failed else 0
