"""A semester fetch runs at Canvas's budget and reads each page once (the sandbox over HTTP,
answering each request in 50 ms plus its cost, with Canvas's throttle). Nothing here is timed:
what is checked is how many requests were in flight, what Canvas refused, and what was read."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from canvas_assets.canvas import CanvasResource
from canvas_assets.canvas.fetch import fetch_semester, fetch_terms, find_term
from canvas_assets.tables.mapping import Enrollment
from canvas_sandbox import SandboxServer, generate_institution
from canvas_sandbox.throttle import Throttle

from .truth import expected_semester

TOKEN = "budget-token"
SEMESTER = "2026SP"


def serve(institution, **kwargs) -> SandboxServer:
    return SandboxServer(
        institution, token=TOKEN, latency_seconds=0.05, server_time=True, keep_alive=True,
        **kwargs,
    )  # fmt: skip


def fetch(sandbox: SandboxServer, **resource):
    session = CanvasResource(base_url=sandbox.url, api_token=TOKEN, **resource).session()
    term = find_term(fetch_terms(session), SEMESTER)
    return session, fetch_semester(session, term, SEMESTER, datetime.now(UTC))


def gets(sandbox: SandboxServer) -> list[tuple[str, dict[str, list[str]]]]:
    """Successful requests in the order they completed: (path, query)."""
    out = []
    for method, target, status in sandbox.request_log:
        parts = urlsplit(target)
        if method == "GET" and status == 200:
            out.append((parts.path, parse_qs(parts.query)))
    return out


@pytest.fixture(scope="module")
def medium():
    return generate_institution("medium", seed=2, scale=0.5)


def test_a_semester_is_read_at_the_buckets_budget_and_never_throttled(medium) -> None:
    """Without this, the fetch would stay at the old fixed cap (8 in flight, starting at 4)
    while Canvas admits about eleven requests being served, or would overshoot and be
    throttled."""
    with serve(medium) as sandbox:
        session, snapshot = fetch(sandbox)
    assert sandbox.stats.throttled == 0 and session.stats.throttle_waits == 0
    assert session.limiter.peak_in_flight >= 9
    expected = expected_semester(medium, SEMESTER)
    assert {int(c["id"]) for c in snapshot.courses} == set(expected["courses"])
    assert {int(e.id) for e in snapshot.objects("enrollments")} == set(expected["enrollments"])
    assert set(snapshot.users) == set(expected["users"])


@pytest.mark.slow  # a semester read through a small bucket
def test_a_smaller_bucket_is_read_from_the_headers_not_assumed(medium) -> None:
    """Without this, a Canvas whose throttle is configured tighter than the defaults (Canvas
    lets administrators set each client's bucket) would throttle a client that assumes 600:
    here the high-water mark is 300 and costs accumulate faster than the bucket drains."""
    with serve(medium) as sandbox:
        sandbox.throttle = Throttle(hwm=300.0, maximum=400.0, outflow=2.0)
        session, snapshot = fetch(sandbox)
    assert sandbox.stats.throttled == 0
    # A 300-unit bucket admits half the requests in service that the default does: the client
    # took that from the headers, and still used it to within one request of its reserve.
    reserve = CanvasResource.model_fields["rate_limit_floor"].default
    assert session.limiter.peak_in_flight <= 5
    assert session.stats.lowest_rate_limit_remaining < reserve + 50
    assert len(snapshot.courses) == len(expected_semester(medium, SEMESTER)["courses"])


def test_each_course_is_read_as_soon_as_its_page_of_the_course_list_arrives() -> None:
    """Without this, every course's sections and enrollments would wait for the whole course
    list, a chain of pages, before the first of them started."""
    with serve(generate_institution("medium", seed=2)) as sandbox:  # two pages of courses
        fetch(sandbox)
    done = gets(sandbox)
    course_pages = [
        n for n, (path, _) in enumerate(done) if path.endswith("/courses") and "/accounts/" in path
    ]
    per_course = [n for n, (path, _) in enumerate(done) if "/courses/" in path]
    assert len(course_pages) >= 2
    assert per_course[0] < course_pages[-1]


def test_the_people_come_from_both_ends_of_the_account_list_then_single_gets() -> None:
    """Without this, the people of a semester would cost one pass over an account list many
    times larger than the semester, one page at a time; and a person or a page read twice would
    go unnoticed."""
    institution = generate_institution("small", seed=7, account_users=3_000)
    with serve(institution) as sandbox:
        session, snapshot = fetch(sandbox)
    expected = expected_semester(institution, SEMESTER)
    assert set(snapshot.users) == set(expected["users"])
    assert all(snapshot.users[uid]["email"] for uid in snapshot.users)
    done = gets(sandbox)
    targets = Counter(
        (path, tuple(sorted((k, tuple(v)) for k, v in query.items()))) for path, query in done
    )
    assert max(targets.values()) == 1  # no page, list or object requested twice
    user_pages = [q for path, q in done if path.endswith("/users") and "/accounts/" in path]
    assert {q["order"][0] for q in user_pages} == {"asc", "desc"}
    account = sum(1 for u in institution.users.values() if u["workflow_state"] != "deleted")
    assert len(user_pages) < math.ceil(account / 100)  # not the whole account list
    single = [path for path, _ in done if path.startswith("/api/v1/users/")]
    assert single and len(single) < len(expected["users"])


def test_a_semester_keeps_only_the_enrollment_fields_it_maps(medium) -> None:
    """Without this, the snapshot would hold Canvas's whole JSON (three dicts) for every
    enrollment: at university scale over a hundred MB more at the peak of a backfill run."""
    with serve(medium) as sandbox:
        _, snapshot = fetch(sandbox)
    kept = snapshot.objects("enrollments")
    assert kept and all(type(e) is Enrollment for e in kept)
    truth = expected_semester(medium, SEMESTER)["enrollments"]
    assert {int(e.id) for e in kept} == set(truth)
    graded = [e for e in kept if e.current_score is not None]
    assert graded, "the sandbox grades its students: the scores must survive the slimming"
    for e in graded:
        assert e.current_score == truth[int(e.id)]["current_grade_number"]
