"""Semester backfills end to end: sandbox over HTTP → pandera → real PostgreSQL."""

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from psycopg import sql

from .backfills import (
    NAMESPACE,
    backfill,
    materialization_metadata,
    real_semesters,
    table_snapshot,
    terms,
)
from .truth import expected_semester, semester_of, warehouse_semester

COURSES_KEY = NAMESPACE.key("courses")


def test_semester_backfill_equals_canvas_row_for_row(
    canvas, warehouse, db, institution, instance
) -> None:
    """Without this, any mapping, pagination or fan-out bug would silently corrupt the tables."""
    semester = real_semesters(institution)[0]
    result = backfill(canvas, warehouse, instance, semester)
    assert result.success
    expected = expected_semester(institution, semester)
    actual = warehouse_semester(db, warehouse.table_schema(), semester)
    for table in expected:
        assert actual[table] == expected[table], table
    assert all(expected[table] for table in expected)  # the semester is not trivially empty
    metadata = materialization_metadata(result, COURSES_KEY)
    assert metadata["dagster/row_count"] == len(expected["courses"])
    assert metadata["rows_inserted"] == len(expected["courses"])
    assert metadata["canvas_requests_run_total"] >= 1 + 2 * len(expected["courses"])
    status = db.execute(
        sql.SQL(
            "SELECT status, started_at IS NOT NULL, last_sync_completed_at IS NOT NULL "
            "FROM {}.semester_sync_status WHERE semester = %s"
        ).format(sql.Identifier(warehouse.table_schema())),
        (semester,),
    ).fetchone()
    assert status == ("synced", True, True)


def test_second_backfill_changes_nothing(canvas, warehouse, db, institution, instance) -> None:
    """Without this, every re-run would rewrite rows and bump their timestamps."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    before = table_snapshot(db, warehouse.table_schema())
    again = backfill(canvas, warehouse, instance, semester)
    assert again.success
    assert table_snapshot(db, warehouse.table_schema()) == before
    for key in (COURSES_KEY,):
        metadata = materialization_metadata(again, key)
        assert (metadata["rows_inserted"], metadata["rows_updated"], metadata["rows_removed"]) == (
            0,
            0,
            0,
        )


def test_course_deleted_in_canvas_is_marked_deleted(
    canvas, warehouse, db, institution, instance
) -> None:
    """Without this, courses deleted in Canvas would stay active in the warehouse forever."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    schema = warehouse.table_schema()
    victim = next(iter(expected_semester(institution, semester)["courses"]))
    with institution.lock:
        institution.courses[victim]["workflow_state"] = "deleted"
    assert backfill(canvas, warehouse, instance, semester).success

    row = db.execute(
        sql.SQL(
            "SELECT deleted_at IS NOT NULL, name FROM {}.courses WHERE semester = %s "
            "AND institution_id = %s"
        ).format(sql.Identifier(schema)),
        (semester, victim),
    ).fetchone()
    assert row == (True, institution.courses[victim]["name"])  # kept, marked deleted
    active = warehouse_semester(db, schema, semester)
    expected = expected_semester(institution, semester)
    for table in expected:
        assert active[table] == expected[table], table
    assert victim not in {s["course_id"] for s in active["sections"].values()}


def test_invalid_semester_writes_nothing_and_keeps_previous_data(
    canvas, warehouse, db, institution, instance
) -> None:
    """Without this, one bad Canvas row could half-write a semester or wipe good data."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    before = table_snapshot(db, warehouse.table_schema())
    expected = expected_semester(institution, semester)
    broken = next(iter(expected["enrollments"]))
    with institution.lock:
        institution.enrollments[broken]["course_section_id"] = 987654321
        # Also a change that a half-write would let through.
        first_course = next(iter(expected["courses"]))
        institution.courses[first_course]["name"] = "Renamed while broken"

    result = backfill(canvas, warehouse, instance, semester)
    assert not result.success
    failure = result.failure_data_for_node("canvas_semester_tables")
    message = failure.error.message if failure and failure.error else ""
    assert "references canvas/sections" in message
    assert "987654321" in message
    assert table_snapshot(db, warehouse.table_schema()) == before
    checks = {
        (ev.event_specific_data.asset_key, ev.event_specific_data.passed)
        for ev in result.all_events
        if ev.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert (dg.AssetKey(["canvas", "enrollments"]), False) in checks
    assert (dg.AssetKey(["canvas", "courses"]), True) in checks
    status = db.execute(
        sql.SQL(
            "SELECT status, last_error FROM {}.semester_sync_status WHERE semester = %s"
        ).format(sql.Identifier(warehouse.table_schema())),
        (semester,),
    ).fetchone()
    assert status[0] == "failed" and "references canvas/sections" in status[1]


def test_semesters_backfilled_together_stay_separate(
    canvas, warehouse, db, institution, instance
) -> None:
    """Without this, re-syncing one semester could delete or overwrite another's rows."""
    first, second = real_semesters(institution)[:2]

    def backfill_alone(semester: str) -> bool:
        # Its own instance: the in-memory test instance is not thread safe.
        with dg.DagsterInstance.ephemeral() as own:
            return backfill(canvas, warehouse, own, semester).success

    # Launched together, as a multi-semester backfill from the UI does.
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert all(pool.map(backfill_alone, [first, second]))
    schema = warehouse.table_schema()
    second_before = warehouse_semester(db, schema, second, include_deleted=True)
    # Remove a course of the first semester only, then re-sync the first semester.
    victim = next(iter(expected_semester(institution, first)["courses"]))
    with institution.lock:
        institution.courses[victim]["workflow_state"] = "deleted"
    assert backfill(canvas, warehouse, instance, first).success
    assert warehouse_semester(db, schema, second, include_deleted=True) == second_before
    for semester in (first, second):
        expected = expected_semester(institution, semester)
        actual = warehouse_semester(db, schema, semester)
        for table in expected:
            assert actual[table] == expected[table], (semester, table)


def test_terms_asset_lists_every_term_with_its_semester_key(
    canvas, warehouse, db, institution, instance
) -> None:
    """Without this, the default term (no SIS id) would have no usable partition key."""
    result = dg.materialize(
        [terms], resources={"canvas": canvas, "warehouse": warehouse}, instance=instance
    )
    assert result.success
    rows = db.execute(
        sql.SQL("SELECT institution_id, code, semester FROM {}.terms ORDER BY 1").format(
            sql.Identifier(warehouse.table_schema())
        )
    ).fetchall()
    expected = sorted(
        (t["id"], t["sis_term_id"], semester_of(t)) for t in institution.terms.values()
    )
    assert rows == expected
    assert any(semester.startswith("term-") for _, _, semester in rows)


def test_unknown_semester_fails_with_a_clear_message(canvas, warehouse, instance) -> None:
    """Without this, a partition whose term vanished from Canvas would fail obscurely."""
    result = backfill(canvas, warehouse, instance, "1999XX")
    assert not result.success
    failure = result.failure_data_for_node("canvas_semester_tables")
    assert "no enrollment term for semester '1999XX'" in failure.error.message


def test_token_never_reaches_run_logs_or_metadata(canvas, warehouse, institution, instance) -> None:
    """Without this, the Canvas token could leak to everyone who can read the Dagster UI."""
    semester = real_semesters(institution)[0]
    result = backfill(canvas, warehouse, instance, semester)
    assert result.success
    records = instance.get_records_for_run(result.run_id).records
    assert records
    assert all(canvas.api_token not in str(record.event_log_entry) for record in records)
