"""Many institutions in one code location: an institutions file (CANVAS_INSTITUTIONS_FILE) is
the whole configuration, its mistakes stop the code location at load naming the entry and the
field, and two institutions share one Dagster instance and one PostgreSQL without colliding."""

import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from canvas_assets.canvas import CanvasResource
from canvas_assets.definitions import build_definitions
from canvas_assets.defs.namespace import Namespace
from canvas_assets.institutions import Institution
from canvas_assets.settings import SettingError, Settings
from canvas_assets.warehouse import WarehouseResource
from canvas_sandbox import SandboxServer, generate_institution

from .conftest import SANDBOX_TOKEN
from .truth import expected_semester, semester_of, warehouse_semester

NORTH = {
    "name": "north",
    "base_url": "https://north.instructure.com",
    "root_account_uuid": "NorthUuid0000000000000000000000000000000",
    "token_env": "NORTH_CANVAS_TOKEN",
}
SOUTH = {**NORTH, "name": "south", "base_url": "https://south.example.edu",
         "root_account_uuid": "SouthUuid0000000000000000000000000000000",
         "token_env": "SOUTH_CANVAS_TOKEN"}  # fmt: skip
TOKENS = {"NORTH_CANVAS_TOKEN": "n", "SOUTH_CANVAS_TOKEN": "s"}
# An entry with a developer key (OAuth2) instead of a token.
KEYED = {k: v for k, v in NORTH.items() if k != "token_env"} | {
    "client_id_env": "NORTH_CLIENT_ID", "client_secret_env": "NORTH_CLIENT_SECRET",
    "refresh_token_env": "NORTH_REFRESH_TOKEN"}  # fmt: skip
KEY = {"NORTH_CLIENT_ID": "1", "NORTH_CLIENT_SECRET": "s", "NORTH_REFRESH_TOKEN": "r"}


def _settings(tmp_path: Path, entries: object, **environ: str) -> Settings:
    path = tmp_path / "institutions.yaml"
    path.write_text(yaml.safe_dump({"institutions": entries}) if entries is not None else "x: [")
    return Settings.from_env({"CANVAS_INSTITUTIONS_FILE": str(path), **TOKENS, **environ})


def test_an_institutions_file_becomes_one_code_location_with_names_of_its_own(tmp_path) -> None:
    """Without this, a vendor would need a code location (and its processes) per institution,
    or two institutions' asset keys, partitions, pools, jobs or schemas would collide."""
    settings = _settings(tmp_path, [NORTH, {**SOUTH, "target_semesters": "2026*"}])
    north, south = (Namespace(i) for i in settings.institutions)
    assert (north.schema, south.schema) == ("canvas_north", "canvas_south")
    assert south.institution.target_semesters == ("2026*",)
    defs = build_definitions(settings)
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "north/canvas/courses",
        "south/canvas/courses",
        "canvas_shared/live_events_queue",
    } <= keys
    names = [(n.partitions.name, n.canvas_pool, n.semester_job) for n in (north, south)]
    assert names == [
        ("semester_north", "canvas_api_north", "canvas_semester_sync_north"),
        ("semester_south", "canvas_api_south", "canvas_semester_sync_south"),
    ]
    sensors = {s.name for s in defs.get_repository_def().sensor_defs}
    # One shared queue; freshness and alerts serve every institution from one sensor each.
    assert sensors == {
        "semester_auto_import", "canvas_live_events", "canvas_freshness",
        "canvas_alert_run_failures", "canvas_alerts",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("entries", "environ", "message"),
    [
        ([{**NORTH, "tokn_env": "X"}], {}, "institutions[0] (north): unknown key 'tokn_env'"),
        ([NORTH, {**SOUTH, "name": "north"}], {}, "institutions[1] (north): name 'north' is "
         "already used by institutions[0]"),
        ([NORTH, {**SOUTH, "root_account_uuid": NORTH["root_account_uuid"]}], {},
         "institutions[1] (south): root_account_uuid"),
        ([{**NORTH, "token_env": "WEST_CANVAS_TOKEN"}], {},
         "institutions[0] (north): token_env WEST_CANVAS_TOKEN is not set"),
        ([{**NORTH, "target_semesters": "2026["}], {},
         "institutions[0] (north): target_semesters"),
        ([{**NORTH, "name": "North U"}], {}, "institutions[0] (North U): name must be"),
        ([{k: v for k, v in NORTH.items() if k != "base_url"}], {},
         "institutions[0] (north): base_url is missing"),
        ([{k: v for k, v in NORTH.items() if k != "root_account_uuid"}], {},
         "institutions[0] (north): root_account_uuid is missing"),
        ([{**NORTH, "base_url": "north.instructure.com"}], {},
         "institutions[0] (north): base_url must start with http"),
        (None, {}, "is not YAML at line 1"),
        ([], {}, "must hold a non-empty list under 'institutions'"),
        ([{**KEYED, "token_env": "NORTH_CANVAS_TOKEN"}], KEY,
         "institutions[0] (north): token_env and client_id_env are both given"),
        ([{k: v for k, v in KEYED.items() if k != "refresh_token_env"}], KEY,
         "institutions[0] (north): refresh_token_env is missing (a developer key needs"),
        ([{k: v for k, v in NORTH.items() if k != "token_env"}], {},
         "institutions[0] (north): token_env is missing (or, for a developer key"),
        ([KEYED], {**KEY, "NORTH_CLIENT_SECRET": ""},
         "institutions[0] (north): client_secret_env NORTH_CLIENT_SECRET is not set"),
    ],
)  # fmt: skip
def test_each_kind_of_bad_institutions_file_names_the_entry_and_the_field(
    tmp_path, entries, environ, message
) -> None:
    """Without this, a typo in the file would surface as a traceback deep in Dagster, or an
    institution would silently get no token, no events or every semester."""
    with pytest.raises(SettingError) as caught:
        _settings(tmp_path, entries, **environ)
    assert "CANVAS_INSTITUTIONS_FILE" in str(caught.value)
    assert message in str(caught.value)


