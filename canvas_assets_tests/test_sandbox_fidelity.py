"""The Canvas sandbox behaves like Canvas where a sync can tell the difference (real HTTP)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
import requests

from canvas_sandbox import (
    SHARD_ID,
    ChangeDriver,
    SandboxServer,
    generate_institution,
    global_id,
)
from canvas_sandbox.institution import Institution
from canvas_sandbox.throttle import LeakyBucket

TOKEN = "fidelity-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LINK = re.compile(r'<([^>]+)>; rel="(\w+)"')


@pytest.fixture(scope="module")
def inst() -> Institution:
    return generate_institution("small", seed=11)


@pytest.fixture(scope="module", params=[False, True], ids=["werkzeug", "keep-alive"])
def server(inst: Institution, request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    """Both ways of serving: werkzeug (tests, fault injection) and the keep-alive server the
    benchmarks use must answer alike."""
    with SandboxServer(inst, token=TOKEN, keep_alive=request.param) as running:
        yield running


def links(response: requests.Response) -> dict[str, str]:
    return {rel: url for url, rel in LINK.findall(response.headers["Link"])}


def walk(server: SandboxServer, path: str, params: dict) -> tuple[list, list[requests.Response]]:
    url: str | None = f"{server.url}{path}"
    items: list = []
    pages: list[requests.Response] = []
    while url:
        response = requests.get(url, params=params if not pages else None, headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        pages.append(response)
        items.extend(response.json())
        url = links(response).get("next")
    return items, pages


def test_link_header_matches_canvas(server: SandboxServer, inst: Institution) -> None:
    """Without this a client splitting on ", " or needing rel="last" passes here, not on Canvas."""
    course = next(c for c in inst.courses.values() if c["workflow_state"] == "available")
    path = f"/api/v1/courses/{course['id']}/enrollments"
    params = {"per_page": 3, "state[]": ["active", "invited", "completed"]}
    items, pages = walk(server, path, params)
    expected = {
        e["id"]
        for e in inst.enrollments.values()
        if e["course_id"] == course["id"]
        and e["enrollment_state"] in {"active", "invited", "completed"}
    }
    assert [e["id"] for e in items] == sorted(expected)
    assert len(pages) > 1
    for number, page in enumerate(pages, start=1):
        header = page.headers["Link"]
        assert ", <" not in header and '",<' in header
        rels = links(page)
        assert all(url.startswith(f"{server.url}/api/v1/") for url in rels.values())
        assert "last" in rels and ("next" in rels) == (number < len(pages))
        assert ("prev" in rels) == (number > 1)
        assert rels["current"].count("state%5B%5D=") == 3  # repeated params survive
    for list_path in ("/api/v1/accounts/self/courses", "/api/v1/accounts/self/users"):
        response = requests.get(f"{server.url}{list_path}", headers=AUTH, timeout=10)
        assert "next" in links(response) and "last" not in links(response)


def test_per_page_is_clamped_to_100(server: SandboxServer) -> None:
    """Without this a client asking per_page=500 would never be tested against Canvas's cap."""
    response = requests.get(
        f"{server.url}/api/v1/accounts/self/users", params={"per_page": 500}, headers=AUTH
    )
    assert len(response.json()) == 100
    assert "per_page=100" in links(response)["next"]


def test_terms_are_wrapped_and_default_term_has_no_sis_id(server: SandboxServer) -> None:
    """Without this a client expecting a bare list, or a sis_term_id on every term, slips by."""
    response = requests.get(f"{server.url}/api/v1/accounts/self/terms", headers=AUTH)
    terms = response.json()["enrollment_terms"]
    default = next(t for t in terms if t["name"] == "Default Term")
    assert default["sis_term_id"] is None and default["start_at"] is None
    assert {"2025FA", "2026SP", "2026FA"} <= {t["sis_term_id"] for t in terms}
    assert "last" in links(response)


def test_auth_failures_are_canvas_401s(server: SandboxServer) -> None:
    """Without this token errors would not look like Canvas's, hiding bad error handling."""
    url = f"{server.url}/api/v1/accounts/self"
    wrong = requests.get(url, headers={"Authorization": "Bearer nope"})
    missing = requests.get(url)
    assert wrong.status_code == missing.status_code == 401
    assert wrong.json() == {"errors": [{"message": "Invalid access token."}]}
    assert missing.json() == {"errors": [{"message": "user authorization required"}]}
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="canvas-lms"'


