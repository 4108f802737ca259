"""Every user-facing setting: its environment variable, default, type and error message.

The environment is read once, by ``Settings.from_env()``, when the code location loads (or a
command starts); everything else receives the ``Settings`` object. Secrets (Canvas tokens, the
warehouse URL with its password) are never read here: resources get them through ``dg.EnvVar``,
so Dagster keeps them out of the UI and run config. ``Settings`` only records whether they are
set, which decides between a real service and the embedded one.

The institutions served are ``Settings.institutions``: the entries of CANVAS_INSTITUTIONS_FILE
(``canvas_assets.institutions``), or the one institution of the CANVAS_* settings below.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    model_validator,
)

from canvas_assets.institutions import (
    CANVAS_API_TOKEN_ENV,
    DEFAULT_ACCOUNT_ID,
    DEFAULT_WAREHOUSE_SCHEMA,
    INSTITUTIONS_FILE_ENV,
    BaseUrl,
    Institution,
    InstitutionName,
    SchemaName,
    SemesterPatterns,
    SettingError,
    load_institutions,
)

DEFAULT_STATE_DIR = ".canvas-assets"
DEFAULT_SHARED_SCHEMA = "canvas_shared"

# Secrets and service addresses handed to resources as dg.EnvVar; Settings notes only whether
# each is set.
CANVAS_BASE_URL_ENV = "CANVAS_BASE_URL"
WAREHOUSE_URL_ENV = "CANVAS_WAREHOUSE_URL"
QUEUE_URL_ENV = "CANVAS_LIVE_EVENTS_QUEUE_URL"
ALERT_WEBHOOK_URL_ENV = "CANVAS_ALERT_WEBHOOK_URL"
ALERT_SLACK_TOKEN_ENV = "CANVAS_ALERT_SLACK_TOKEN"
ALERT_TEAMS_WEBHOOK_URL_ENV = "CANVAS_ALERT_TEAMS_WEBHOOK_URL"
ALERT_SMTP_PASSWORD_ENV = "CANVAS_ALERT_SMTP_PASSWORD"
ALERT_SECRETS = (
    ALERT_WEBHOOK_URL_ENV, ALERT_SLACK_TOKEN_ENV, ALERT_TEAMS_WEBHOOK_URL_ENV,
    ALERT_SMTP_PASSWORD_ENV,
)  # fmt: skip


def _comma_list(value: object) -> object:
    """A comma-separated variable as a tuple; empty parts are dropped."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _cron(value: str) -> str:
    if len(value.split()) != 5:
        raise ValueError("must be a 5-field cron expression like '0 3 * * *'")
    return value.strip()


def _home(value: object) -> object:
    return Path(value).expanduser().resolve() if isinstance(value, (str, Path)) else value


def _address(value: str) -> str:
    local, at, domain = value.strip().rpartition("@")
    if not (at and local and "." in domain) or any(c.isspace() for c in value.strip()):
        raise ValueError("must be an e-mail address like alerts@school.edu")
    return value.strip()


def _freshness_hours(value: float) -> float:
    if value < 1 / 60:  # Dagster's freshness policies take no window under a minute
        raise ValueError("must be at least 0.0167 hours (one minute), e.g. 26")
    return value


CommaList = Annotated[tuple[str, ...], BeforeValidator(_comma_list)]
FreshnessHours = Annotated[float, AfterValidator(_freshness_hours)]
Address = Annotated[str, AfterValidator(_address)]
Addresses = Annotated[tuple[Address, ...], BeforeValidator(_comma_list)]
Cron = Annotated[str, AfterValidator(_cron)]
StateDir = Annotated[Path, BeforeValidator(_home)]


