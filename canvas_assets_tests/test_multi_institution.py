"""Many institutions from one deployment: each is its own code location built from its own
settings, and two of them share one Dagster instance and one PostgreSQL without colliding."""

import uuid

import dagster as dg
import pytest

from canvas_assets.canvas import CanvasResource
from canvas_assets.definitions import build_definitions
from canvas_assets.defs.namespace import Namespace
from canvas_assets.settings import Settings
from canvas_assets.warehouse import WarehouseResource
from canvas_sandbox import SandboxServer, generate_institution

from .conftest import SANDBOX_TOKEN
from .truth import expected_semester, semester_of, warehouse_semester


@pytest.fixture
def other_sandbox():
    """A second institution with the same semester keys and different courses and people."""
    institution = generate_institution("small", seed=8)
    server = SandboxServer(institution, token=SANDBOX_TOKEN).start()
    yield institution, server
    server.stop()


def _asset_keys(defs: dg.Definitions) -> set[dg.AssetKey]:
    return set(defs.resolve_asset_graph().get_all_asset_keys())


def test_two_institutions_share_an_instance_and_a_database_without_collisions(
    sandbox, institution, other_sandbox, postgres_url, db
) -> None:
    """Without this, a vendor serving two colleges from one deployment would see their asset
    keys, semester partitions, Canvas pools, apply-run limits or warehouse rows collide."""
    other_institution, other_server = other_sandbox
    suffix = uuid.uuid4().hex[:6]
    north = Settings(institution="north", warehouse_schema=f"north_{suffix}")
    south = Settings(institution="south", warehouse_schema=f"south_{suffix}")
    north_defs, south_defs = build_definitions(north), build_definitions(south)
    assert not _asset_keys(north_defs) & _asset_keys(south_defs)
    names = [(Namespace.of(s).partitions.name, Namespace.of(s).canvas_pool) for s in (north, south)]
    assert names == [("semester_north", "canvas_api_north"), ("semester_south", "canvas_api_south")]
    assert Namespace.of(north).apply_tag("2026SP") != Namespace.of(south).apply_tag("2026SP")

    semester = sorted(semester_of(t) for t in institution.terms.values() if t["sis_term_id"])[0]
    sites = [
        (north, north_defs, sandbox.url, institution),
        (south, south_defs, other_server.url, other_institution),
    ]
    with dg.instance_for_test() as instance:
        for settings, defs, url, _ in sites:
            partitions = Namespace.of(settings).partitions
            instance.add_dynamic_partitions(partitions.name, [semester])
            job = defs.resolve_job_def("canvas_semester_sync")
            result = job.execute_in_process(
                partition_key=semester,
                instance=instance,
                resources={
                    "canvas": CanvasResource(base_url=url, api_token=SANDBOX_TOKEN),
                    "warehouse": WarehouseResource(
                        url=postgres_url, schema_name=settings.warehouse_schema
                    ),
                },
            )
            assert result.success
        for settings, _, _, source in sites:
            key = Namespace.of(settings).key("courses")
            assert instance.get_materialized_partitions(key) == {semester}
            expected = expected_semester(source, semester)
            actual = warehouse_semester(db, settings.warehouse_schema, semester)
            for table in expected:
                assert actual[table] == expected[table], (settings.institution, table)
    # Two different colleges (same ids, other courses), not one copied twice.
    north_courses = expected_semester(institution, semester)["courses"]
    assert north_courses != expected_semester(other_institution, semester)["courses"]