def test_an_entry_may_reach_canvas_with_a_developer_key(tmp_path) -> None:
    """Without this, a vendor whose partner forbids manual tokens could not declare it."""
    north, south = _settings(tmp_path, [KEYED, SOUTH], **KEY).institutions
    assert north.developer_key and north.token_env is None
    assert north.refresh_token_env == "NORTH_REFRESH_TOKEN"
    assert not south.developer_key and south.token_env == "SOUTH_CANVAS_TOKEN"


def test_without_the_file_the_single_institution_keeps_todays_names() -> None:
    """Without this, an existing single-institution deployment's assets, partitions and
    schema would be renamed by an upgrade, and its history orphaned."""
    (single,) = Settings.from_env({"CANVAS_TARGET_SEMESTERS": "2026*"}).institutions
    namespace = Namespace(single)
    assert (namespace.key("courses"), namespace.partitions.name) == (
        dg.AssetKey(["canvas", "courses"]),
        "semester",
    )
    assert (namespace.schema, namespace.semester_job, namespace.resource_key("canvas")) == (
        "canvas",
        "canvas_semester_sync",
        "canvas",
    )
    assert single.target_semesters == ("2026*",) and single.token_env == "CANVAS_API_TOKEN"


@pytest.fixture
def other_sandbox():
    """A second institution with the same semester keys and different courses and people."""
    institution = generate_institution("small", seed=8)
    server = SandboxServer(institution, token=SANDBOX_TOKEN).start()
    yield institution, server
    server.stop()


def test_two_institutions_share_an_instance_and_a_database_without_collisions(
    sandbox, institution, other_sandbox, postgres_url, db
) -> None:
    """Without this, a vendor serving two colleges from one code location would see their
    semester partitions or warehouse rows collide."""
    other_institution, other_server = other_sandbox
    suffix = uuid.uuid4().hex[:6]
    sites = [
        (Institution(name="north", schema=f"north_{suffix}", root_account_uuid="n"), sandbox.url,
         institution),
        (Institution(name="south", schema=f"south_{suffix}", root_account_uuid="s"),
         other_server.url, other_institution),
    ]  # fmt: skip
    settings = Settings(institutions=tuple(site[0] for site in sites))
    defs = build_definitions(settings)
    semester = sorted(semester_of(t) for t in institution.terms.values() if t["sis_term_id"])[0]
    resources = {}
    for configured, url, _ in sites:
        namespace = Namespace(configured)
        resources[namespace.resource_key("canvas")] = CanvasResource(
            base_url=url, api_token=SANDBOX_TOKEN
        )
        resources[namespace.resource_key("warehouse")] = WarehouseResource(
            url=postgres_url, schema_name=configured.schema_name
        )
    with dg.instance_for_test() as instance:
        for configured, _, _ in sites:
            namespace = Namespace(configured)
            instance.add_dynamic_partitions(namespace.partitions.name, [semester])
            job = defs.resolve_job_def(namespace.semester_job)
            result = job.execute_in_process(
                partition_key=semester, instance=instance, resources=resources
            )
            assert result.success
        for configured, _, source in sites:
            key = Namespace(configured).key("courses")
            assert instance.get_materialized_partitions(key) == {semester}
            expected = expected_semester(source, semester)
            actual = warehouse_semester(db, configured.schema_name, semester)
            for table in expected:
                assert actual[table] == expected[table], (configured.name, table)
    # Two different colleges (same ids, other courses), not one copied twice.
    north_courses = expected_semester(institution, semester)["courses"]
    assert north_courses != expected_semester(other_institution, semester)["courses"]


def test_live_events_apply_runs_leave_the_run_queue_before_any_backfill(tmp_path) -> None:
    """Without this, the nightly reconciliation of many institutions (a backfill per current
    semester, all queued at 03:00) would hold every Live Events apply run in Dagster's queue
    behind them: events minutes to an hour late at a vendor's scale."""
    defs = build_definitions(_settings(tmp_path, [NORTH, SOUTH]))
    jobs = defs.get_repository_def().get_all_jobs()

    def priority(job: dg.JobDefinition) -> int:
        return int(job.tags.get("dagster/priority", "0"))  # Dagster's default is 0

    apply = next(job for job in jobs if job.name == "canvas_live_events_apply")
    others = [job for job in jobs if job.name != apply.name]
    assert any(job.name == "canvas_semester_sync_north" for job in others)
    assert all(priority(apply) > priority(job) for job in others), [
        (job.name, priority(job)) for job in others
    ]
