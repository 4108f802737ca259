"""A deployment that reaches Canvas with a developer key (OAuth2), against the sandbox over HTTP
and real PostgreSQL: tokens refreshed ahead of expiry and shared through the warehouse, a
rejected token re-read before it is refreshed, a revoked authorisation, and scoped keys that
refuse routes or drop includes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from canvas_assets.canvas import CanvasAuthError, CanvasReconnectError, CanvasResource
from canvas_assets.canvas.session import CanvasSession
from canvas_assets.live_events.passes import apply_institution
from canvas_assets.settings import SettingError, Settings
from canvas_assets.warehouse.tokens import read_token
from canvas_sandbox import rename_course

from .backfills import backfill, real_semesters
from .oauth import (
    AlwaysRejected,
    authorise,
    card,
    land_event,
    oauth_canvas,
    revoke,
    rotate_outside,
    sandbox_with_key,
)
from .truth import expected_semester, first_course, warehouse_semester


@pytest.fixture
def keyed(institution):
    """A sandbox serving an unscoped developer key whose tokens live a second."""
    server = sandbox_with_key(institution, token_lifetime_seconds=1)
    yield server
    server.stop()


def _stored_token(db, warehouse) -> str:
    stored = read_token(db, warehouse.table_schema())
    assert stored is not None
    return stored.access_token


@pytest.mark.slow  # a backfill slowed to outlast several one-second tokens
def test_a_backfill_outlives_several_short_lived_tokens(keyed, warehouse, db, instance) -> None:
    """Without this, a backfill longer than one token's life (an hour on Canvas, a large
    semester or a slow night) would fail halfway with 401s, or refresh on every request."""
    canvas = oauth_canvas(keyed, warehouse, authorise(keyed))
    keyed.faults.latency_seconds = 0.8  # a slow Canvas: the backfill takes several seconds
    semester = real_semesters(keyed.institution)[0]
    before, started = keyed.oauth.grants, time.monotonic()
    result = backfill(canvas, warehouse, instance, semester)
    seconds = time.monotonic() - started
    assert result.success
    schema = warehouse.table_schema()
    assert warehouse_semester(db, schema, semester) == expected_semester(
        keyed.institution, semester
    )
    grants = keyed.oauth.grants - before
    assert seconds > 3 and grants >= 3  # it did outlive several tokens
    # About one per token's life, refreshed ahead of expiry. Requests in flight when the token
    # is refreshed are rejected (Canvas drops the old token at once) and retried with the new
    # one: had any of them refreshed on its own, the grants would exceed this.
    assert grants <= seconds / 0.8 + 2, (grants, seconds)


def test_a_token_another_process_replaced_is_read_again_without_a_refresh(keyed, warehouse) -> None:
    """Without this, a process whose token another process had just refreshed would refresh
    again, invalidating the other's token in turn: processes sharing an authorisation would
    keep knocking each other out."""
    keyed.oauth.key.token_lifetime_seconds = 3600
    refresh_token = authorise(keyed)
    first = oauth_canvas(keyed, warehouse, refresh_token).session()
    second = oauth_canvas(keyed, warehouse, refresh_token).session()
    assert first.get("/users/self")["id"]
    assert second.get("/users/self")["id"]
    grants = keyed.oauth.grants
    assert grants == 2  # the authorisation's own token, then one refresh, stored and shared
    rotate_outside(keyed, refresh_token)  # both sessions' token stops working
    assert first.get("/users/self")["id"]  # rejected, still the stored one: refreshed
    assert keyed.oauth.grants == grants + 2
    keyed.request_log.clear()
    assert second.get("/users/self")["id"]  # rejected, the store has a newer one: no grant
    assert keyed.oauth.grants == grants + 2
    assert [(r[1], r[2]) for r in keyed.request_log] == [
        ("/api/v1/users/self", 401),
        ("/api/v1/users/self", 200),
    ]


def test_concurrent_rejections_of_one_token_cause_one_refresh(keyed, warehouse) -> None:
    """Without this, every request in flight when the token was replaced elsewhere would
    refresh on its own: a dozen grants, each invalidating the token of the one before."""
    keyed.oauth.key.token_lifetime_seconds = 3600
    refresh_token = authorise(keyed)
    session = oauth_canvas(keyed, warehouse, refresh_token, max_concurrency=12).session()
    assert session.get("/users/self")["id"]
    rotate_outside(keyed, refresh_token)
    grants = keyed.oauth.grants
    live = [
        c
        for c, course in keyed.institution.courses.items()
        if course["workflow_state"] != "deleted"
    ]
    courses = sorted(live)[:24]
    answers = session.map_concurrent(lambda c: session.get(f"/courses/{c}"), courses)
    assert [a["id"] for a in answers] == courses
    assert keyed.oauth.grants == grants + 1


def test_one_rejection_causes_at_most_one_refresh_and_one_retry(keyed) -> None:
    """Without this, a token Canvas keeps rejecting (a key switched off, a user suspended)
    would be refreshed and retried in a loop, each refresh costing 200 units of the throttle."""
    tokens = AlwaysRejected()
    session = CanvasSession(
        keyed.url, tokens, "self", max_concurrency=2, rate_limit_floor=150,
        timeout_seconds=10, max_retries=1, max_throttle_retries=3,
    )  # fmt: skip
    with pytest.raises(CanvasAuthError, match="rejected for the test"):
        session.get("/users/self")
    assert tokens.replacements == 1
    assert [r[2] for r in keyed.request_log] == [401, 401]


def test_a_revoked_authorisation_fails_the_run_saying_how_to_reconnect(
    keyed, warehouse, db, instance
) -> None:
    """Without this, a revoked refresh token (a user left, an admin revoked the integration)
    would fail every run with an opaque 400 or 401, and nobody would know to reconnect."""
    keyed.oauth.key.token_lifetime_seconds = 3600
    refresh_token = authorise(keyed)
    canvas = oauth_canvas(keyed, warehouse, refresh_token)
    assert canvas.session().get("/users/self")["id"]
    revoke(keyed, _stored_token(db, warehouse))
    semester = real_semesters(keyed.institution)[0]
    result = backfill(canvas, warehouse, instance, semester)
    assert not result.success
    failure = result.failure_data_for_node("canvas_semester_tables").error.message
    assert "refresh_token not found" in failure and "CANVAS_REFRESH_TOKEN" in failure
    assert "canvas-assets canvas connect" in failure
    for secret in (refresh_token, keyed.oauth.key.client_secret, *keyed.oauth.issued):
        assert secret not in failure
    assert card(warehouse, semester)["status"] == "failed"
    assert warehouse_semester(db, warehouse.table_schema(), semester)["courses"] == {}
    with pytest.raises(CanvasReconnectError):
        canvas.session().get("/users/self")


@pytest.mark.slow  # waits for the tokens to expire
def test_a_live_events_apply_after_the_token_expired(keyed, warehouse, db, instance) -> None:
    """Without this, the first apply after a quiet hour (the stored token expired) would fail,
    and Live Events would stop until someone ran a backfill."""
    canvas = oauth_canvas(keyed, warehouse, authorise(keyed))
    semester = real_semesters(keyed.institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    time.sleep(1.2)  # every token issued so far has expired
    grants = keyed.oauth.grants
    course = first_course(keyed.institution, semester)
    land_event(warehouse, rename_course(keyed.institution, course, "Renamed after an hour"))
    schema = warehouse.table_schema()
    with canvas.session() as session:
        done = apply_institution(warehouse.connect, schema, session, (), {semester})
    assert done.failure() is None and done.semesters[0].result.applied == 1
    assert keyed.oauth.grants == grants + 1  # one new token, shared by the whole apply
    rows = warehouse_semester(db, schema, semester)
    assert rows["courses"][course]["name"] == "Renamed after an hour"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CANVAS_API_TOKEN": "t", "CANVAS_CLIENT_ID": "1"},
         "CANVAS_API_TOKEN and CANVAS_CLIENT_ID, CANVAS_CLIENT_SECRET and CANVAS_REFRESH_TOKEN "
         "are both set"),
        ({"CANVAS_CLIENT_ID": "1", "CANVAS_CLIENT_SECRET": "s"},
         "CANVAS_REFRESH_TOKEN is not set: a developer key needs CANVAS_CLIENT_ID"),
        ({"CANVAS_BASE_URL": "https://school.instructure.com"},
         "set CANVAS_API_TOKEN, or CANVAS_CLIENT_ID, CANVAS_CLIENT_SECRET and "
         "CANVAS_REFRESH_TOKEN"),
    ],
)  # fmt: skip
def test_canvas_is_reached_one_way_or_the_code_location_stops(environ, message) -> None:
    """Without this, a deployment with both a token and a key would silently use one of them,
    and one with half a key would fail only at its first run, with a 401."""
    with pytest.raises(SettingError, match=message.replace("(", r"\(")):
        Settings.from_env(environ)


def test_a_developer_key_alone_configures_the_single_institution() -> None:
    """Without this, the key's variables would be read but the resources would still ask for
    CANVAS_API_TOKEN."""
    from canvas_assets.defs.canvas_oauth import OAuthCanvasResource
    from canvas_assets.defs.resources import build_resources

    environ = {"CANVAS_CLIENT_ID": "1", "CANVAS_CLIENT_SECRET": "s", "CANVAS_REFRESH_TOKEN": "r"}
    settings = Settings.from_env({"CANVAS_BASE_URL": "https://school.instructure.com", **environ})
    (single,) = settings.institutions
    assert single.developer_key and single.token_env is None
    canvas = build_resources(settings)["canvas"]
    assert isinstance(canvas, OAuthCanvasResource) and not isinstance(canvas.api_token, str)
    assert isinstance(Settings.from_env({}).institutions[0].token_env, str)
    assert not isinstance(build_resources(Settings.from_env({}))["canvas"], OAuthCanvasResource)
    assert isinstance(build_resources(Settings.from_env({}))["canvas"], CanvasResource)


@pytest.mark.slow  # two processes, each a whole backfill lasting several token lifetimes
def test_two_backfills_in_two_processes_share_one_authorisation(
    institution, warehouse, db, postgres_url
) -> None:
    """Without this, two runs at once (two semesters, or a backfill beside an apply) would each
    refresh the authorisation's one token, invalidating the other's every time: 401s, extra
    grants, failed runs."""
    sandbox = sandbox_with_key(institution, token_lifetime_seconds=2)
    try:
        refresh_token = authorise(sandbox)
        sandbox.faults.latency_seconds = 1.0  # each backfill lasts several tokens' lives
        key = sandbox.oauth.key
        semesters = real_semesters(institution)[:2]
        base = {"warehouse_url": postgres_url, "schema": warehouse.schema_name,
                "canvas_url": sandbox.url, "client_id": key.client_id,
                "client_secret": key.client_secret, "refresh_token": refresh_token}  # fmt: skip
        warehouse.migrate_once()  # the schema exists before two processes write into it
        grants = sandbox.oauth.grants
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "canvas_assets_tests.oauth_worker",
                    json.dumps({**base, "semester": semester}),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for semester in semesters
        ]
        outcomes = [worker.communicate(timeout=300) for worker in workers]
    finally:
        sandbox.stop()
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outcomes]
    assert all(r["success"] for r in reports), [
        [line for line in err.splitlines() if "canvas connect" in line][-1:] for _, err in outcomes
    ]
    for semester in semesters:
        expected = expected_semester(institution, semester)
        assert warehouse_semester(db, warehouse.table_schema(), semester) == expected
    together = min(r["ended"] for r in reports) - max(r["started"] for r in reports)
    assert together > 4  # the two ran at once, over several tokens' lives
    span = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    # One grant per token's life (refreshed at four fifths of it), shared by both processes;
    # two processes refreshing on their own would have made about twice as many.
    assert sandbox.oauth.grants - grants <= span / 1.6 + 2, (sandbox.oauth.grants - grants, span)
