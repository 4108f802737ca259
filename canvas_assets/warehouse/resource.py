"""The PostgreSQL warehouse as a Dagster resource.

With no URL, the embedded PostgreSQL (pgserver) under the local state folder is used. The schema
is migrated once per process, on the first connection, not on every connection.
"""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import psycopg
from pydantic import Field

from canvas_assets.institutions import (
    DEFAULT_WAREHOUSE_SCHEMA,
    SettingError,
    validate_schema_name,
)
from canvas_assets.outcomes import first_line, redact_url
from canvas_assets.settings import DEFAULT_STATE_DIR
from canvas_assets.warehouse.embedded import embedded_database_url
from canvas_assets.warehouse.migrate import INSTITUTION, migrate


class WarehouseError(RuntimeError):
    pass


_migrated: set[tuple[str, str]] = set()
_migrated_lock = threading.Lock()


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
    schema_kind: str = Field(
        default=INSTITUTION,
        description="Which migrations the schema gets: an institution's tables, or the shared "
        "schema's (CANVAS_SHARED_SCHEMA: a shared queue's quarantine).",
    )

    def database_url(self) -> str:
        if self.url:
            if not self.url.startswith(("postgresql://", "postgres://")):
                raise WarehouseError(
                    "CANVAS_WAREHOUSE_URL must be a postgresql:// URL, got "
                    f"{redact_url(self.url)!r}."
                )
            return self.url
        return embedded_database_url(Path(self.state_dir or DEFAULT_STATE_DIR) / "postgres")

    def table_schema(self) -> str:
        try:
            return validate_schema_name(self.schema_name)
        except ValueError as exc:  # a resource built by hand, not from the settings
            raise SettingError(f"CANVAS_WAREHOUSE_SCHEMA {exc}.") from None

    def migrate_once(self) -> None:
        """Migrate the schema if this process has not yet: before another resource's
        connection writes into it (a shared queue's tick lands in every institution's schema)."""
        with _migrated_lock:
            done = (self.database_url(), self.table_schema()) in _migrated
        if not done:
            self.connect().close()

    def connect(self) -> psycopg.Connection:
        """A new autocommit connection to a migrated schema; use it as a context manager."""
        url = self.database_url()
        schema = self.table_schema()
        try:
            conn = psycopg.connect(url, application_name="canvas-assets", autocommit=True)
        except psycopg.OperationalError as exc:
            raise WarehouseError(
                f"Cannot connect to the warehouse {redact_url(url)} ({first_line(exc)}). "
                "Check CANVAS_WAREHOUSE_URL."
            ) from None
        try:
            with _migrated_lock:
                if (url, schema) not in _migrated:
                    migrate(conn, schema, self.schema_kind)
                    _migrated.add((url, schema))
        except BaseException:
            conn.close()
            raise
        return conn
