"""A backfill's enrollments are mapped, checked and upserted while the fetch goes on
(``backfill.staging``): against the sandbox over HTTP and a real PostgreSQL, with chunks small
enough that a semester spans many of them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from canvas_assets.backfill import staging
from canvas_assets.backfill.semester import backfill_semester
from canvas_assets.canvas import CanvasResource, fetch
from canvas_assets.canvas.fetch import fetch_semester, semester_term
from canvas_assets.tables import ChunkedValidation, mapping
from canvas_assets.tables.registry import ENROLLMENTS
from canvas_assets.warehouse.writes import try_lock_semester
from canvas_sandbox import SandboxServer, generate_institution

from .backfills import real_semesters, table_snapshot
from .conftest import SANDBOX_TOKEN
from .truth import expected_semester, warehouse_semester


def staged_tables_left(conn: psycopg.Connection) -> list[str]:
    """Temp tables named staged_* of any session (pg_class lists every session's)."""
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relpersistence = 't' AND relname LIKE 'staged\\_%'"
    ).fetchall()
    return [name for (name,) in rows]


@contextmanager
def slow_canvas(institution) -> Iterator[tuple[SandboxServer, CanvasResource]]:
    """The sandbox answering in 50 ms a request: a semester's fetch lasts long enough that its
    chunks are written at different points of it."""
    with SandboxServer(
        institution, token=SANDBOX_TOKEN, latency_seconds=0.05, keep_alive=True
    ) as server:
        yield server, CanvasResource(base_url=server.url, api_token=SANDBOX_TOKEN)


def run_backfill(canvas: CanvasResource, warehouse, semester: str):
    with warehouse.connect() as conn, canvas.session() as session:
        result = backfill_semester(
            conn, warehouse.table_schema(), session, semester, datetime.now(UTC)
        )
        return result, session.stats.requests


def test_enrollments_are_written_while_the_fetch_goes_on_and_committed_at_its_end(
    warehouse, db, monkeypatch
) -> None:
    """Without this, every enrollment of a semester would wait for Canvas's last answer to be
    mapped, checked and upserted (seconds at a university); chunks written along the way could
    lose, repeat or alter rows, show before every check has passed, or let a Live Events apply
    write the semester in the middle of the backfill."""
    institution = generate_institution("medium", seed=2, scale=0.5)
    semester = real_semesters(institution)[-1]
    schema = warehouse.table_schema()
    monkeypatch.setattr(staging, "STAGE_ROWS", 200)
    seen: list[tuple[int, int, bool]] = []  # at each chunk: requests, rows others see, lock free
    upsert_incoming = staging.upsert_incoming

    def watched(conn, *args, **kwargs):
        with warehouse.connect() as other:
            (visible,) = other.execute(
                sql.SQL("SELECT count(*) FROM {}.enrollments").format(sql.Identifier(schema))
            ).fetchone()
            with other.transaction():
                free = try_lock_semester(other, schema, semester)
        seen.append((server.request_count, visible, free))
        return upsert_incoming(conn, *args, **kwargs)

    monkeypatch.setattr(staging, "upsert_incoming", watched)
    with slow_canvas(institution) as (server, canvas):
        result, requests = run_backfill(canvas, warehouse, semester)
    assert result.report.ok, result.report.message(semester)
    expected = expected_semester(institution, semester)
    assert len(seen) >= len(expected["enrollments"]) // 200
    assert seen[0][0] < 0.9 * requests  # the first chunk went in well before the end
    assert {(visible, free) for _, visible, free in seen} == {(0, False)}
    assert result.rows_mapped["enrollments"] == len(expected["enrollments"])
    assert result.counts["enrollments"].inserted == len(expected["enrollments"])
    actual = warehouse_semester(db, schema, semester)
    for table in expected:
        assert actual[table] == expected[table], table
    assert staged_tables_left(db) == []


def test_a_bad_row_in_a_late_chunk_writes_nothing_and_is_reported_at_its_row(
    canvas, warehouse, db, institution, monkeypatch
) -> None:
    """Without this, chunks copied before a bad one arrived could reach the semester's tables,
    the failure would name a row number counted within its chunk, or the staging table would
    stay behind in the session."""
    semester = real_semesters(institution)[0]
    assert run_backfill(canvas, warehouse, semester)[0].report.ok
    before = table_snapshot(db, warehouse.table_schema())
    with canvas.session() as session:
        term = semester_term(session, semester)
        order = fetch_semester(session, term, semester, datetime.now(UTC)).objects("enrollments")
    row = len(order) - 3  # in the last chunk of STAGE_ROWS = 25
    victim = int(order[row].id)
    with institution.lock:
        institution.enrollments[victim]["total_activity_time"] = -5
    monkeypatch.setattr(staging, "STAGE_ROWS", 25)

    result, _ = run_backfill(canvas, warehouse, semester)
    assert not result.report.ok
    cases = result.report.failures["enrollments"]
    bad = cases[cases["column"] == "total_active_time"]
    assert bad["index"].tolist() == [row] and bad["failure_case"].tolist() == [-5]
    assert row >= 2 * 25
    assert table_snapshot(db, warehouse.table_schema()) == before
    assert staged_tables_left(db) == []