def test_unknown_routes_and_ids_are_404_json(server: SandboxServer, inst: Institution) -> None:
    """Without this a client could mistake a missing or deleted object for an outage."""
    deleted = next(c["id"] for c in inst.courses.values() if c["workflow_state"] == "deleted")
    foreign = (SHARD_ID + 1) * 10**13 + 1
    for path in (
        "/api/v1/nope",
        "/api/v1/courses/999999",
        f"/api/v1/courses/{deleted}",
        f"/api/v1/accounts/{foreign}",
        "/api/v1/accounts/424242/terms",
    ):
        response = requests.get(f"{server.url}{path}", headers=AUTH)
        assert response.status_code == 404, path
        assert response.json() == {
            "errors": [{"message": "The specified resource does not exist."}]
        }
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"


def test_global_ids_in_paths_answer_with_local_ids(
    server: SandboxServer, inst: Institution
) -> None:
    """Without this ids taken from live events (global) could not be refreshed over REST."""
    course = next(c for c in inst.courses.values() if c["workflow_state"] == "available")
    enrollment = next(e for e in inst.enrollments.values() if e["course_id"] == course["id"])
    section_id = enrollment["course_section_id"]
    checks = {
        f"/api/v1/courses/{global_id(course['id'])}": course["id"],
        f"/api/v1/sections/{global_id(section_id)}": section_id,
        f"/api/v1/users/{global_id(enrollment['user_id'])}": enrollment["user_id"],
        f"/api/v1/accounts/{global_id(1)}/enrollments/{global_id(enrollment['id'])}": enrollment[
            "id"
        ],
    }
    for path, local in checks.items():
        body = requests.get(f"{server.url}{path}", headers=AUTH).json()
        assert body["id"] == local, path


def test_throttle_rejects_concurrent_bursts_like_canvas(inst: Institution) -> None:
    """Without this the client's throttle handling is never exercised against a real bucket."""
    with SandboxServer(inst, token="burst") as burst:
        burst.faults.latency_seconds = 0.3
        headers = {"Authorization": "Bearer burst"}

        def call(_: int) -> requests.Response:
            return requests.get(f"{burst.url}/api/v1/accounts/self", headers=headers, timeout=10)

        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(pool.map(call, range(20)))
        rejected = [r for r in responses if r.status_code == 403]
        assert rejected and any(r.status_code == 200 for r in responses)
        for response in rejected:
            assert "Rate Limit Exceeded" in response.text
            assert response.headers["Content-Type"].startswith("text/plain")
            assert float(response.headers["X-Request-Cost"]) == 0
            assert "X-Rate-Limit-Remaining" in response.headers
        burst.faults.latency_seconds = 0
        idle = call(0)
        assert idle.status_code == 200
        assert float(idle.headers["X-Rate-Limit-Remaining"]) > 599
        assert 0 < float(idle.headers["X-Request-Cost"]) < 1


def test_generation_is_deterministic_and_large_is_large() -> None:
    """Without this fixtures drift between runs and "large" stops stressing the sync."""
    a, b = generate_institution("small", seed=3), generate_institution("small", seed=3)
    assert (a.users, a.courses, a.sections, a.enrollments) == (
        b.users,
        b.courses,
        b.sections,
        b.enrollments,
    )
    assert generate_institution("small", seed=4).users != a.users
    started = time.monotonic()
    large = generate_institution("large", seed=0)
    assert time.monotonic() - started < 20
    for term_id in large.real_term_ids():
        courses = {c for c, v in large.courses.items() if v["enrollment_term_id"] == term_id}
        sections = [s for s in large.sections.values() if s["course_id"] in courses]
        enrollments = [e for e in large.enrollments.values() if e["course_id"] in courses]
        assert len(courses) >= 1000 and len(sections) >= 1500
        assert len(enrollments) >= 30_000 and len({e["user_id"] for e in enrollments}) >= 10_000
        assert any(s["nonxlist_course_id"] for s in sections)


def _stamps(inst: Institution) -> dict[tuple[str, int], str]:
    return {
        (kind, rid): r["updated_at"]
        for kind, table in (("c", inst.courses), ("s", inst.sections), ("e", inst.enrollments))
        for rid, r in table.items()
    }


