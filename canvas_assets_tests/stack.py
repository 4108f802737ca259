"""The environment that points a local stack (or Dagster processes) at the tests' real parts:
the sandbox over HTTP, moto's SQS server, and PostgreSQL with a database of its own for Dagster."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg

from canvas_assets.warehouse.embedded import ensure_database

from .conftest import SANDBOX_TOKEN


def database_url(server_url: str, database: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))


def services_env(postgres_url: str, sandbox_url: str, queue, sqs_endpoint: str) -> dict[str, str]:
    """Canvas, warehouse (a fresh schema), Dagster storage (a fresh database) and the queue."""
    dagster_db = f"dagster_{uuid.uuid4().hex[:8]}"
    ensure_database(postgres_url, dagster_db)
    return {
        "CANVAS_BASE_URL": sandbox_url,
        "CANVAS_API_TOKEN": SANDBOX_TOKEN,
        "CANVAS_WAREHOUSE_URL": postgres_url,
        "CANVAS_WAREHOUSE_SCHEMA": f"stack_{uuid.uuid4().hex[:8]}",
        "CANVAS_DAGSTER_PG_URL": database_url(postgres_url, dagster_db),
        "CANVAS_LIVE_EVENTS_QUEUE_URL": queue.queue_url,
        "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def dg_runs(dagster_url: str) -> dict[str, str]:
    """Each run's status, by run id, read from the Dagster instance's own database."""
    with psycopg.connect(dagster_url) as conn:
        return dict(conn.execute("SELECT run_id, status FROM runs").fetchall())
