"""Target Semesters and Auto Import Semesters."""

import subprocess
import sys

import dagster as dg
import pytest
import yaml
from psycopg import sql

from canvas_assets import definitions
from canvas_assets.defs.jobs import build_jobs
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.sensors.auto_import import (
    build_semester_auto_import_sensor,
    plan_auto_import,
)
from canvas_assets.settings import SettingError, Settings
from canvas_assets.warehouse import WarehouseResource

from .backfills import NAMESPACE, SETTINGS, terms
from .truth import semester_of

# The live terms' semesters, as the warehouse's terms table gives them.
TERMS = ["term-1", "2025FA", "2026SP", "2026FA"]


def test_target_semester_patterns_limit_partitions() -> None:
    """Without this, CANVAS_TARGET_SEMESTERS=2026* would import every semester."""
    plan = plan_auto_import(TERMS, [], ("2026*",), auto_import=True)
    assert plan.new_semesters == ("2026FA", "2026SP")
    assert plan_auto_import(TERMS, [], ("2025FA", "term-1"), True).new_semesters == (
        "2025FA",
        "term-1",
    )


def test_empty_target_means_all_live_terms_and_existing_are_skipped() -> None:
    """Without this, known semesters would be re-added and re-backfilled on every tick."""
    plan = plan_auto_import(TERMS, ["2025FA"], (), auto_import=True)
    assert plan.new_semesters == ("2026FA", "2026SP", "term-1")
    assert plan.backfill_semesters == plan.new_semesters


def test_auto_import_off_adds_partitions_without_backfills() -> None:
    """Without this, CANVAS_AUTO_IMPORT_SEMESTERS=false would still launch backfills."""
    plan = plan_auto_import(TERMS, [], (), auto_import=False)
    assert plan.new_semesters and plan.backfill_semesters == ()


def test_bad_boolean_setting_names_the_variable() -> None:
    """Without this, a typo like 'flase' would silently mean the default."""
    with pytest.raises(SettingError, match="CANVAS_AUTO_IMPORT_SEMESTERS"):
        Settings.from_env({"CANVAS_AUTO_IMPORT_SEMESTERS": "flase"})


def test_sensor_adds_new_term_partitions_and_requests_backfills(
    canvas, warehouse, db, institution
) -> None:
    """Without this, a new Canvas term would never appear as a semester partition, or the
    sensor would call Canvas in its tick instead of leaving that to the terms run."""
    real = sorted(semester_of(t) for t in institution.terms.values() if t["sis_term_id"])
    settings = Settings(
        target_semesters=(real[0],), auto_import_semesters=True, semester_sensor_interval_seconds=30
    )
    namespaces = [Namespace(settings.institutions[0])]
    sensor = build_semester_auto_import_sensor(settings, namespaces, build_jobs(namespaces))
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse})
        first = sensor(context)  # no terms in the warehouse yet: it asks for a terms refresh
        assert [r.job_name for r in first.run_requests] == ["canvas_terms_sync"]
        assert not first.dynamic_partitions_requests
        assert dg.materialize(
            [terms], resources={"canvas": canvas, "warehouse": warehouse}, instance=instance
        ).success
        result = sensor(
            dg.build_sensor_context(
                instance=instance, resources={"warehouse": warehouse}, cursor=first.cursor
            )
        )
        assert isinstance(result, dg.SensorResult)
        added = [r.partition_keys for r in result.dynamic_partitions_requests]
        assert added == [[real[0]]]
        semester_runs = [r for r in result.run_requests if r.partition_key]
        assert [(r.partition_key, r.run_key, r.job_name) for r in semester_runs] == [
            (real[0], f"auto-import:canvas:{real[0]}", "canvas_semester_sync")
        ]
        row = db.execute(
            sql.SQL("SELECT status FROM {}.semester_sync_status WHERE semester = %s").format(
                sql.Identifier(warehouse.table_schema())
            ),
            (real[0],),
        ).fetchone()
        assert row == ("added",)
        # Once the partition exists, the next tick has nothing to do.
        instance.add_dynamic_partitions("semester", [real[0]])
        again = sensor(
            dg.build_sensor_context(
                instance=instance, resources={"warehouse": warehouse}, cursor=result.cursor
            )
        )
        assert isinstance(again, dg.SensorResult) and not again.run_requests
        assert "No new semesters" in again.skip_reason.skip_message