def test_an_enrollment_read_twice_is_reported_by_the_checks_and_writes_nothing(
    canvas, warehouse, db, institution, monkeypatch
) -> None:
    """Without this, an enrollment Canvas listed twice would make Postgres refuse the staged
    upsert (which now runs before the checks have finished, in the semester's transaction):
    the backfill would fail with a database error instead of the check that names the id, or
    the refused upsert would leave the transaction unusable."""
    semester = real_semesters(institution)[0]  # a first backfill: the twin is no update
    before = table_snapshot(db, warehouse.table_schema())
    read_list = fetch._per_course_list

    def listed_twice(session, source, course) -> list:
        objects = read_list(session, source, course)
        return objects + objects[:1] if source is ENROLLMENTS.source else objects

    monkeypatch.setattr(fetch, "_per_course_list", listed_twice)
    result, _ = run_backfill(canvas, warehouse, semester)
    assert not result.report.ok
    assert "field_uniqueness" in set(result.report.failures["enrollments"]["check"])
    assert table_snapshot(db, warehouse.table_schema()) == before
    assert staged_tables_left(db) == []


def enrollment_row(enrollment_id: int, **changes: object) -> dict:
    """A valid enrollments row of semester 2026SP (course 1, section 2, user 3)."""
    return {
        "semester": "2026SP", "institution_id": enrollment_id, "course_id": 1,
        "section_id": 2, "user_id": 3, "role": "StudentEnrollment",
        "enrollment_status": "active", "current_grade_text": None,
        "current_grade_number": None, "final_grade_text": None, "final_grade_number": None,
        "last_lms_activity": None, "last_attended_date": None, "total_active_time": None,
    } | changes  # fmt: skip


@pytest.mark.parametrize(
    ("second_chunk", "check"),
    [
        ([enrollment_row(10)], "field_uniqueness"),
        ([enrollment_row(11, user_id=99)], "references canvas/users"),
    ],
)
def test_the_whole_partitions_checks_see_across_chunks(second_chunk, check) -> None:
    """Without this, an enrollment id repeated in two chunks, or a reference to a person the
    semester does not hold, would pass: each chunk alone looks valid."""
    validation = ChunkedValidation(ENROLLMENTS, "2026SP", None)
    for chunk in ([enrollment_row(10), enrollment_row(12)], second_chunk):
        assert validation.validate(pd.DataFrame(chunk)) is not None
    raw = {
        table: pd.DataFrame({"institution_id": [institution_id]})
        for table, institution_id in (("courses", 1), ("sections", 2), ("users", 3))
    }
    cases = validation.finish(raw)
    assert cases is not None
    assert set(cases["check"]) == {check}
    assert 2 in set(cases["index"])  # the second chunk's row, numbered on from the first's


@pytest.mark.parametrize(("refused_table", "refused_call"), [("enrollments", 2), ("users", 1)])
def test_an_upsert_postgres_refused_is_written_whole_once_the_checks_pass(
    canvas, warehouse, db, institution, monkeypatch, refused_table, refused_call
) -> None:
    """Without this, rows whose upsert Postgres refused (a conflict the checks do not see: an
    enrollments chunk during the fetch, or the people's one upsert after it) would be missing
    from the semester, the backfill would fail though every check passed, or what was upserted
    before the refusal, in that table or the other, would go uncounted."""
    semester = real_semesters(institution)[0]
    monkeypatch.setattr(staging, "STAGE_ROWS", 25)
    upsert_incoming, calls = staging.upsert_incoming, []

    def refused_once(conn, schema, table, *args, **kwargs):
        if table == refused_table:
            calls.append(args[0])
            if len(calls) == refused_call:
                raise psycopg.errors.SerializationFailure("refused")
        return upsert_incoming(conn, schema, table, *args, **kwargs)

    monkeypatch.setattr(staging, "upsert_incoming", refused_once)
    result, _ = run_backfill(canvas, warehouse, semester)
    assert result.report.ok, result.report.message(semester)
    assert len(calls) == refused_call  # none after the refusal: the whole is, after the checks
    expected = expected_semester(institution, semester)
    assert warehouse_semester(db, warehouse.table_schema(), semester) == expected
    for table in ("enrollments", "users"):
        assert result.counts[table].rows == len(expected[table]), table
        assert result.counts[table].inserted == len(expected[table]), table


