import psycopg
import pytest
from psycopg import sql

from canvas_assets.settings import SettingError
from canvas_assets.warehouse import WarehouseError, WarehouseResource
from canvas_assets.warehouse.migrate import INSTITUTION, SHARED, migrate, migrations
from canvas_assets.warehouse.status import (
    mark_live_events_applied,
    mark_semesters_added,
    mark_sync_finished,
    mark_sync_started,
)


@pytest.mark.parametrize("kind", [INSTITUTION, SHARED])
def test_every_migration_has_a_version_of_its_own(kind: str) -> None:
    """Without this, two changes each adding a migration 0006 merged cleanly, and the second
    failed every first connection with a duplicate key in schema_migrations."""
    versions = [migration.version for migration in migrations(kind)]
    assert len(versions) == len(set(versions)), versions


def test_migrations_apply_once_and_rerun_as_noop(warehouse: WarehouseResource) -> None:
    """Without this, a second process starting (or a restart) would fail or re-run DDL."""
    url = warehouse.database_url()
    schema = warehouse.table_schema()
    with psycopg.connect(url, autocommit=True) as conn:
        first = migrate(conn, schema)
        second = migrate(conn, schema)
        versions = [
            row[0]
            for row in conn.execute(
                sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version").format(
                    sql.Identifier(schema)
                )
            )
        ]
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        }
    assert first == [migration.version for migration in migrations()]
    assert second == []
    assert versions == first
    assert {
        "terms",
        "courses",
        "sections",
        "enrollments",
        "users",
        "semester_sync_status",
    } <= tables


def test_bad_schema_name_names_the_setting(postgres_url: str) -> None:
    """Without this, a typo in the schema setting would surface as an SQL syntax error."""
    resource = WarehouseResource(url=postgres_url, schema_name="canvas; drop")
    with pytest.raises(SettingError, match="CANVAS_WAREHOUSE_SCHEMA"):
        resource.connect()


def test_unreachable_warehouse_names_the_setting_and_hides_the_password() -> None:
    """Without this, a wrong URL gives a driver traceback, or leaks the password into logs."""
    resource = WarehouseResource(url="postgresql://app:s3cret-pw@127.0.0.1:1/canvas")
    with pytest.raises(WarehouseError) as info:
        resource.connect()
    assert "CANVAS_WAREHOUSE_URL" in str(info.value)
    assert "s3cret-pw" not in str(info.value)


def test_embedded_postgres_keeps_data_across_restarts(tmp_path) -> None:
    """Without this, the local stack would lose the warehouse whenever it is restarted."""
    import pgserver

    from canvas_assets.warehouse.embedded import _embedded_servers, embedded_database_url

    data_dir = tmp_path / "pg"
    url = embedded_database_url(data_dir)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (value int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    server = _embedded_servers.pop(data_dir.resolve())
    server.cleanup()  # stops the server; data stays on disk
    restarted = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        with psycopg.connect(restarted.get_uri("canvas"), autocommit=True) as conn:
            assert conn.execute("SELECT value FROM kept").fetchone() == (42,)
    finally:
        restarted.cleanup()


def test_live_events_applies_never_hide_a_failed_or_missing_backfill(
    warehouse: WarehouseResource,
) -> None:
    """Without this, the Imported Semesters card would show a failed (or never completed)
    backfill as synced as soon as one Live Event was applied."""
    schema = warehouse.table_schema()
    table = sql.SQL("{}.semester_sync_status").format(sql.Identifier(schema))
    with warehouse.connect() as conn:
        mark_semesters_added(conn, schema, ["2026FA", "2026SP"])
        mark_sync_started(conn, schema, "2026FA")
        mark_sync_finished(conn, schema, "2026FA", error="Canvas answered HTTP 500")
        mark_live_events_applied(conn, schema, "2026FA")
        mark_live_events_applied(conn, schema, "2026SP")
        rows = conn.execute(
            sql.SQL(
                "SELECT semester, status, last_sync_completed_at IS NOT NULL, last_error FROM {} "
                "ORDER BY semester"
            ).format(table)
        ).fetchall()
        assert rows == [
            ("2026FA", "failed", False, "Canvas answered HTTP 500"),
            ("2026SP", "added", False, None),
        ]
        mark_sync_started(conn, schema, "2026FA")
        mark_sync_finished(conn, schema, "2026FA")
        mark_live_events_applied(conn, schema, "2026FA", error="HTTP 503")
        assert conn.execute(
            sql.SQL("SELECT status, last_error FROM {} WHERE semester = '2026FA'").format(table)
        ).fetchone() == ("synced", "Live Events apply failed: HTTP 503")
        mark_live_events_applied(conn, schema, "2026FA")
        assert conn.execute(
            sql.SQL("SELECT status, last_error FROM {} WHERE semester = '2026FA'").format(table)
        ).fetchone() == ("synced", None)
