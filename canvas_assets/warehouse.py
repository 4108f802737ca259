"""The PostgreSQL warehouse: connection, embedded server, versioned migrations.

With ``CANVAS_WAREHOUSE_URL`` unset, an embedded PostgreSQL (pgserver) is started with its data
kept under the local state folder, so tables survive restarts. Migrations are numbered, each runs
once in its own transaction under an advisory lock, and re-running them is a no-op.
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import psycopg
from psycopg import sql
from pydantic import Field

from canvas_assets.settings import DEFAULT_WAREHOUSE_SCHEMA, state_dir, validate_schema_name

WAREHOUSE_DATABASE = "canvas"
DAGSTER_DATABASE = "dagster"


class WarehouseError(RuntimeError):
    pass


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


_embedded_lock = threading.Lock()
_embedded_servers: dict[Path, object] = {}


def embedded_server(data_dir: Path):
    """Start (or join) the embedded PostgreSQL whose data lives in ``data_dir``."""
    import pgserver  # imported lazily: only the embedded mode needs it

    data_dir = data_dir.resolve()
    with _embedded_lock:
        server = _embedded_servers.get(data_dir)
        if server is None:
            data_dir.mkdir(parents=True, exist_ok=True)
            server = pgserver.get_server(data_dir, cleanup_mode="stop")
            _embedded_servers[data_dir] = server
        return server


def ensure_database(server_url: str, database: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def embedded_database_url(data_dir: Path, database: str = WAREHOUSE_DATABASE) -> str:
    server = embedded_server(data_dir)
    ensure_database(server.get_uri(), database)
    return server.get_uri(database)


# -- migrations -------------------------------------------------------------------------------
# Each entry runs once per schema, in order; "{schema}" is replaced by the quoted schema name.
# Never edit a released migration: add a new one.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "semester tables",
        """
        CREATE TABLE {schema}.terms (
            institution_id bigint PRIMARY KEY,
            code text,
            name text NOT NULL,
            start_at timestamptz,
            end_at timestamptz,
            status text NOT NULL,
            semester text NOT NULL UNIQUE,
            source_updated_at timestamptz NOT NULL,
            deleted_at timestamptz
        );
        CREATE TABLE {schema}.courses (
            semester text NOT NULL,
            institution_id bigint NOT NULL,
            name text NOT NULL,
            description text,
            code text,
            total_students integer,
            departments jsonb NOT NULL DEFAULT '[]',
            status text NOT NULL,
            type text,
            term text,
            timezone text,
            account_id bigint,
            sis_course_id text,
            start_at timestamptz,
            end_at timestamptz,
            source_updated_at timestamptz NOT NULL,
            deleted_at timestamptz,
            PRIMARY KEY (semester, institution_id)
        );
        CREATE INDEX ON {schema}.courses (institution_id);
        CREATE TABLE {schema}.sections (
            semester text NOT NULL,
            institution_id bigint NOT NULL,
            course_id bigint NOT NULL,
            name text NOT NULL,
            code text,
            status text,
            instruction_mode text,
            term text,
            school text,
            instructor text,
            instructor_email text,
            current_enrollments integer,
            timezone text,
            start_date timestamptz,
            end_date timestamptz,
            sis_section_id text,
            source_updated_at timestamptz NOT NULL,
            deleted_at timestamptz,
            PRIMARY KEY (semester, institution_id)
        );
        CREATE INDEX ON {schema}.sections (institution_id);
        CREATE INDEX ON {schema}.sections (course_id);
        CREATE TABLE {schema}.enrollments (
            semester text NOT NULL,
            institution_id bigint NOT NULL,
            course_id bigint NOT NULL,
            section_id bigint NOT NULL,
            user_id bigint NOT NULL,
            role text NOT NULL,
            enrollment_status text NOT NULL,
            current_grade_text text,
            current_grade_number double precision,
            final_grade_text text,
            final_grade_number double precision,
            last_lms_activity timestamptz,
            last_attended_date timestamptz,
            total_active_time bigint,
            source_updated_at timestamptz NOT NULL,
            deleted_at timestamptz,
            PRIMARY KEY (semester, institution_id)
        );
        CREATE INDEX ON {schema}.enrollments (institution_id);
        CREATE INDEX ON {schema}.enrollments (user_id);
        CREATE INDEX ON {schema}.enrollments (course_id);
        CREATE TABLE {schema}.users (
            semester text NOT NULL,
            institution_id bigint NOT NULL,
            first_name text,
            last_name text,
            preferred_name text,
            email text,
            sis_user_id text,
            login_id text,
            source_type text NOT NULL DEFAULT 'LMS',
            source_name text NOT NULL DEFAULT 'Canvas',
            source_date date,
            source_updated_at timestamptz NOT NULL,
            deleted_at timestamptz,
            PRIMARY KEY (semester, institution_id)
        );
        CREATE INDEX ON {schema}.users (institution_id);
        CREATE TABLE {schema}.semester_sync_status (
            semester text PRIMARY KEY,
            status text NOT NULL,
            added_at timestamptz,
            started_at timestamptz,
            last_sync_completed_at timestamptz,
            last_error text
        );
        """,
    ),
    (
        2,
        "live events landing and quarantine",
        """
        CREATE TABLE {schema}.live_events (
            seq bigserial PRIMARY KEY,
            event_key text NOT NULL UNIQUE,
            message_id text,
            event_name text NOT NULL,
            event_time timestamptz NOT NULL,
            supported boolean NOT NULL,
            course_id bigint,
            section_id bigint,
            enrollment_id bigint,
            user_id bigint,
            semester text,
            envelope jsonb NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            applied_at timestamptz,
            outcome text
        );
        CREATE INDEX live_events_pending ON {schema}.live_events (semester, seq)
            WHERE applied_at IS NULL;
        CREATE TABLE {schema}.live_event_quarantine (
            id bigserial PRIMARY KEY,
            raw_key text NOT NULL UNIQUE,
            message_id text,
            reason text NOT NULL,
            raw text NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        3,
        "live event routing attempts",
        """
        ALTER TABLE {schema}.live_events
            ADD COLUMN route_attempts integer NOT NULL DEFAULT 0;
        """,
    ),
]