def test_definitions_load_with_lineage_and_running_sensors() -> None:
    """Without this, a broken entry point or lineage would only show up in the UI."""
    defs = definitions.defs()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    parents = {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    events = "canvas/live_events"
    assert parents["canvas/courses"] == {"canvas/terms", events}
    assert parents["canvas/sections"] == {"canvas/courses", events}
    assert parents["canvas/enrollments"] == {"canvas/sections", events}
    assert parents["canvas/users"] == {"canvas/enrollments", events}
    for name in ("semester_auto_import", "canvas_live_events"):
        assert defs.get_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


def test_every_job_runs_its_steps_in_the_runs_own_process() -> None:
    """Without this, a backfill launched from the UI (the asset job) or by a sensor ran its one
    step in a second process that loaded the code again: about two seconds more between the
    launch and the first Canvas request (BENCHMARKS.md)."""
    defs = definitions.defs()
    for job in ("canvas_semester_sync", "__ASSET_JOB", "canvas_terms_sync"):
        assert defs.resolve_job_def(job).executor_def.name == "in_process", job


def test_dagster_loading_the_definitions_again_builds_them_once_per_settings(
    monkeypatch, tmp_path
) -> None:
    """Without this, every one of the several loads Dagster makes in a run's process built the
    whole code location again before the first Canvas request; without the settings as the
    key, a changed setting would not be seen by the next load; and settings that could not be
    a key (a vendor's institutions) would stop the code location loading."""
    first = definitions.defs()
    assert definitions.defs() is first
    monkeypatch.setenv("CANVAS_RECONCILE_CRON", "30 4 * * *")
    changed = definitions.defs()
    assert changed is not first
    assert changed.get_schedule_def("canvas_reconciliation").cron_schedule == "30 4 * * *"
    entry = {"name": "north", "base_url": "https://north.instructure.com",
             "root_account_uuid": "NorthUuid0000000000000000000000000000000",
             "token_env": "NORTH_CANVAS_TOKEN", "target_semesters": ["2026*"]}  # fmt: skip
    institutions = tmp_path / "institutions.yaml"
    institutions.write_text(yaml.safe_dump({"institutions": [entry]}))
    monkeypatch.setenv("CANVAS_INSTITUTIONS_FILE", str(institutions))
    monkeypatch.setenv("NORTH_CANVAS_TOKEN", "n")
    vendor = definitions.defs()
    assert definitions.defs() is vendor
    assert vendor.resolve_assets_def(dg.AssetKey(["north", "canvas", "courses"]))


def test_loading_the_code_location_runs_no_full_collection_and_leaves_it_frozen() -> None:
    """Without this, the cyclic collector would walk the code location's objects in full
    collections while they load, and again in every full collection of a run's later work
    (BENCHMARKS.md: a run's launch and end), or it could be left off for the life of a code
    server."""
    probe = (
        "import gc\n"
        "collections = lambda: gc.get_stats()[2]['collections']\n"  # full ones
        "before = collections()\n"
        "import canvas_assets.definitions\n"
        "frozen = gc.get_freeze_count() > len(gc.get_objects())\n"
        "print(collections() - before, gc.isenabled(), frozen)"
    )
    command = [sys.executable, "-c", probe]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "True", "True"]


def test_reconciliation_picks_the_semesters_running_now() -> None:
    """Without this, the nightly heal would re-sync old semesters or skip the current one."""
    from datetime import UTC, datetime

    from canvas_assets.defs.schedules import current_semesters
    from canvas_assets.warehouse.reads import TermDates

    terms = [
        TermDates("2025FA", datetime(2025, 8, 25, tzinfo=UTC), datetime(2025, 12, 19, tzinfo=UTC)),
        TermDates("2026SP", datetime(2026, 1, 12, tzinfo=UTC), datetime(2026, 5, 15, tzinfo=UTC)),
        TermDates("2026FA", datetime(2026, 8, 24, tzinfo=UTC), datetime(2026, 12, 18, tzinfo=UTC)),
        TermDates("term-1", None, None),
    ]
    partitions = ["2025FA", "2026SP", "2026FA", "term-1"]
    assert current_semesters(terms, datetime(2026, 11, 23, tzinfo=UTC), partitions) == ["2026FA"]
    # Late grades: two weeks after the end, the semester is still reconciled.
    assert current_semesters(terms, datetime(2026, 5, 25, tzinfo=UTC), partitions) == ["2026SP"]
    assert current_semesters(terms, datetime(2026, 11, 23, tzinfo=UTC), ["2026SP"]) == []


