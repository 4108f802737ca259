"""Least privilege in PostgreSQL: deploy/postgres/roles.sql, run with psql exactly as
DEPLOYMENT.md says, gives each role what it needs and nothing more, and a semester backfill runs
under the warehouse role that owns only its schema."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.tokens import StoredToken, write_token

from .backfills import backfill, real_semesters
from .deployment import database_url, roles_from_roles_sql, run_roles_sql, unique
from .truth import expected_semester, warehouse_semester

SCHEMA = "canvas"  # the schema roles.sql gives the warehouse role (named in the SQL below)


@pytest.fixture
def roles(postgres_url):
    """Roles and databases from roles.sql (run twice: it must be re-runnable); dropped after."""
    with roles_from_roles_sql(postgres_url, "lp", schema=SCHEMA, runs=2) as names:
        analyst = unique("lp_analyst")
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(analyst)))
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(names["reader_role"]), sql.Identifier(analyst)
                )
            )
        names["analyst_role"] = analyst
        yield names


def _connect(postgres_url: str, database: str, user: str) -> psycopg.Connection:
    return psycopg.connect(database_url(postgres_url, database, user=user), autocommit=True)


def _denied(conn: psycopg.Connection, statement: str) -> bool:
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def test_roles_sql_grants_each_role_only_what_it_needs(postgres_url, roles) -> None:
    """Without this, the documented roles could be broader than stated (the warehouse role
    creating schemas or reading another institution's schema, readers writing, the Dagster
    role reaching the warehouse) or too narrow for the code, which would only show in
    production."""
    warehouse_db, dagster_db = roles["warehouse_db"], roles["dagster_db"]
    with psycopg.connect(database_url(postgres_url, warehouse_db), autocommit=True) as admin:
        admin.execute("CREATE SCHEMA other_institution")
        admin.execute("CREATE TABLE other_institution.secrets (id int)")
    with _connect(postgres_url, warehouse_db, roles["warehouse_role"]) as conn:
        conn.execute("CREATE TABLE canvas.probe (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO canvas.probe VALUES (1, 'a')")
        conn.execute("CREATE TEMP TABLE scratch (id int)")  # COPY staging tables
        assert _denied(conn, "CREATE SCHEMA another")
        assert _denied(conn, "CREATE TABLE public.probe (id int)")
        assert _denied(conn, "SELECT * FROM other_institution.secrets")
    with _connect(postgres_url, warehouse_db, roles["analyst_role"]) as conn:
        assert conn.execute("SELECT v FROM canvas.probe").fetchall() == [("a",)]
        assert _denied(conn, "INSERT INTO canvas.probe VALUES (2, 'b')")
        assert _denied(conn, "UPDATE canvas.probe SET v = 'x'")
        assert _denied(conn, "DELETE FROM canvas.probe")
        assert _denied(conn, "CREATE TABLE canvas.mine (id int)")
    with _connect(postgres_url, dagster_db, roles["dagster_role"]) as conn:
        conn.execute("CREATE TABLE runs_probe (id int)")  # dagster-postgres creates its tables
    for user, database in (
        (roles["warehouse_role"], dagster_db),
        (roles["analyst_role"], dagster_db),
        (roles["dagster_role"], warehouse_db),
    ):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            _connect(postgres_url, database, user).close()


def test_semester_backfill_runs_under_the_warehouse_role(
    postgres_url, roles, canvas, institution, instance
) -> None:
    """Without this, the warehouse would silently need more than ownership of its schema (a
    migration creating the schema needs CREATE on the whole database), and a deployment that
    follows DEPLOYMENT.md's roles would fail on its first backfill."""
    semester = real_semesters(institution)[0]
    url = database_url(postgres_url, roles["warehouse_db"], user=roles["warehouse_role"])
    warehouse = WarehouseResource(url=url, schema_name=SCHEMA)
    result = backfill(canvas, warehouse, instance, semester)
    failures = [event.message for event in result.all_events if event.is_failure]
    assert result.success, failures
    with warehouse.connect() as conn:
        assert warehouse_semester(conn, SCHEMA, semester) == expected_semester(
            institution, semester
        )
    # What the warehouse role created, readers can read.
    with _connect(postgres_url, roles["warehouse_db"], roles["analyst_role"]) as conn:
        count = conn.execute("SELECT count(*) FROM canvas.courses").fetchone()[0]
        assert count == len(expected_semester(institution, semester)["courses"])


def test_readers_never_see_the_canvas_access_token(postgres_url, roles) -> None:
    """Without this, the developer key's current access token, which the warehouse keeps for
    every process to share, could be read by any analyst holding the reader role (the schema's
    default privileges give readers every new table) and used as the service account."""
    url = database_url(postgres_url, roles["warehouse_db"], user=roles["warehouse_role"])
    warehouse = WarehouseResource(url=url, schema_name=SCHEMA)
    with warehouse.connect() as conn:  # migrated by the warehouse role, as in production
        write_token(conn, SCHEMA, StoredToken("digest", "the-access-token", None, None))
    for rerun in (False, True):  # an administrator may run roles.sql again later
        if rerun:
            run_roles_sql(postgres_url, **{k: v for k, v in roles.items() if k != "analyst_role"})
        with _connect(postgres_url, roles["warehouse_db"], roles["analyst_role"]) as conn:
            assert _denied(conn, "SELECT * FROM canvas.canvas_access_token")
            assert conn.execute("SELECT count(*) FROM canvas.courses").fetchone() == (0,)
    with warehouse.connect() as conn:  # the code location still reads its token
        row = conn.execute("SELECT access_token FROM canvas.canvas_access_token").fetchone()
        assert row == ("the-access-token",)
