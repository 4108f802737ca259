"""What the Dagster UI shows about the tables: column schemas that match the warehouse, row counts
that are the partition's rows after every write, per-partition checks, the Imported Semesters
card, and reconciliation drift."""

import json
import re

import dagster as dg

from canvas_assets.defs.apply import build_apply_job
from canvas_assets.defs.assets import build_semester_tables
from canvas_assets.defs.reporting import column_schema
from canvas_assets.live_events.land import Destinations, land_messages
from canvas_assets.live_events.route import route_pending
from canvas_assets.tables import SEMESTER_TABLES, TERMS
from canvas_sandbox import rename_course as renamed_with_event

from .backfills import NAMESPACE, SETTINGS, backfill, materialization_metadata, real_semesters
from .truth import expected_semester, first_course

APPLY_CONFIG = {"ops": {"apply_live_events": {"config": {"institutions": ["canvas"]}}}}
KEYS = {spec.name: NAMESPACE.key(spec.name) for spec in SEMESTER_TABLES}


def test_column_schemas_name_the_warehouse_types_and_element451_fields(db, warehouse) -> None:
    """Without this, the column schema shown in the Catalog could drift from the tables it
    documents (a type or a column the warehouse does not have)."""
    for spec in (TERMS, *SEMESTER_TABLES):
        actual = db.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (warehouse.table_schema(), spec.name),
        ).fetchall()
        shown = column_schema(spec)
        assert [(c.name, c.type) for c in shown.columns] == actual, spec.name
        assert all(c.description for c in shown.columns), spec.name
    courses = {c.name: c.description for c in column_schema(SEMESTER_TABLES[0]).columns}
    assert "Element451 Code" in courses["code"]
    specs = build_semester_tables(SETTINGS, NAMESPACE).specs_by_key
    metadata = specs[KEYS["enrollments"]].metadata
    assert metadata["dagster/table_name"] == "canvas.enrollments"


def test_row_count_after_an_apply_is_the_partitions_rows_not_the_write(
    canvas, warehouse, db, institution, instance
) -> None:
    """Without this, the partition page would show an apply's handful of rewritten rows as the
    semester's size (the UI said 20 where the partition held 3,914), and its pandera_schema
    result "rows_checked 1" of a 146-row partition read as a broken check."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    name = "Renamed for the row count"
    event = renamed_with_event(institution, first_course(institution, semester), name)
    schema = warehouse.table_schema()
    with warehouse.connect() as conn:
        land_messages(conn, Destinations.one_institution(schema), [("m-1", json.dumps(event))])
        route_pending(conn, schema, None, ())
    result = build_apply_job([NAMESPACE]).execute_in_process(
        run_config=APPLY_CONFIG,
        resources={"canvas": canvas, "warehouse": warehouse},
        instance=instance,
    )
    assert result.success
    expected = expected_semester(institution, semester)
    for table, key in KEYS.items():
        metadata = materialization_metadata(result, key)
        assert metadata["dagster/row_count"] == len(expected[table]), table
    courses = materialization_metadata(result, KEYS["courses"])
    assert courses["rows_written"] == 1 and courses["rows_updated"] == 1
    assert "nan" not in courses["preview"]
    records = instance.fetch_materializations(KEYS["courses"], limit=1).records
    assert records[0].partition_key == semester
    (check,) = [
        event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
        and event.event_specific_data.asset_key == KEYS["courses"]
    ]
    assert check.metadata["rows_checked"].value == 1
    assert check.metadata["covered"].value == "1 course re-read by a Live Events apply"
    assert check.description == "1 row checked: 1 course re-read by a Live Events apply"


def test_pandera_results_are_per_partition_and_show_the_failing_rows(
    canvas, warehouse, institution, instance
) -> None:
    """Without this, the check's history would mix semesters (the rows-checked plot jumped
    between partitions) and a failure would not show which rows broke it."""
    semester = real_semesters(institution)[0]
    broken = next(iter(expected_semester(institution, semester)["enrollments"]))
    with institution.lock:
        institution.enrollments[broken]["course_section_id"] = 987654321
    result = backfill(canvas, warehouse, instance, semester)
    assert not result.success
    evaluations = {
        ev.event_specific_data.asset_key: ev.event_specific_data
        for ev in result.all_events
        if ev.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    failed = evaluations[KEYS["enrollments"]]
    assert not failed.passed and failed.partition == semester
    assert failed.blocking
    rows = failed.metadata["failing_rows"].value
    assert "987654321" in rows and "references canvas/sections" in rows
    assert evaluations[KEYS["courses"]].passed


def test_every_backfill_refreshes_the_imported_semesters_card(
    canvas, warehouse, institution, instance
) -> None:
    """Without this, the Imported Semesters card would live only in PostgreSQL, out of sight
    of users who work in the Dagster UI."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    key = NAMESPACE.key("imported_semesters")
    record = instance.fetch_materializations(key, limit=1).records[0]
    metadata = record.asset_materialization.metadata
    rows = {r.data["semester"]: r.data for r in metadata["imported_semesters"].value.records}
    assert rows[semester]["status"] == "synced"
    assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d", rows[semester]["synced"])
    assert metadata["semesters_synced"].value == 1


def test_reconciliation_reports_what_the_event_stream_missed(
    canvas, warehouse, institution, instance
) -> None:
    """Without this, users could not see how much the Live Events stream misses: the nightly
    re-read heals it silently."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    course_id = next(iter(expected_semester(institution, semester)["courses"]))
    with institution.lock:  # a change no Live Event announces
        institution.courses[course_id]["name"] = "Changed without an event"
    result = dg.materialize(
        [build_semester_tables(SETTINGS, NAMESPACE)],
        partition_key=semester,
        resources={"canvas": canvas, "warehouse": warehouse},
        instance=instance,
        tags={"canvas-assets/source": "reconciliation"},
    )
    assert result.success
    assert materialization_metadata(result, KEYS["courses"])["drift_rows"] == 1
    assert materialization_metadata(result, KEYS["enrollments"])["drift_rows"] == 0


def test_partition_descriptions_explain_partitioning() -> None:
    """Without this, a new user could not tell from the asset page what a partition is."""
    specs = build_semester_tables(SETTINGS, NAMESPACE).specs_by_key
    assert "Partitioned by semester" in specs[KEYS["courses"]].description
    assert specs[KEYS["users"]].owners == ["team:data-engineering"]


def test_each_table_reports_the_canvas_requests_that_read_it(
    canvas, warehouse, institution, instance, sandbox
) -> None:
    """Without this, every table showed the run's total request count, so nobody could see
    which reads cost the API budget (sections and enrollments are a request per course)."""
    semester = real_semesters(institution)[0]
    before = sandbox.request_count
    result = backfill(canvas, warehouse, instance, semester)
    assert result.success
    courses = len(expected_semester(institution, semester)["courses"])
    by_table = {t: materialization_metadata(result, key) for t, key in KEYS.items()}
    assert by_table["sections"]["canvas_requests"] == courses  # one page each in `small`
    assert by_table["enrollments"]["canvas_requests"] == courses
    assert by_table["courses"]["canvas_requests"] >= 1
    assert by_table["users"]["canvas_requests"] >= 1
    total = by_table["courses"]["canvas_requests_run_total"]
    assert total == sandbox.request_count - before  # every request the sandbox served
    # The terms look-up that finds the semester is the only request no table claims.
    assert total - sum(m["canvas_requests"] for m in by_table.values()) == 1