_MIGRATION_LOCK_KEY = 0x43414E56  # "CANV": serialises migrations across processes


def migrate(conn: psycopg.Connection, schema: str) -> list[int]:
    """Apply pending migrations to ``schema``; return the versions applied now."""
    schema_ident = sql.Identifier(validate_schema_name(schema))
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema_ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(schema_ident)
        )
        done = {
            row[0]
            for row in conn.execute(
                sql.SQL("SELECT version FROM {}.schema_migrations").format(schema_ident)
            )
        }
        for version, name, ddl in MIGRATIONS:
            if version in done:
                continue
            statement = ddl.replace("{schema}", schema_ident.as_string(conn))
            conn.execute(statement)
            conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)").format(
                    schema_ident
                ),
                (version, name),
            )
            applied_now.append(version)
    return applied_now


class WarehouseResource(dg.ConfigurableResource):
    """The PostgreSQL database that holds the Canvas tables."""

    url: str | None = Field(
        default=None,
        description="postgresql:// URL (dg.EnvVar('CANVAS_WAREHOUSE_URL')); unset = embedded.",
    )
    schema_name: str = Field(
        default=DEFAULT_WAREHOUSE_SCHEMA,
        description="Schema of the tables (CANVAS_WAREHOUSE_SCHEMA).",
    )
    state_dir: str | None = Field(
        default=None, description="Folder for the embedded PostgreSQL (CANVAS_ASSETS_HOME)."
    )

    def database_url(self) -> str:
        if self.url:
            if not self.url.startswith(("postgresql://", "postgres://")):
                raise WarehouseError(
                    "CANVAS_WAREHOUSE_URL must be a postgresql:// URL, got "
                    f"{redact_url(self.url)!r}."
                )
            return self.url
        base = Path(self.state_dir) if self.state_dir else state_dir()
        return embedded_database_url(base / "postgres")

    def table_schema(self) -> str:
        return validate_schema_name(self.schema_name)

    def connect(self) -> psycopg.Connection:
        """A new connection to a migrated schema. The caller closes it."""
        url = self.database_url()
        try:
            conn = psycopg.connect(url, application_name="canvas-assets", autocommit=True)
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WarehouseError(
                f"Cannot connect to the warehouse {redact_url(url)} ({reason}). "
                "Check CANVAS_WAREHOUSE_URL."
            ) from None
        migrate(conn, self.table_schema())
        return conn
