"""The developer key's current Canvas access token, shared by every process of an institution
(``canvas_access_token``, one row): read it, and replace it under a lock every process takes.

Why here: Canvas regenerates an authorisation's one access token on each refresh, so the code
server's runs and commands must all use the latest; the warehouse is what they all reach. The
table is readable by its owner only (migration 0006 and deploy/postgres/roles.sql take SELECT
back from readers), and the token is never logged or put in a message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from canvas_assets.warehouse.identifiers import qualified_table

TOKEN_TABLE = "canvas_access_token"


@dataclass(frozen=True)
class StoredToken:
    """The row: whose authorisation the token belongs to (a digest of client id and refresh
    token), the token, when it expires and when it is due for a refresh."""

    authorisation: str
    access_token: str = field(repr=False)
    expires_at: datetime | None
    refresh_at: datetime | None


def read_token(conn: psycopg.Connection, schema: str) -> StoredToken | None:
    query = sql.SQL("SELECT authorisation, access_token, expires_at, refresh_at FROM {}").format(
        qualified_table(schema, TOKEN_TABLE)
    )
    with conn.cursor(row_factory=class_row(StoredToken)) as cur:
        return cur.execute(query).fetchone()


@contextlib.contextmanager
def token_lock(conn: psycopg.Connection, schema: str) -> Iterator[None]:
    """A transaction holding the institution's token lock: one process at a time decides
    whether to refresh (and asks Canvas) while the others wait and then read its token."""
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{schema}/canvas-token",)
        )
        yield


def write_token(conn: psycopg.Connection, schema: str, token: StoredToken) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (singleton, authorisation, access_token, expires_at, refresh_at, "
            "issued_at) VALUES (true, %s, %s, %s, %s, now()) ON CONFLICT (singleton) DO UPDATE "
            "SET authorisation = EXCLUDED.authorisation, access_token = EXCLUDED.access_token, "
            "expires_at = EXCLUDED.expires_at, refresh_at = EXCLUDED.refresh_at, "
            "issued_at = EXCLUDED.issued_at"
        ).format(qualified_table(schema, TOKEN_TABLE)),
        (token.authorisation, token.access_token, token.expires_at, token.refresh_at),
    )
