"""Versioned migrations: ``migrations/NNNN_name.sql``, applied in order, once per schema.

An institution's schema gets ``migrations/*.sql``; the shared schema (what belongs to no
institution: a shared queue's quarantine) gets ``migrations/shared/*.sql``. Each file's first
line is ``-- <name>``; ``{schema}`` stands for the quoted schema name. All pending files run in
one transaction under an advisory lock, so concurrent starters wait and then find nothing to
do. Never edit a released migration: add a new file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from canvas_assets.institutions import validate_schema_name
from canvas_assets.warehouse.identifiers import qualified_table

_MIGRATION_LOCK_KEY = 0x43414E56  # "CANV": serialises migrations across processes
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
INSTITUTION, SHARED = "institution", "shared"
_FOLDERS = {INSTITUTION: "migrations", SHARED: "migrations/shared"}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    ddl: str


def migrations(kind: str = INSTITUTION) -> list[Migration]:
    """Every migration of a ``kind`` of schema shipped with the package, in version order."""
    found = []
    for entry in resources.files("canvas_assets.warehouse").joinpath(_FOLDERS[kind]).iterdir():
        match = _FILE.match(entry.name)
        if match is None:
            continue
        text = entry.read_text(encoding="utf-8")
        first, _, ddl = text.partition("\n")
        found.append(Migration(int(match.group(1)), first.removeprefix("--").strip(), ddl))
    return sorted(found, key=lambda m: m.version)


def migrate(conn: psycopg.Connection, schema: str, kind: str = INSTITUTION) -> list[int]:
    """Apply pending migrations of ``kind`` to ``schema``; return the versions applied now."""
    schema_ident = sql.Identifier(validate_schema_name(schema))
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        # Only when missing: CREATE SCHEMA, even IF NOT EXISTS, needs CREATE on the database,
        # which a role that owns just its schema (deploy/postgres/roles.sql) does not have.
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if not exists.fetchone():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema_ident))
        migrations_table = qualified_table(schema, "schema_migrations")
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(migrations_table)
        )
        done = {
            row[0]
            for row in conn.execute(sql.SQL("SELECT version FROM {}").format(migrations_table))
        }
        for migration in migrations(kind):
            if migration.version in done:
                continue
            # The only text substituted is the schema, quoted as an identifier by psycopg.
            ddl = migration.ddl.replace("{schema}", schema_ident.as_string(conn))
            conn.execute(ddl.encode())
            conn.execute(
                sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(migrations_table),
                (migration.version, migration.name),
            )
            applied_now.append(migration.version)
    return applied_now