class Settings(BaseModel):
    """The non-secret settings, parsed and checked once. Field aliases are the variables."""

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, extra="ignore", validate_default=True
    )

    # One deployment, many institutions: names this code location's assets, partitions, pool
    # and default schema so several can share one Dagster instance and one PostgreSQL.
    institution: InstitutionName | None = Field(None, alias="CANVAS_INSTITUTION")
    account_id: str = Field(DEFAULT_ACCOUNT_ID, alias="CANVAS_ACCOUNT_ID", min_length=1)
    max_concurrency: PositiveInt = Field(16, alias="CANVAS_MAX_CONCURRENCY")
    # Defaults to canvas, or canvas_<institution>.
    warehouse_schema: SchemaName = Field(DEFAULT_WAREHOUSE_SCHEMA, alias="CANVAS_WAREHOUSE_SCHEMA")
    # A vendor's institutions (canvas_assets.institutions); unset: the one institution above.
    institutions_file: Path | None = Field(None, alias=INSTITUTIONS_FILE_ENV)
    # What belongs to no institution: the shared queue's quarantine (unknown institutions).
    shared_schema: SchemaName = Field(DEFAULT_SHARED_SCHEMA, alias="CANVAS_SHARED_SCHEMA")
    # Local state (embedded PostgreSQL, Dagster home, dev lock); unset: see canvas_devstack.
    state_dir: StateDir | None = Field(None, alias="CANVAS_ASSETS_HOME")
    target_semesters: SemesterPatterns = Field((), alias="CANVAS_TARGET_SEMESTERS")
    auto_import_semesters: bool = Field(True, alias="CANVAS_AUTO_IMPORT_SEMESTERS")
    semester_sensor_interval_seconds: PositiveInt = Field(
        300, alias="CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS"
    )
    live_events_sensor_interval_seconds: PositiveInt = Field(
        10, alias="CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS"
    )
    reconcile_cron: Cron = Field("0 3 * * *", alias="CANVAS_RECONCILE_CRON")
    # Stream health checks on canvas/live_events.
    live_events_max_lag_seconds: PositiveInt = Field(
        300, alias="CANVAS_LIVE_EVENTS_MAX_LAG_SECONDS"
    )
    live_events_stall_seconds: PositiveInt = Field(3600, alias="CANVAS_LIVE_EVENTS_STALL_SECONDS")
    asset_owners: CommaList = Field(("team:data-engineering",), alias="CANVAS_ASSET_OWNERS")
    # boto3 reads AWS_DEFAULT_REGION itself; AWS_REGION is the name AWS's other SDKs use.
    aws_region: str | None = Field(None, alias="AWS_REGION")
    # CI: `canvas-assets dev` exits once the Dagster UI answers.
    dev_exit_when_ready: bool = Field(False, alias="CANVAS_ASSETS_DEV_EXIT_WHEN_READY")
    # Production sets false: with no CANVAS_WAREHOUSE_URL, fail instead of starting an embedded
    # PostgreSQL on the local disk of whatever machine runs the code.
    embedded_warehouse: bool = Field(True, alias="CANVAS_EMBEDDED_WAREHOUSE")
    # Whether each secret/service variable is set (its value stays with dg.EnvVar).
    canvas_configured: bool = False
    canvas_token_configured: bool = False
    warehouse_url_configured: bool = False
    live_events_queue_configured: bool = False
    # Filled by from_env (and by validation when built directly): never read from a variable.
    institutions: tuple[Institution, ...] = ()
    # Freshness and alerts (canvas_assets/alerts). The channels' secrets (ALERT_SECRETS: webhook
    # URLs, which may carry credentials, the Slack token, the SMTP password) stay with
    # dg.EnvVar; only whether each is set is recorded, in alert_secrets_set.
    freshness_hours: FreshnessHours = Field(26.0, alias="CANVAS_FRESHNESS_HOURS")
    ui_url: BaseUrl | None = Field(None, alias="CANVAS_ASSETS_UI_URL")
    alert_sensor_interval_seconds: PositiveInt = Field(
        30, alias="CANVAS_ALERT_SENSOR_INTERVAL_SECONDS"
    )
    slack_channel: str | None = Field(None, alias="CANVAS_ALERT_SLACK_CHANNEL", min_length=1)
    slack_api_url: BaseUrl = Field("https://slack.com/api", alias="CANVAS_ALERT_SLACK_API_URL")
    smtp_host: str | None = Field(None, alias="CANVAS_ALERT_SMTP_HOST", min_length=1)
    smtp_port: int = Field(587, alias="CANVAS_ALERT_SMTP_PORT", ge=1, le=65535)
    smtp_starttls: bool = Field(True, alias="CANVAS_ALERT_SMTP_STARTTLS")
    smtp_user: str | None = Field(None, alias="CANVAS_ALERT_SMTP_USER", min_length=1)
    email_from: Address | None = Field(None, alias="CANVAS_ALERT_EMAIL_FROM")
    email_to: Addresses = Field((), alias="CANVAS_ALERT_EMAIL_TO")
    alert_secrets_set: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _alert_channels_complete(self) -> Settings:
        """A channel set up halfway is refused at load, naming the variable that is missing."""
        secrets = self.alert_secrets_set
        needs = [
            (ALERT_SLACK_TOKEN_ENV in secrets and not self.slack_channel,
             "CANVAS_ALERT_SLACK_CHANNEL", f"{ALERT_SLACK_TOKEN_ENV} is set"),
            (self.slack_channel is not None and ALERT_SLACK_TOKEN_ENV not in secrets,
             ALERT_SLACK_TOKEN_ENV, "CANVAS_ALERT_SLACK_CHANNEL is set"),
            (self.smtp_host is not None and self.email_from is None,
             "CANVAS_ALERT_EMAIL_FROM", "CANVAS_ALERT_SMTP_HOST is set"),
            (self.smtp_host is not None and not self.email_to,
             "CANVAS_ALERT_EMAIL_TO", "CANVAS_ALERT_SMTP_HOST is set"),
            (self.smtp_user is not None and ALERT_SMTP_PASSWORD_ENV not in secrets,
             ALERT_SMTP_PASSWORD_ENV, "CANVAS_ALERT_SMTP_USER is set"),
            (ALERT_SMTP_PASSWORD_ENV in secrets and self.smtp_user is None,
             "CANVAS_ALERT_SMTP_USER", f"{ALERT_SMTP_PASSWORD_ENV} is set"),
        ]  # fmt: skip
        for missing, variable, because in needs:
            if missing:
                raise SettingError(f"{variable} must be set: {because}.")
        return self

    @model_validator(mode="before")
    @classmethod
    def _schema_from_institution(cls, values: object) -> object:
        """An institution's tables default to their own schema, canvas_<institution>."""
        if isinstance(values, dict):
            institution = values.get("CANVAS_INSTITUTION", values.get("institution"))
            has_schema = "CANVAS_WAREHOUSE_SCHEMA" in values or "warehouse_schema" in values
            valid = isinstance(institution, str) and institution.isidentifier()
            if valid and not has_schema:
                values = {**values, "CANVAS_WAREHOUSE_SCHEMA": f"canvas_{institution}"}
        return values

    @model_validator(mode="after")
    def _single_institution(self) -> Settings:
        """Without an institutions file, the one institution of the CANVAS_* settings."""
        if not self.institutions and self.institutions_file is None:
            single = Institution(
                name=self.institution,
                account_id=self.account_id,
                target_semesters=self.target_semesters,
                auto_import=self.auto_import_semesters,
                schema=self.warehouse_schema,
            )
            object.__setattr__(self, "institutions", (single,))
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the environment (or ``environ``); an empty variable means its default."""
        env = os.environ if environ is None else environ
        aliases = {field.alias for field in cls.model_fields.values() if field.alias}
        values: dict[str, object] = {
            name: env[name] for name in aliases if env.get(name, "").strip()
        }
        values["canvas_configured"] = bool(env.get(CANVAS_BASE_URL_ENV))
        values["canvas_token_configured"] = bool(env.get(CANVAS_API_TOKEN_ENV))
        values["warehouse_url_configured"] = bool(env.get(WAREHOUSE_URL_ENV))
        values["live_events_queue_configured"] = bool(env.get(QUEUE_URL_ENV))
        values["alert_secrets_set"] = frozenset(n for n in ALERT_SECRETS if env.get(n, "").strip())
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            raise SettingError(_describe(exc)) from None
        if settings.institutions_file is not None:
            # The deployment's own Target/Auto Import Semesters are every entry's defaults.
            defaults = {
                "target_semesters": settings.target_semesters,
                "auto_import": settings.auto_import_semesters,
            }
            loaded = load_institutions(settings.institutions_file, env, defaults)
            settings = settings.model_copy(update={"institutions": loaded})
        return settings


def _describe(exc: ValidationError) -> str:
    """One line per bad variable: its name, what it must be, and the value given."""
    lines = []
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, SettingError):  # already names its variable and value
            lines.append(str(cause))
            continue
        name = str(error["loc"][0])  # the variable (a list's item index adds nothing)
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}; got {error.get('input')!r}.")
    return " ".join(lines)
