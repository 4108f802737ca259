"""The single Dagster entry point of canvas-assets."""

import os

import dagster as dg

from canvas_assets.assets import live_events, semester_tables, terms
from canvas_assets.canvas import CanvasResource
from canvas_assets.jobs import semester_sync_job, terms_sync_job
from canvas_assets.sensors import (
    build_live_events_sensor,
    build_reconciliation_schedule,
    build_semester_auto_import_sensor,
)
from canvas_assets.settings import DEFAULT_ACCOUNT_ID, DEFAULT_WAREHOUSE_SCHEMA, SyncSettings
from canvas_assets.sqs import SQSQueueResource
from canvas_assets.warehouse import WarehouseResource


def _warehouse() -> WarehouseResource:
    # Unset URL means the embedded PostgreSQL; an EnvVar keeps a set URL (it has a password)
    # out of the UI.
    url = dg.EnvVar("CANVAS_WAREHOUSE_URL") if os.environ.get("CANVAS_WAREHOUSE_URL") else None
    return WarehouseResource(
        url=url,
        schema_name=os.environ.get("CANVAS_WAREHOUSE_SCHEMA") or DEFAULT_WAREHOUSE_SCHEMA,
        state_dir=os.environ.get("CANVAS_ASSETS_HOME") or None,
    )


def _canvas() -> CanvasResource:
    return CanvasResource(
        base_url=dg.EnvVar("CANVAS_BASE_URL"),
        api_token=dg.EnvVar("CANVAS_API_TOKEN"),
        account_id=os.environ.get("CANVAS_ACCOUNT_ID") or DEFAULT_ACCOUNT_ID,
        max_concurrency=int(os.environ.get("CANVAS_MAX_CONCURRENCY") or 8),
    )


def _sqs() -> SQSQueueResource:
    # Region, endpoint and credentials come from boto3's own environment variables.
    queue = os.environ.get("CANVAS_LIVE_EVENTS_QUEUE_URL")
    return SQSQueueResource(queue_url=dg.EnvVar("CANVAS_LIVE_EVENTS_QUEUE_URL") if queue else None)


def build_definitions() -> dg.Definitions:
    settings = SyncSettings.from_env()
    return dg.Definitions(
        assets=[terms, live_events, semester_tables],
        jobs=[terms_sync_job, semester_sync_job],
        sensors=[
            build_semester_auto_import_sensor(settings),
            build_live_events_sensor(settings),
        ],
        schedules=[build_reconciliation_schedule(settings)],
        resources={"canvas": _canvas(), "warehouse": _warehouse(), "sqs": _sqs()},
    )


defs = build_definitions()