def test_the_people_are_checked_and_copied_as_the_enrollments_name_them(
    warehouse, db, monkeypatch
) -> None:
    """Without this, every person enrolled would wait for Canvas's last answer to be mapped,
    checked and copied (a quarter of a second at medium x16), or a person could be copied twice,
    missed, or written before the checks passed."""
    institution = generate_institution("medium", seed=2, scale=0.5)
    semester = real_semesters(institution)[-1]
    monkeypatch.setattr(staging, "STAGE_ROWS", 100)
    copied: list[tuple[int, int]] = []  # requests so far, people copied
    copy_rows = staging.copy_rows

    def watched(conn, temp, columns, rows) -> None:
        rows = list(rows)
        if temp.as_string(conn) == '"staged_users"':
            copied.append((server.request_count, len(rows)))
        copy_rows(conn, temp, columns, rows)

    monkeypatch.setattr(staging, "copy_rows", watched)
    with slow_canvas(institution) as (server, canvas):
        result, requests = run_backfill(canvas, warehouse, semester)
    assert result.report.ok, result.report.message(semester)
    expected = expected_semester(institution, semester)
    assert copied[0][0] < 0.9 * requests  # the first people went in well before the end
    assert sum(rows for _, rows in copied) == len(expected["users"])
    assert result.counts["users"].inserted == len(expected["users"])
    assert warehouse_semester(db, warehouse.table_schema(), semester) == expected


def test_a_second_backfill_of_a_semester_waits_for_the_first_to_commit(
    canvas, warehouse, db, institution
) -> None:
    """Without this, a second backfill of a semester would write beside the first's
    uncommitted rows, or wait for its lock inside Postgres, where stopping its run does not
    reach it; or its logged fetch would count the wait as Canvas's time."""
    semester = real_semesters(institution)[0]
    schema = warehouse.table_schema()
    count = sql.SQL("SELECT count(*) FROM {}.enrollments").format(sql.Identifier(schema))
    outcome: list = []
    with warehouse.connect() as first:
        with first.transaction():
            assert try_lock_semester(first, schema, semester)  # a backfill of it is writing
            second = threading.Thread(
                target=lambda: outcome.append(run_backfill(canvas, warehouse, semester)[0])
            )
            second.start()
            second.join(timeout=3.0)
            assert second.is_alive() and db.execute(count).fetchone() == (0,)
            waiting_in_postgres = db.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            assert waiting_in_postgres == (0,)
        second.join(timeout=60.0)  # the first committed: the second takes the semester
    assert not second.is_alive() and outcome[0].report.ok
    seconds = outcome[0].seconds
    assert seconds["waited"] >= 3.0 > seconds["fetch"]  # the wait is not the fetch's
    expected = expected_semester(institution, semester)
    assert warehouse_semester(db, schema, semester) == expected


def test_the_whole_partitions_checks_number_rows_past_a_chunk_that_failed() -> None:
    """Without this, a repeated id found after a chunk that failed its row checks would be
    reported at a row number counted without that chunk, pointing at the wrong enrollment."""
    validation = ChunkedValidation(ENROLLMENTS, "2026SP", None)
    failing = [enrollment_row(1, total_active_time=-5), enrollment_row(2)]
    assert validation.validate(pd.DataFrame(failing)) is None
    for chunk in ([enrollment_row(10), enrollment_row(12)], [enrollment_row(10)]):
        assert validation.validate(pd.DataFrame(chunk)) is not None
    raw = {
        table: pd.DataFrame({"institution_id": [institution_id]})
        for table, institution_id in (("courses", 1), ("sections", 2), ("users", 3))
    }
    cases = validation.finish(raw)
    repeated = cases[cases["check"] == "field_uniqueness"]
    assert set(repeated["index"]) == {2, 4}  # the rows of id 10, counted across every chunk


def test_a_chunk_of_people_that_fails_its_checks_is_the_one_failure_reported(
    canvas, warehouse, db, institution, monkeypatch
) -> None:
    """Without this, one bad person would fail their whole chunk of people, and every
    enrollment of everyone else in that chunk would be reported too, as a reference to a person
    the semester does not hold: a flood of false failures burying the real one."""
    semester = real_semesters(institution)[0]
    monkeypatch.setattr(staging, "STAGE_ROWS", 25)
    user_row, bad = mapping.user_row, []

    def one_bad(user: dict, semester_key: str) -> dict:
        row = user_row(user, semester_key)
        if not bad:
            bad.append(row["institution_id"])
            row["source_type"] = "CRM"
        return row

    monkeypatch.setattr(mapping, "user_row", one_bad)
    result, _ = run_backfill(canvas, warehouse, semester)
    assert not result.report.ok
    assert set(result.report.failures) == {"users"}
    assert result.report.failures["users"]["failure_case"].tolist() == ["CRM"]