def test_change_driver_emits_canvas_live_events() -> None:
    """Without this live-event parsing is only tested against tidy, single-format events."""
    inst = generate_institution("small", seed=5)
    driver = ChangeDriver(inst, None, None, seed=2, duplicate_rate=0.1, reorder_rate=0.1)
    before = _stamps(inst)
    envelopes = []
    for _ in range(200):
        envelopes += driver.step()
        after = _stamps(inst)
        assert all(after[key] >= value for key, value in before.items())
        before = after
    driver.flush()
    assert len(driver.sent) >= len(envelopes)  # duplicates add, nothing was dropped
    names = {e["metadata"]["event_name"] for e in envelopes}
    assert {
        "course_updated",
        "enrollment_created",
        "enrollment_updated",
        "course_grade_change",
        "user_updated",
    } <= names
    id_keys = {
        "course_id",
        "course_section_id",
        "user_id",
        "enrollment_id",
        "account_id",
        "root_account_id",
        "enrollment_term_id",
        "nonxlist_course_id",
        "associated_user_id",
    }
    ids = [v for e in envelopes for k, v in e["body"].items() if k in id_keys]
    assert ids and all(isinstance(v, str) for v in ids)
    global_share = sum(int(v) >= 10**13 for v in ids) / len(ids)
    assert 0.75 < global_share < 1
    times = [e["metadata"]["event_time"] for e in envelopes]
    assert any(re.fullmatch(r".*T.*\.\d{3}Z", t) for t in times)
    assert any(re.fullmatch(r".*T\d\d:\d\d:\d\dZ", t) for t in times)
    assert any(re.fullmatch(r".* [+-]\d{4}", t) for t in times)
    parsed = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S %z") for t in times if " " in t]
    assert all(p.tzinfo is not None for p in parsed)


def test_unpublished_courses_are_reported_as_canvas_does(server) -> None:
    """Without this, the sandbox would leak Canvas's internal created/claimed states."""
    inst = server.institution
    hidden = [
        c["id"] for c in inst.courses.values() if c["workflow_state"] in ("created", "claimed")
    ]
    assert hidden, "the generator must produce unpublished courses"
    response = requests.get(f"{server.url}/api/v1/courses/{hidden[0]}", headers=AUTH, timeout=10)
    assert response.json()["workflow_state"] == "unpublished"


def test_the_twelfth_request_in_service_is_the_first_refused_like_canvas() -> None:
    """Without this, the sandbox would admit a request that Canvas refuses: Canvas adds the
    request's 50-unit charge first and refuses it if that reaches the high-water mark, so an empty
    bucket serves eleven at once, not twelve; a refused request's charge is credited back."""
    now = [0.0]
    bucket = LeakyBucket(clock=lambda: now[0])
    assert all(bucket.reserve() for _ in range(11))
    assert not bucket.reserve()
    assert bucket.level == 550
    assert bucket.release(0.25) == pytest.approx(600 - 500.25)
    now[0] += 10.0  # ten seconds drain 100 units
    assert bucket.level == pytest.approx(400.25)


def test_account_users_sort_either_way_like_canvas(server: SandboxServer) -> None:
    """Without this, a client reading the account user list from both ends (order=desc) would
    be tested against a sandbox that ignores the order."""
    path = "/api/v1/accounts/self/users"
    ascending, _ = walk(server, path, {"per_page": 100, "sort": "username", "order": "asc"})
    descending, pages = walk(server, path, {"per_page": 100, "order": "desc"})
    assert [u["id"] for u in descending] == [u["id"] for u in reversed(ascending)]
    assert all("last" not in links(page) for page in pages)
    names = [u["sortable_name"].casefold() for u in ascending]
    assert names == sorted(names)


def test_request_cost_grows_with_the_page_and_its_kind_of_object(
    server: SandboxServer, inst: Institution
) -> None:
    """Without this, costs would not tell a client anything: Canvas charges CPU + DB time, so a
    larger page costs more, and a page of enrollments with grades more than one of users."""
    course = max(inst.enrollments_by_course, key=lambda c: len(inst.enrollments_by_course[c]))

    every_state = ["active", "invited", "completed", "inactive", "creation_pending"]

    def cost(path: str, per_page: int) -> float:
        params = {"per_page": per_page, "state[]": every_state}
        response = requests.get(f"{server.url}{path}", params=params, headers=AUTH, timeout=10)
        assert response.status_code == 200 and len(response.json()) == per_page
        return float(response.headers["X-Request-Cost"])

    enrollments = f"/api/v1/courses/{course}/enrollments"
    assert cost(enrollments, 5) > cost(enrollments, 1)
    assert cost(enrollments, 5) > cost("/api/v1/accounts/self/users", 5)


def test_server_time_holds_each_request_for_its_latency_and_cost(inst: Institution) -> None:
    """Without this, a benchmark's "50 ms per request" would not be spent inside Canvas, where
    the request holds its up-front charge, and a page's cost would take no time."""
    with SandboxServer(inst, token=TOKEN, latency_seconds=0.05, server_time=True) as slow:
        started = time.monotonic()
        response = requests.get(f"{slow.url}/api/v1/accounts/self/users", headers=AUTH, timeout=10)
        took = time.monotonic() - started
    assert response.status_code == 200
    assert took >= 0.05 + float(response.headers["X-Request-Cost"])
    assert slow.stats.as_dict()["admitted"] == 1
