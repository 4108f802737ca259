"""Scoped developer keys, as institutions that require them configure them: with the README's
scopes and "Allow Include Parameters" everything works; without includes a run fails and writes
nothing (never empty values); a missing scope is named by the run and by `canvas check`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from canvas_assets.canvas.scopes import SCOPES
from canvas_assets.commands.cli import main as cli_main
from canvas_assets.live_events.passes import apply_institution
from canvas_assets.live_events.store import pending_semesters
from canvas_sandbox import rename_course

from .backfills import backfill, real_semesters
from .conftest import SANDBOX_TOKEN
from .oauth import authorise, card, developer_key_env, land_event, oauth_canvas, sandbox_with_key
from .truth import expected_semester, first_course, warehouse_semester

SECTIONS_SCOPE = "url:GET|/api/v1/courses/:course_id/sections"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def scoped(institution):
    """A sandbox serving a key scoped to exactly the project's scopes, includes not allowed."""
    server = sandbox_with_key(institution, scopes=SCOPES, allow_includes=False)
    yield server
    server.stop()


def _failure(result) -> str:
    failure = result.failure_data_for_node("canvas_semester_tables")
    return failure.error.message if failure and failure.error else ""


def test_a_key_scoped_to_the_readme_scopes_with_includes_backfills(
    scoped, warehouse, db, instance
) -> None:
    """Without this, the README's scope list could miss a route the backfill reads, and an
    institution that requires scoped keys would find out from a failed run."""
    scoped.oauth.key.allow_includes = True
    canvas = oauth_canvas(scoped, warehouse, authorise(scoped))
    semester = real_semesters(scoped.institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    expected = expected_semester(scoped.institution, semester)
    assert warehouse_semester(db, warehouse.table_schema(), semester) == expected


def test_a_scoped_key_without_includes_fails_the_backfill_and_writes_nothing(
    scoped, warehouse, db, instance
) -> None:
    """Without this, Canvas dropping include[] (a scoped key without "Allow Include
    Parameters") gave a successful run that stored student counts, departments, schools and
    instructors' e-mails as empty, silently."""
    canvas = oauth_canvas(scoped, warehouse, authorise(scoped))
    semester = real_semesters(scoped.institution)[0]
    result = backfill(canvas, warehouse, instance, semester)
    assert not result.success
    message = _failure(result)
    assert "include[]" in message and '"Allow Include Parameters"' in message
    assert "account_name" in message and "total_students" in message
    rows = warehouse_semester(db, warehouse.table_schema(), semester, include_deleted=True)
    assert rows == {table: {} for table in rows}
    status = card(warehouse, semester)
    assert status["status"] == "failed" and "Allow Include Parameters" in status["last_error"]


def test_a_live_events_apply_with_includes_withheld_fails_and_writes_nothing(
    scoped, warehouse, db, instance
) -> None:
    """Without this, an admin switching "Allow Include Parameters" off would make every apply
    overwrite the courses it re-reads with empty counts and departments."""
    scoped.oauth.key.allow_includes = True
    canvas = oauth_canvas(scoped, warehouse, authorise(scoped))
    semester = real_semesters(scoped.institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    schema = warehouse.table_schema()
    before = warehouse_semester(db, schema, semester)
    scoped.oauth.key.allow_includes = False
    course = first_course(scoped.institution, semester)
    land_event(warehouse, rename_course(scoped.institution, course, "Renamed, includes off"))
    with canvas.session() as session:
        failed = apply_institution(warehouse.connect, schema, session, (), {semester})
    assert "Allow Include Parameters" in (failed.failure() or "")
    assert warehouse_semester(db, schema, semester) == before
    assert set(pending_semesters(db, schema)) == {semester}  # the event waits
    assert "Allow Include Parameters" in card(warehouse, semester)["last_error"]
    scoped.oauth.key.allow_includes = True  # the admin puts it back: the event applies
    with canvas.session() as session:
        done = apply_institution(warehouse.connect, schema, session, (), {semester})
    assert done.failure() is None
    assert warehouse_semester(db, schema, semester)["courses"][course]["name"] == (
        "Renamed, includes off"
    )


def test_a_route_outside_the_key_s_scopes_fails_the_run_naming_the_scope(
    institution, warehouse, db, instance
) -> None:
    """Without this, a scope missing from the key read as "the token was rejected", and the
    admin was sent to regenerate a token that was fine."""
    scopes = tuple(scope for scope in SCOPES if scope != SECTIONS_SCOPE)
    server = sandbox_with_key(institution, scopes=scopes, allow_includes=True)
    try:
        canvas = oauth_canvas(server, warehouse, authorise(server, scopes))
        semester = real_semesters(institution)[0]
        result = backfill(canvas, warehouse, instance, semester)
    finally:
        server.stop()
    assert not result.success
    assert f"the developer key lacks the scope {SECTIONS_SCOPE}" in _failure(result)
    assert warehouse_semester(db, warehouse.table_schema(), semester)["courses"] == {}


def _check(monkeypatch, capsys, postgres_url: str, warehouse, environ: dict[str, str]):
    for name in ("CANVAS_API_TOKEN", "CANVAS_CLIENT_ID", "CANVAS_INSTITUTIONS_FILE"):
        monkeypatch.delenv(name, raising=False)
    environ = {
        "CANVAS_WAREHOUSE_URL": postgres_url,
        "CANVAS_WAREHOUSE_SCHEMA": warehouse.schema_name,
        **environ,
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    code = cli_main(["canvas", "check"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_canvas_check_passes_a_key_with_every_scope_and_includes(
    scoped, warehouse, postgres_url, monkeypatch, capsys
) -> None:
    """Without this, `canvas check` could call a route the project never uses, or miss one it
    does, and pass a key that fails at the first run."""
    scoped.oauth.key.allow_includes = True
    env = developer_key_env(scoped, authorise(scoped))
    code, output = _check(monkeypatch, capsys, postgres_url, warehouse, env)
    assert code == 0, output
    assert "authenticated as Canvas Sync Service" in output
    assert "account self reachable" in output and "includes honoured" in output
    assert "throttle headroom" in output and "FAIL" not in output
    called = {r[1].split("?")[0] for r in scoped.request_log if r[1].startswith("/api/v1/")}
    assert len(called) == 8  # each endpoint the project uses, once
    assert env["CANVAS_CLIENT_SECRET"] not in output and env["CANVAS_REFRESH_TOKEN"] not in output


def test_canvas_check_names_the_missing_scope_and_exits_1(
    institution, warehouse, postgres_url, monkeypatch, capsys
) -> None:
    """Without this, a key missing one scope passed the check, and the institution learnt of it
    from a backfill that failed halfway."""
    scopes = tuple(scope for scope in SCOPES if scope != SECTIONS_SCOPE)
    server = sandbox_with_key(institution, scopes=scopes, allow_includes=True)
    try:
        env = developer_key_env(server, authorise(server, scopes))
        code, output = _check(monkeypatch, capsys, postgres_url, warehouse, env)
    finally:
        server.stop()
    assert code == 1, output
    assert f"refused, the key lacks {SECTIONS_SCOPE}" in output
    assert re.search(r"to fix:\n +- add to the developer key's scopes .*: " + re.escape(
        SECTIONS_SCOPE), output)  # fmt: skip
    assert output.count("FAIL") == 1  # every other endpoint allowed


def test_canvas_check_names_allow_include_parameters_and_exits_1(
    scoped, warehouse, postgres_url, monkeypatch, capsys
) -> None:
    """Without this, the check passed a scoped key whose includes Canvas drops, the one
    setting that makes a backfill fail at once."""
    env = developer_key_env(scoped, authorise(scoped))
    code, output = _check(monkeypatch, capsys, postgres_url, warehouse, env)
    assert code == 1, output
    assert "includes not honoured" in output and '"Allow Include Parameters"' in output


def test_canvas_check_with_a_token(sandbox, warehouse, postgres_url, monkeypatch, capsys) -> None:
    """Without this, the check would only work for developer keys, not for the token most
    deployments have today."""
    env = {"CANVAS_BASE_URL": sandbox.url, "CANVAS_API_TOKEN": SANDBOX_TOKEN}
    code, output = _check(monkeypatch, capsys, postgres_url, warehouse, env)
    assert code == 0, output
    assert "token CANVAS_API_TOKEN" in output and SANDBOX_TOKEN not in output


def test_the_readme_lists_every_scope_the_project_needs() -> None:
    """Without this, the scope list an admin copies into the developer key could drift from
    the routes the project calls."""
    text = README.read_text(encoding="utf-8")
    listed = set(re.findall(r"url:GET\|/api/v1/[a-z_:/]+", text))
    assert listed == set(SCOPES)
