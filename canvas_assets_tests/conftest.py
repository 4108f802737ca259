"""Real pieces for every test: PostgreSQL, moto's SQS server, the Canvas sandbox over HTTP.

PostgreSQL is the embedded server (pgserver) unless CANVAS_TEST_DATABASE_URL names one. Each
test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import boto3
import dagster as dg
import psycopg
import pytest
from psycopg import sql

from canvas_assets.canvas import CanvasResource
from canvas_assets.live_events.sqs import SQSQueueResource
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.embedded import ensure_database
from canvas_devstack.processes import free_port
from canvas_sandbox import SandboxServer, generate_institution

SANDBOX_TOKEN = "test-token"
# Hypothesis profiles, the CANVAS_RELIABILITY_PROFILE knob and the `figures` fixture.
pytest_plugins = ["canvas_assets_tests.reliability"]


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("CANVAS_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")
    ensure_database(server.get_uri(), "canvas_test")
    yield server.get_uri("canvas_test")
    server.cleanup()


@pytest.fixture
def warehouse(postgres_url: str) -> Iterator[WarehouseResource]:
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield WarehouseResource(url=postgres_url, schema_name=schema)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def db(warehouse: WarehouseResource) -> Iterator[psycopg.Connection]:
    with warehouse.connect() as conn:
        yield conn


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def institution():
    return generate_institution("small", seed=7)


@pytest.fixture
def sandbox(institution) -> Iterator[SandboxServer]:
    server = SandboxServer(institution, token=SANDBOX_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def canvas(sandbox: SandboxServer) -> CanvasResource:
    return CanvasResource(base_url=sandbox.url, api_token=SANDBOX_TOKEN, max_retries=4)


@pytest.fixture
def queue(sqs_endpoint: str) -> SQSQueueResource:
    """A fresh canvas-live-events-* queue on moto's server."""
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    client = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1", **credentials)
    # A short visibility timeout makes un-deleted (crashed) messages come back quickly.
    url = client.create_queue(
        QueueName=f"canvas-live-events-{uuid.uuid4().hex[:8]}",
        Attributes={"VisibilityTimeout": "2"},
    )["QueueUrl"]
    return SQSQueueResource(
        queue_url=url, endpoint_url=sqs_endpoint, region_name="us-east-1", **credentials
    )


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance
