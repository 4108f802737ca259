"""The resources every asset, sensor and command uses, built from ``Settings``.

Secrets and service addresses reach resources as ``dg.EnvVar``, so Dagster resolves them where
the code runs and never shows them in the UI or run config.
"""

from __future__ import annotations

import dagster as dg

from canvas_assets.canvas import CanvasResource
from canvas_assets.live_events.sqs import SQSQueueResource
from canvas_assets.settings import (
    CANVAS_API_TOKEN_ENV,
    CANVAS_BASE_URL_ENV,
    QUEUE_URL_ENV,
    WAREHOUSE_URL_ENV,
    SettingError,
    Settings,
)
from canvas_assets.warehouse import WarehouseResource


def canvas_resource(settings: Settings) -> CanvasResource:
    return CanvasResource(
        base_url=dg.EnvVar(CANVAS_BASE_URL_ENV),
        api_token=dg.EnvVar(CANVAS_API_TOKEN_ENV),
        account_id=settings.account_id,
        max_concurrency=settings.max_concurrency,
    )


def warehouse_resource(settings: Settings) -> WarehouseResource:
    # No URL means the embedded PostgreSQL under the state folder, where that is allowed.
    if not settings.warehouse_url_configured and not settings.embedded_warehouse:
        raise SettingError(
            "CANVAS_WAREHOUSE_URL is not set and CANVAS_EMBEDDED_WAREHOUSE=false: set "
            "CANVAS_WAREHOUSE_URL to the warehouse's postgresql:// URL."
        )
    return WarehouseResource(
        url=dg.EnvVar(WAREHOUSE_URL_ENV) if settings.warehouse_url_configured else None,
        schema_name=settings.warehouse_schema,
        state_dir=str(settings.state_dir) if settings.state_dir else None,
    )


def sqs_resource(settings: Settings) -> SQSQueueResource:
    # Endpoint and credentials come from boto3's own environment variables.
    return SQSQueueResource(
        queue_url=dg.EnvVar(QUEUE_URL_ENV) if settings.live_events_queue_configured else None,
        region_name=settings.aws_region,
    )


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "canvas": canvas_resource(settings),
        "warehouse": warehouse_resource(settings),
        "sqs": sqs_resource(settings),
    }
