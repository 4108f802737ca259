"""The resources every asset, sensor and command uses, built from ``Settings``: per institution
its Canvas (its own token, so its own throttle budget) and its warehouse schema; the shared Live
Events queue; and, for a vendor, the shared schema that keeps messages of no institution.

Secrets and service addresses reach resources as ``dg.EnvVar``, so Dagster resolves them where
the code runs and never shows them in the UI or run config.
"""

from __future__ import annotations

from typing import TypeVar

import dagster as dg

from canvas_assets.alerts.channels import AlertChannels
from canvas_assets.canvas import CanvasResource
from canvas_assets.defs.canvas_oauth import OAuthCanvasResource
from canvas_assets.defs.namespace import Namespace
from canvas_assets.institutions import Institution
from canvas_assets.live_events.sqs import SQSQueueResource
from canvas_assets.settings import (
    ALERT_SLACK_TOKEN_ENV,
    ALERT_SMTP_PASSWORD_ENV,
    ALERT_TEAMS_WEBHOOK_URL_ENV,
    ALERT_WEBHOOK_URL_ENV,
    CANVAS_BASE_URL_ENV,
    QUEUE_URL_ENV,
    WAREHOUSE_URL_ENV,
    SettingError,
    Settings,
)
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.migrate import SHARED

R = TypeVar("R", bound=dg.ConfigurableResource)
SHARED_QUEUE = "sqs"
SHARED_WAREHOUSE = "warehouse_shared"
ALERTS = "alerts"


def canvas_resource(
    settings: Settings, institution: Institution, warehouse: WarehouseResource | None = None
) -> CanvasResource:
    """The institution's Canvas: with its token, or with its developer key, whose shared access
    token is kept in ``warehouse`` (the institution's schema)."""
    common = {
        "base_url": institution.base_url or dg.EnvVar(CANVAS_BASE_URL_ENV),
        "account_id": institution.account_id,
        "max_concurrency": settings.max_concurrency,
    }
    if not institution.developer_key:
        assert institution.token_env is not None  # one way or the other (institutions.py)
        return CanvasResource(
            api_token=dg.EnvVar(institution.token_env), token_setting=institution.token_env,
            **common,
        )  # fmt: skip
    names = [
        institution.client_id_env, institution.client_secret_env, institution.refresh_token_env
    ]  # fmt: skip
    return OAuthCanvasResource(
        client_id=dg.EnvVar(names[0]),
        client_secret=dg.EnvVar(names[1]),
        refresh_token=dg.EnvVar(names[2]),
        key_settings=names,
        warehouse=warehouse or warehouse_resource(settings, institution.schema_name),
        **common,
    )


def warehouse_resource(
    settings: Settings, schema: str, kind: str | None = None
) -> WarehouseResource:
    # No URL means the embedded PostgreSQL under the state folder, where that is allowed.
    if not settings.warehouse_url_configured and not settings.embedded_warehouse:
        raise SettingError(
            "CANVAS_WAREHOUSE_URL is not set and CANVAS_EMBEDDED_WAREHOUSE=false: set "
            "CANVAS_WAREHOUSE_URL to the warehouse's postgresql:// URL."
        )
    extra = {"schema_kind": kind} if kind else {}
    return WarehouseResource(
        url=dg.EnvVar(WAREHOUSE_URL_ENV) if settings.warehouse_url_configured else None,
        schema_name=schema,
        state_dir=str(settings.state_dir) if settings.state_dir else None,
        **extra,
    )


def shared_queue(settings: Settings) -> SQSQueueResource:
    # Endpoint and credentials come from boto3's own environment variables.
    return SQSQueueResource(
        queue_url=dg.EnvVar(QUEUE_URL_ENV) if settings.live_events_queue_configured else None,
        region_name=settings.aws_region,
    )


def alert_channels(settings: Settings) -> AlertChannels:
    """The alert channels; a secret that is not set stays None (an unset dg.EnvVar would stop
    the code location), which leaves its channel unconfigured."""

    def secret(name: str) -> dg.EnvVar | None:
        return dg.EnvVar(name) if name in settings.alert_secrets_set else None

    return AlertChannels(
        webhook_url=secret(ALERT_WEBHOOK_URL_ENV),
        slack_token=secret(ALERT_SLACK_TOKEN_ENV),
        slack_channel=settings.slack_channel,
        slack_api_url=settings.slack_api_url,
        teams_webhook_url=secret(ALERT_TEAMS_WEBHOOK_URL_ENV),
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        smtp_starttls=settings.smtp_starttls,
        smtp_user=settings.smtp_user,
        smtp_password=secret(ALERT_SMTP_PASSWORD_ENV),
        email_from=settings.email_from,
        email_to=list(settings.email_to),
    )


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    resources: dict[str, dg.ConfigurableResource] = {
        SHARED_QUEUE: shared_queue(settings),
        ALERTS: alert_channels(settings),
    }
    if settings.institutions_file is not None:
        resources[SHARED_WAREHOUSE] = warehouse_resource(settings, settings.shared_schema, SHARED)
    for institution in settings.institutions:
        namespace = Namespace(institution)
        warehouse = warehouse_resource(settings, institution.schema_name)
        resources[namespace.resource_key("canvas")] = canvas_resource(
            settings, institution, warehouse
        )
        resources[namespace.resource_key("warehouse")] = warehouse
        if institution.queue_url:
            resources[namespace.resource_key("sqs")] = SQSQueueResource(
                queue_url=institution.queue_url, region_name=settings.aws_region
            )
    return resources


def ready(resource: R) -> R:
    """A resource with its ``dg.EnvVar``s resolved, for a command (outside a run). A resource
    that holds another (a developer key's Canvas holds its warehouse) is set up as a context
    manager by Dagster; none of these tears anything down, so it is used after the block."""
    with resource.process_config_and_initialize_cm() as resolved:
        return resolved


def institution_resource(resources: object, namespace: Namespace, kind: str):
    """The institution's ``canvas`` or ``warehouse`` out of a context's ``resources``."""
    return getattr(resources, namespace.resource_key(kind))


def resource_keys(namespace: Namespace) -> set[str]:
    return {namespace.resource_key("canvas"), namespace.resource_key("warehouse")}
