"""The table registry and the event table are the single places to extend: the recipes in
ARCHITECTURE.md ("how to add a table", "how to add an event type"), exercised end to end."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandera.pandas as pa
from pandera.typing import Series
from psycopg import sql

from canvas_assets.defs.assets import build_semester_tables
from canvas_assets.live_events import parse
from canvas_assets.live_events.land import Destinations, land_messages
from canvas_assets.live_events.route import route_pending
from canvas_assets.tables import SEMESTER_TABLES, TERMS, PerCourse, SemesterSnapshot, TableSpec
from canvas_assets.tables.columns import columns as model_columns
from canvas_assets.tables.models import Strict

from .backfills import NAMESPACE, SETTINGS, backfill, real_semesters
from .truth import expected_semester


class SectionNameFrame(Strict):
    semester: Series[str]
    institution_id: Series[int] = pa.Field(unique=True, gt=0)
    course_id: Series[int] = pa.Field(gt=0)
    name: Series[str]


def section_name_rows(snapshot: SemesterSnapshot) -> list[dict]:
    return [
        {
            "semester": snapshot.semester,
            "institution_id": int(s["id"]),
            "course_id": int(s["course_id"]),
            "name": s["name"],
        }
        for s in snapshot.objects("section_names")
    ]


# A throwaway table with its own per-course Canvas read: one declaration...
SECTION_NAMES = TableSpec(
    name="section_names",
    model=SectionNameFrame,
    rows=section_name_rows,
    source=PerCourse("/courses/{course_id}/sections"),
    course_column="course_id",
    references={"course_id": "courses"},
    upstream="courses",
    description="Section names per semester (a test table).",
)
# ...and one migration.
SECTION_NAMES_DDL = """
CREATE TABLE {schema}.section_names (
    semester text NOT NULL,
    institution_id bigint NOT NULL,
    course_id bigint NOT NULL,
    name text NOT NULL,
    source_updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (semester, institution_id)
)
"""


def test_a_table_declared_in_the_registry_is_fetched_validated_and_written(
    canvas, warehouse, db, institution
) -> None:
    """Without this, adding a table would need edits beyond one declaration and one migration:
    the fetch plan, validation, the write and the asset would each have their own table list."""
    schema = sql.Identifier(warehouse.table_schema())
    db.execute(SECTION_NAMES_DDL.replace("{schema}", schema.as_string(db)).encode())
    tables = (*SEMESTER_TABLES, SECTION_NAMES)
    assets = build_semester_tables(SETTINGS, NAMESPACE, tables)
    assert dg.AssetKey(["canvas", "section_names"]) in assets.keys
    semester = real_semesters(institution)[0]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("semester", [semester])
        result = dg.materialize(
            [assets],
            partition_key=semester,
            resources={"canvas": canvas, "warehouse": warehouse},
            instance=instance,
        )
    assert result.success
    rows = db.execute(
        sql.SQL(
            "SELECT institution_id, course_id, name FROM {}.section_names "
            "WHERE semester = %s AND deleted_at IS NULL"
        ).format(schema),
        (semester,),
    ).fetchall()
    expected = expected_semester(institution, semester)["sections"]
    assert {r[0]: (r[1], r[2]) for r in rows} == {
        sid: (s["course_id"], s["name"]) for sid, s in expected.items()
    }
    checks = {
        ev.event_specific_data.asset_key.to_user_string()
        for ev in result.all_events
        if ev.event_type_value == "ASSET_CHECK_EVALUATION" and ev.event_specific_data.passed
    }
    assert "canvas/section_names" in checks


def test_migrations_create_every_registered_table_with_the_models_columns(db, warehouse) -> None:
    """Without this, a model and its migration could drift apart: a column validated but never
    stored, or a stored column nothing fills."""
    for spec in (TERMS, *SEMESTER_TABLES):
        columns = [
            row[0]
            for row in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s ORDER BY ordinal_position",
                (warehouse.table_schema(), spec.name),
            )
        ]
        assert columns == [*model_columns(spec.model), "source_updated_at", "deleted_at"], spec.name


def test_an_event_type_added_to_the_event_table_is_landed_and_routed(
    canvas, warehouse, db, institution, instance, monkeypatch
) -> None:
    """Without this, supporting a new Live Event type would need a new branch in the parser
    instead of one entry naming where its body holds the ids."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    monkeypatch.setitem(
        parse.EVENT_IDS, "assignment_created", {"course_id": parse.IdField(("context_id",))}
    )
    course_id = next(iter(expected_semester(institution, semester)["courses"]))
    message = json.dumps(
        {
            "metadata": {
                "event_name": "assignment_created",
                "event_time": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
            },
            "body": {"assignment_id": "77", "context_id": str(course_id)},
        }
    )
    schema = warehouse.table_schema()
    with warehouse.connect() as conn:
        landed = land_messages(conn, Destinations.one_institution(schema), [("m-1", message)])
        routed = route_pending(conn, schema, None, ())
    assert (landed.landed, landed.unknown, routed.routed) == (1, 0, 1)
    row = db.execute(
        sql.SQL("SELECT course_id, semester, applied_at FROM {}.live_events").format(
            sql.Identifier(schema)
        )
    ).fetchone()
    assert row == (course_id, semester, None)


def test_a_row_breaking_a_declared_reference_fails_with_the_reference_named(
    canvas, institution
) -> None:
    """Without this, references declared in the registry could be silently left unchecked."""
    from canvas_assets.canvas.fetch import fetch_semester, fetch_terms, find_term
    from canvas_assets.tables import semester_frames, validate_semester

    semester = real_semesters(institution)[0]
    with canvas.session() as session:
        term = find_term(fetch_terms(session), semester)
        snapshot = fetch_semester(session, term, semester, datetime.now(UTC), SEMESTER_TABLES)
    snapshot.per_course["section_names"] = [{"id": 999_001, "course_id": 424242, "name": "orphan"}]
    tables = (*SEMESTER_TABLES, SECTION_NAMES)
    raw = semester_frames(snapshot, tables)
    report = validate_semester(semester, term["sis_term_id"], raw, tables)
    assert not report.ok and set(report.failures) == {"section_names"}
    assert "course_id: references canvas/courses" in report.failed_checks("section_names")
    assert "section_names" not in report.frames  # nothing of a failing table is passed on
