"""The Canvas client against the sandbox over real HTTP."""

import itertools
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from canvas_assets.canvas import (
    CanvasAuthError,
    CanvasError,
    CanvasNotFoundError,
    CanvasRequestError,
    CanvasResource,
)
from canvas_assets.canvas.limiter import CHAIN, FAN_OUT, BudgetLimiter

from .conftest import SANDBOX_TOKEN


def test_paginate_follows_link_next_across_pages(canvas: CanvasResource, institution) -> None:
    """Without this, only the first page of a list would be synced."""
    session = canvas.session()
    users = list(session.paginate(session.account_path("/users"), {"per_page": 7}))
    expected = {u["id"] for u in institution.users.values() if u["workflow_state"] != "deleted"}
    assert {u["id"] for u in users} == expected
    assert len(users) == len(expected)  # no page fetched twice
    assert session.stats.pages == -(-len(expected) // 7)


def test_wrapped_terms_are_unwrapped(canvas: CanvasResource, institution) -> None:
    """Without this, the terms body ({"enrollment_terms": [...]}) would be read as a list."""
    session = canvas.session()
    terms = list(session.paginate(session.account_path("/terms"), key="enrollment_terms"))
    assert {t["id"] for t in terms} == set(institution.terms)
    assert any(t["sis_term_id"] is None for t in terms)


def test_rejected_token_names_the_setting_and_hides_the_token(sandbox) -> None:
    """Without this, a bad token gives an opaque HTTP error, or leaks the token."""
    secret = "not-the-token-9f8e7d"
    session = CanvasResource(base_url=sandbox.url, api_token=secret).session()
    with pytest.raises(CanvasAuthError) as info:
        session.get(session.account_path())
    assert "CANVAS_API_TOKEN" in str(info.value)
    assert secret not in str(info.value)


def test_unknown_account_names_the_setting(sandbox) -> None:
    """Without this, a wrong account id reads as a generic 404."""
    resource = CanvasResource(base_url=sandbox.url, api_token=SANDBOX_TOKEN, account_id="999999")
    session = resource.session()
    with pytest.raises(CanvasNotFoundError, match="CANVAS_ACCOUNT_ID"):
        list(session.paginate(session.account_path("/terms"), key="enrollment_terms"))


def test_transient_5xx_are_retried(canvas: CanvasResource, sandbox) -> None:
    """Without this, one 502 from a load balancer would fail a whole semester backfill."""
    sandbox.faults.fail_next.extend([503, 502])
    session = canvas.session()
    account = session.get(session.account_path())
    assert account["id"] == sandbox.institution.root_account_id
    assert session.stats.retries == 2


def test_persistent_5xx_fail_with_a_clear_error(sandbox) -> None:
    """Without this, a broken Canvas would be retried forever or fail with no context."""
    resource = CanvasResource(base_url=sandbox.url, api_token=SANDBOX_TOKEN, max_retries=2)
    sandbox.faults.fail_next.extend([500, 500, 500, 500])
    session = resource.session()
    with pytest.raises(CanvasRequestError, match="HTTP 500"):
        session.get(session.account_path())


def test_a_fail_fast_session_overrides_the_retry_budget(sandbox) -> None:
    """Without this, the Live Events sensor's routing look-ups would use a run's full retry
    budget, and a failing Canvas would push a tick past Dagster's sensor timeout."""
    resource = CanvasResource(base_url=sandbox.url, api_token=SANDBOX_TOKEN, max_retries=5)
    sandbox.faults.fail_next.extend([500, 500, 500])
    quick = resource.session(timeout_seconds=5, max_retries=1)
    with pytest.raises(CanvasRequestError, match="HTTP 500"):
        quick.get(quick.account_path())
    # Two of the three queued failures were used (one try, one retry); the next call gets the
    # last one and then succeeds on its retry.
    assert list(sandbox.faults.fail_next) == [500]
    assert quick.get(quick.account_path())["id"]


def test_throttle_storm_is_waited_out_without_errors(
    canvas: CanvasResource, sandbox, caplog
) -> None:
    """Without this, Canvas's 403 Rate Limit Exceeded would be read as a permission error."""
    sandbox.faults.throttle_storm = True
    threading.Timer(1.0, lambda: setattr(sandbox.faults, "throttle_storm", False)).start()
    session = canvas.session(logging.getLogger("canvas-test"))
    with caplog.at_level(logging.INFO):
        account = session.get(session.account_path())
    assert account["id"] == sandbox.institution.root_account_id
    assert session.stats.throttle_waits >= 1
    assert SANDBOX_TOKEN not in caplog.text


def test_adaptive_concurrency_keeps_many_parallel_calls_under_the_bucket(sandbox) -> None:
    """Without this, a wide fan-out fills Canvas's leaky bucket and requests fail."""
    sandbox.faults.latency_seconds = 0.15
    resource = CanvasResource(base_url=sandbox.url, api_token=SANDBOX_TOKEN, max_concurrency=24)
    session = resource.session()
    course_ids = sorted(
        cid for cid, c in sandbox.institution.courses.items() if c["workflow_state"] != "deleted"
    )
    paths = [f"/courses/{course_ids[i % len(course_ids)]}/sections" for i in range(80)]
    results = session.map_concurrent(lambda p: list(session.paginate(p)), paths)
    assert len(results) == 80
    # 24 in flight would cost 1,200 units up front, twice the high-water mark: the limiter must
    # have kept the in-flight count low enough that the bucket never emptied for long.
    assert session.limiter.limit < 24
    assert session.stats.throttle_waits <= 10


def test_pagination_link_to_another_origin_is_refused_and_keeps_the_token() -> None:
    """Without this, a proxy or misconfigured Canvas that emits links to another host (or to
    plain http) would receive the API token with the next page request."""
    requests_seen: list[str] = []

    class OnePage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            requests_seen.append(self.path)
            body = json.dumps([{"id": 1}]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Link", '<http://elsewhere.invalid/api/v1/courses?page=2>; rel="next"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), OnePage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "token-that-must-stay-home"
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        session = CanvasResource(base_url=base, api_token=secret).session()
        pages = session.paginate("/courses")
        assert next(pages) == {"id": 1}
        with pytest.raises(CanvasError) as info:
            next(pages)
    finally:
        server.shutdown()
    assert "CANVAS_BASE_URL" in str(info.value) and "elsewhere.invalid" in str(info.value)
    assert secret not in str(info.value)
    assert requests_seen == ["/api/v1/courses?per_page=100"]


def test_a_request_waiting_for_a_full_limiter_sleeps_until_a_slot_is_freed() -> None:
    """Without this, the first request in line polled the clock and the limiter's lock in a
    loop while every slot was taken (and woke itself at once after each look): in a large
    fetch the client's CPU, under the GIL, was as busy as the requests, answers waited to be
    read, and fewer of the requests in flight were being served by Canvas."""
    looks = 0

    def clock() -> float:
        nonlocal looks
        looks += 1
        return time.monotonic()

    limiter = BudgetLimiter(maximum=1, reserve=150.0, clock=clock)
    held = limiter.acquire()
    waiter = threading.Thread(target=lambda: limiter.release(limiter.acquire(), 500.0))
    waiter.start()
    time.sleep(0.3)  # the window in which a polling waiter would look thousands of times
    looks_while_full = looks
    limiter.release(held, 500.0)
    waiter.join(timeout=10)
    assert not waiter.is_alive(), "the waiting request was not admitted once a slot was free"
    assert looks_while_full < 20


def test_requests_admitted_but_not_yet_sent_count_against_the_allowance() -> None:
    """Without this, requests admitted while their threads wait for the GIL (the process busy
    mapping and copying a semester) would be in no answer's allowance: the limiter would let
    one more request into Canvas's service per such request than the bucket admits, and get
    throttled."""
    limiter = BudgetLimiter(maximum=16, reserve=100.0)
    first = limiter.acquire()
    limiter.sending(first)
    limiter.release(first, 550.0)  # room for nine more at once
    assert limiter.limit == 10
    tickets = [limiter.acquire() for _ in range(4)]
    for ticket in tickets[:2]:
        limiter.sending(ticket)
    # An answer below the reserve: the limit falls to what is in flight, less the room the
    # answer lacks (one request) and less the two requests not yet sent.
    limiter.release(tickets[0], 90.0)
    assert limiter.limit == min(10, 3 + 1) - 1 - 2


def test_answers_measured_before_later_requests_arrived_never_overfill_the_bucket() -> None:
    """Without this, answers that Canvas measured before this client's later requests reached
    it (requests on the wire, or waiting for the server) read as room to spare, and so did the
    bucket's outflow draining up-front charges of requests that had in fact left Canvas's
    service (it stops at empty): the client put a twelfth or thirteenth request into Canvas's
    service now and then and was throttled, more often the farther away Canvas is."""
    ticks = itertools.count()
    limiter = BudgetLimiter(maximum=16, reserve=60.0, clock=lambda: float(next(ticks)))
    first = limiter.acquire()
    limiter.sending(first)
    limiter.release(first, 599.0)  # an empty bucket: eleven charges fit under 600

    def request_again_and_again() -> None:
        for _ in range(25):
            ticket = limiter.acquire()
            limiter.sending(ticket)
            time.sleep(0.001)
            # Every answer claims the bucket empty, as if no other request were in service,
            # and every look at the clock is a second later: ten units drained each time.
            limiter.release(ticket, 599.0, cost=0.01)

    workers = [threading.Thread(target=request_again_and_again) for _ in range(20)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers)
    assert limiter.limit > 11, "the samples alone should have raised the limit"
    assert limiter.peak_in_flight == 11  # 11 charges of 50 and the reserve of 60: 610 > 600


def test_a_chain_keeps_its_slot_for_its_next_page() -> None:
    """Without this, each page of a chain (the course list, the two ends of the account user
    list) gave its slot to fan-out work waiting for one, and the next page waited for another
    answer: at university size that wait, page after page, made the user list's chain seconds
    longer than Canvas needs."""
    limiter = BudgetLimiter(maximum=1, reserve=60.0)
    page = limiter.acquire(CHAIN)
    limiter.sending(page)
    fan_out: list = []
    waiter = threading.Thread(target=lambda: fan_out.append(limiter.acquire(FAN_OUT)))
    waiter.start()
    limiter.pass_on(page, 599.0, 0.1)  # page one answered; its list links a next page
    time.sleep(0.2)
    assert not fan_out, "the fan-out request took the chain's slot"
    limiter.sending(page)  # the next page goes at once, on the same slot
    limiter.release(page, 599.0, 0.1)  # the last page
    waiter.join(timeout=10)
    assert fan_out and limiter.in_flight == 1


def test_a_list_left_before_its_end_frees_the_slot_kept_for_its_next_page(sandbox) -> None:
    """Without this, a list abandoned after its first page (the people found before either end
    of the user list was reached) kept a slot and an up-front charge for a page never asked
    for, and the rest of the fetch ran one request short for good."""
    session = CanvasResource(base_url=sandbox.url, api_token=SANDBOX_TOKEN).session()
    pages = session.pages(session.account_path("/users"), {"per_page": 10})
    assert len(next(pages)) == 10
    assert session.limiter.in_flight == 1  # kept for page two
    pages.close()
    assert session.limiter.in_flight == 0
    assert session.limiter.allowance.now() >= 500.0
