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
import re
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
    CANVAS_CLIENT_ID_ENV,
    CANVAS_CLIENT_SECRET_ENV,
    CANVAS_REFRESH_TOKEN_ENV,
    DEFAULT_ACCOUNT_ID,
    DEFAULT_WAREHOUSE_SCHEMA,
    INSTITUTIONS_FILE_ENV,
    AccountId,
    BaseUrl,
    Institution,
    InstitutionName,
    SchemaName,
    SemesterPatterns,
    SettingError,
    load_institutions,
    single_credentials,
)
from canvas_assets.outcomes import redact_url

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


# One cron field: *, a number or a range, each with an optional /step, comma-separated.
_CRON_PART = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?$")
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _cron(value: str) -> str:
    fields = value.split()
    rule = "must be a 5-field cron expression like '0 3 * * *' (minute hour day month weekday)"
    if len(fields) != 5:
        raise ValueError(rule)
    for field, (low, high) in zip(fields, _CRON_RANGES, strict=True):
        for part in field.split(","):
            if not _CRON_PART.match(part):
                raise ValueError(rule)
            numbers = [int(n) for n in re.findall(r"\d+", part.split("/")[0])]
            if any(not low <= n <= high for n in numbers):
                raise ValueError(f"{rule}; {part!r} is outside {low}-{high}")
    return " ".join(fields)


# Dagster's rule for an asset owner: an e-mail address or a team.
_OWNER = re.compile(r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")


def _owners(value: tuple[str, ...]) -> tuple[str, ...]:
    bad = [owner for owner in value if not _OWNER.match(owner)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not an owner: use an e-mail address or team:<name>")
    return value


def _queue_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be the queue's URL, e.g. https://sqs.us-east-1.amazonaws.com/1/q")
    return value


def _home(value: object) -> object:
    if not isinstance(value, (str, Path)):
        return value
    home = Path(value).expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise ValueError("must be a folder (or not exist yet), not a file")
    return home


def _address(value: str) -> str:
    local, at, domain = value.strip().rpartition("@")
    if not (at and local and "." in domain) or any(c.isspace() for c in value.strip()):
        raise ValueError("must be an e-mail address like alerts@school.edu")
    return value.strip()


def _freshness_hours(value: float) -> float:
    if value < 1 / 60:  # Dagster's freshness policies take no window under a minute
        raise ValueError("must be at least 0.0167 hours (one minute), e.g. 26")
    return value


FreshnessHours = Annotated[float, AfterValidator(_freshness_hours)]
Address = Annotated[str, AfterValidator(_address)]
Addresses = Annotated[tuple[Address, ...], BeforeValidator(_comma_list)]
Owners = Annotated[tuple[str, ...], BeforeValidator(_comma_list), AfterValidator(_owners)]
Cron = Annotated[str, AfterValidator(_cron)]
QueueUrl = Annotated[str, AfterValidator(_queue_url)]
StateDir = Annotated[Path, BeforeValidator(_home)]


class Settings(BaseModel):
    """The non-secret settings, parsed and checked once. Field aliases are the variables."""

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, extra="ignore", validate_default=True
    )

    # One deployment, many institutions: names this code location's assets, partitions, pool
    # and default schema so several can share one Dagster instance and one PostgreSQL.
    institution: InstitutionName | None = Field(None, alias="CANVAS_INSTITUTION")
    account_id: AccountId = Field(DEFAULT_ACCOUNT_ID, alias="CANVAS_ACCOUNT_ID")
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
    asset_owners: Owners = Field(("team:data-engineering",), alias="CANVAS_ASSET_OWNERS")
    # boto3 reads AWS_DEFAULT_REGION itself; AWS_REGION is the name AWS's other SDKs use.
    aws_region: str | None = Field(None, alias="AWS_REGION")
    # CI: `canvas-assets dev` exits once the Dagster UI answers.
    dev_exit_when_ready: bool = Field(False, alias="CANVAS_ASSETS_DEV_EXIT_WHEN_READY")
    # Production sets false: with no CANVAS_WAREHOUSE_URL, fail instead of starting an embedded
    # PostgreSQL on the local disk of whatever machine runs the code.
    embedded_warehouse: bool = Field(True, alias="CANVAS_EMBEDDED_WAREHOUSE")
    # Checked when set (the values themselves reach resources through dg.EnvVar).
    canvas_base_url: BaseUrl | None = Field(None, alias=CANVAS_BASE_URL_ENV)
    live_events_queue_url: QueueUrl | None = Field(None, alias=QUEUE_URL_ENV)
    # Whether each secret/service variable is set (its value stays with dg.EnvVar).
    canvas_configured: bool = False
    canvas_token_configured: bool = False
    warehouse_url_configured: bool = False
    live_events_queue_configured: bool = False
    # Filled by from_env (and by validation when built directly): never read from a variable.
    institutions: tuple[Institution, ...] = ()
    # Canvas by a developer key (OAuth2), the alternative to CANVAS_API_TOKEN: whether each of
    # its variables is set (their values stay with dg.EnvVar). One way or the other, not both.
    canvas_client_id_configured: bool = False
    canvas_client_secret_configured: bool = False
    canvas_refresh_token_configured: bool = False
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
                **single_credentials(
                    self.canvas_token_configured,
                    (
                        self.canvas_client_id_configured,
                        self.canvas_client_secret_configured,
                        self.canvas_refresh_token_configured,
                    ),
                    self.canvas_configured,
                ),
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
        _check_secret_urls(env)
        values["canvas_client_id_configured"] = bool(env.get(CANVAS_CLIENT_ID_ENV))
        values["canvas_client_secret_configured"] = bool(env.get(CANVAS_CLIENT_SECRET_ENV))
        values["canvas_refresh_token_configured"] = bool(env.get(CANVAS_REFRESH_TOKEN_ENV))
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


def _check_secret_urls(env: Mapping[str, str]) -> None:
    """The form of the URLs that are secrets: only checked, never kept. The warehouse's is
    shown without its password; a webhook's (its path is the credential) not at all."""
    url = env.get(WAREHOUSE_URL_ENV, "").strip()
    if url and not url.startswith(("postgresql://", "postgres://")):
        raise SettingError(
            f"{WAREHOUSE_URL_ENV} must be a postgresql:// URL, got {redact_url(url)!r}."
        )
    for name in (ALERT_WEBHOOK_URL_ENV, ALERT_TEAMS_WEBHOOK_URL_ENV):
        url = env.get(name, "").strip()
        if url and not url.startswith(("https://", "http://")):
            raise SettingError(f"{name} must be an https:// URL (its value, a secret, not shown).")


def _describe(exc: ValidationError) -> str:
    """One line per bad variable: its name, what it must be, and the value given."""
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across variables: its message names them
            lines.append(message)
            continue
        name = str(error["loc"][0])  # the variable (a list's item index adds nothing)
        given = repr(error.get("input"))
        lines.append(f"{name}: {message}" + ("." if given in message else f"; got {given}."))
    return " ".join(lines)
