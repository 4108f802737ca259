"""The embedded PostgreSQL (pgserver) used when no warehouse URL is configured.

Its data lives under the local state folder, so tables survive restarts.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
from psycopg import sql

WAREHOUSE_DATABASE = "canvas"
DAGSTER_DATABASE = "dagster"


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