def test_reconciliation_schedule_requests_backfills_of_current_semesters(
    canvas, warehouse, institution
) -> None:
    """Without this, events Canvas never delivered would never be healed."""
    from datetime import UTC, datetime

    from canvas_assets.defs.schedules import build_reconciliation_schedule

    with dg.instance_for_test() as instance:
        assert dg.materialize(
            [terms], resources={"canvas": canvas, "warehouse": warehouse}, instance=instance
        ).success
        instance.add_dynamic_partitions("semester", ["2025FA", "2026FA"])
        schedule = build_reconciliation_schedule(SETTINGS, NAMESPACE, build_jobs([NAMESPACE]))
        # Entered so the context closes what it opened before the instance does: a context left
        # open keeps this instance's (soon deleted) state storage current for later tests.
        with dg.build_schedule_context(
            instance=instance,
            resources={"warehouse": warehouse},
            scheduled_execution_time=datetime(2026, 10, 1, 3, tzinfo=UTC),
        ) as context:
            requests = schedule(context)
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("2026FA", "reconcile:2026FA:2026-10-01T03:00")
    ]


def test_deleted_terms_never_become_semesters(db, warehouse) -> None:
    """Without this, a term deleted in Canvas (still listed with workflow_state deleted) would
    be added as a partition and backfilled on every tick."""
    from datetime import UTC, datetime

    from canvas_assets.tables import TERMS as TERMS_TABLE
    from canvas_assets.tables.columns import frame
    from canvas_assets.warehouse.reads import live_semesters
    from canvas_assets.warehouse.writes import write_terms

    rows = [
        {"institution_id": 4, "code": "2026FA", "name": "Fall", "status": "active",
         "semester": "2026FA"},
        {"institution_id": 5, "code": "2026SU", "name": "Summer", "status": "deleted",
         "semester": "2026SU"},
    ]  # fmt: skip
    validated = TERMS_TABLE.model.validate(frame(TERMS_TABLE.model, rows))
    write_terms(db, warehouse.table_schema(), validated, datetime.now(UTC))
    assert live_semesters(db, warehouse.table_schema()) == ["2026FA"]


def _tick(settings: Settings, instance, warehouse, cursor: str | None = None):
    namespaces = [Namespace(settings.institutions[0])]
    sensor = build_semester_auto_import_sensor(settings, namespaces, build_jobs(namespaces))
    context = dg.build_sensor_context(
        instance=instance, resources={"warehouse": warehouse}, cursor=cursor
    )
    return sensor(context)


def _card_status(db, warehouse, semester: str) -> str:
    query = sql.SQL("SELECT status FROM {}.semester_sync_status WHERE semester = %s").format(
        sql.Identifier(warehouse.table_schema())
    )
    return db.execute(query, (semester,)).fetchone()[0]


def test_a_semester_leaving_the_target_is_marked_and_re_synced_when_it_returns(
    canvas, warehouse, db, institution, capfd
) -> None:
    """Without this, narrowing CANVAS_TARGET_SEMESTERS left imported semesters looking current
    on the card while their Live Events were closed as out_of_target, and widening it again
    left the gap they missed unfilled."""
    real = sorted(semester_of(t) for t in institution.terms.values() if t["sis_term_id"])
    first, other = real[0], real[1]

    def targeting(semester: str) -> Settings:
        return Settings(target_semesters=(semester,), semester_sensor_interval_seconds=3600)

    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize(
            [terms], resources={"canvas": canvas, "warehouse": warehouse}, instance=instance
        ).success
        added = _tick(targeting(first), instance, warehouse)
        instance.add_dynamic_partitions("semester", [first])
        left = _tick(targeting(other), instance, warehouse, added.cursor)
        assert _card_status(db, warehouse, first) == "not targeted"
        said = capfd.readouterr().err
        assert f"canvas: {first} imported but outside Target Semesters now" in said
        back = _tick(targeting(first), instance, warehouse, left.cursor)
        assert _card_status(db, warehouse, first) == "added"
        resync = [r for r in back.run_requests if r.partition_key == first]
        assert len(resync) == 1 and resync[0].run_key.startswith("retarget-")


def test_a_tick_that_cannot_reach_the_warehouse_says_so_in_one_line(tmp_path) -> None:
    """Without this, an unreachable CANVAS_WAREHOUSE_URL filled the tick with a traceback wall
    in which the setting to fix was buried."""
    unreachable = WarehouseResource(url="postgresql://nobody:hunter2@127.0.0.1:1/x")
    with dg.DagsterInstance.ephemeral() as instance:
        result = _tick(SETTINGS, instance, unreachable)
    assert isinstance(result, dg.SkipReason)
    message = result.skip_message
    assert message.startswith("Not run: Cannot connect to the warehouse")
    assert "CANVAS_WAREHOUSE_URL" in message and "hunter2" not in message
    assert "\n" not in message
