"""Every user-facing setting: its environment variable, default, type and error message.

The environment is read once, by ``Settings.from_env()``, when the code location loads (or a
command starts); everything else receives the ``Settings`` object. Secrets (the Canvas token,
the warehouse URL with its password) are never read here: resources get them through
``dg.EnvVar``, so Dagster keeps them out of the UI and run config. ``Settings`` only records
whether they are set, which decides between a real service and the embedded one.
"""

from __future__ import annotations

import fnmatch
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
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    model_validator,
)

DEFAULT_ACCOUNT_ID = "self"
DEFAULT_WAREHOUSE_SCHEMA = "canvas"
DEFAULT_STATE_DIR = ".canvas-assets"

# Secrets and service addresses handed to resources as dg.EnvVar; Settings notes only whether
# each is set.
CANVAS_BASE_URL_ENV = "CANVAS_BASE_URL"
CANVAS_API_TOKEN_ENV = "CANVAS_API_TOKEN"
WAREHOUSE_URL_ENV = "CANVAS_WAREHOUSE_URL"
QUEUE_URL_ENV = "CANVAS_LIVE_EVENTS_QUEUE_URL"


class SettingError(ValueError):
    """A setting has a value we cannot use; the message names the environment variable."""


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


_IDENTIFIER_RULE = (
    "must be a plain PostgreSQL identifier (letters, digits, underscores, not starting with a "
    "digit)"
)


def validate_schema_name(schema: str) -> str:
    """The schema name, if it is a plain PostgreSQL identifier; else a SettingError naming
    CANVAS_WAREHOUSE_SCHEMA (also the rule of the ``warehouse_schema`` setting)."""
    if not _IDENTIFIER.match(schema):
        raise SettingError(f"CANVAS_WAREHOUSE_SCHEMA {_IDENTIFIER_RULE}, got {schema!r}.")
    return schema


def _comma_list(value: object) -> object:
    """A comma-separated variable as a tuple; empty parts are dropped."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


_INSTITUTION = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def _institution(value: str) -> str:
    if not _INSTITUTION.match(value):
        raise ValueError(
            "must be a short lowercase name (letters, digits, underscores, starting with a "
            "letter), e.g. state_u"
        )
    return value


def _cron(value: str) -> str:
    if len(value.split()) != 5:
        raise ValueError("must be a 5-field cron expression like '0 3 * * *'")
    return value.strip()


def _home(value: object) -> object:
    return Path(value).expanduser().resolve() if isinstance(value, (str, Path)) else value


# Comma-separated semester keys or shell-style patterns (2026*); empty means all.
SemesterPatterns = Annotated[tuple[str, ...], BeforeValidator(_comma_list)]
CommaList = Annotated[tuple[str, ...], BeforeValidator(_comma_list)]
InstitutionName = Annotated[str, AfterValidator(_institution)]
SchemaName = Annotated[str, AfterValidator(validate_schema_name)]
Cron = Annotated[str, AfterValidator(_cron)]
StateDir = Annotated[Path, BeforeValidator(_home)]


def semester_matches(key: str, patterns: tuple[str, ...]) -> bool:
    """True when ``key`` is wanted by Target Semesters (no patterns means every semester)."""
    return not patterns or any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


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
    # Local state (embedded PostgreSQL, Dagster home, dev lock); unset: see tools/devstack.py.
    state_dir: StateDir | None = Field(None, alias="CANVAS_ASSETS_HOME")
    target_semesters: SemesterPatterns = Field((), alias="CANVAS_TARGET_SEMESTERS")
    auto_import_semesters: bool = Field(True, alias="CANVAS_AUTO_IMPORT_SEMESTERS")
    semester_sensor_interval_seconds: PositiveInt = Field(
        300, alias="CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS"
    )
    live_events_sensor_interval_seconds: PositiveInt = Field(
        30, alias="CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS"
    )
    reconcile_cron: Cron = Field("0 3 * * *", alias="CANVAS_RECONCILE_CRON")
    # How long one Live Events apply run keeps applying a semester's new events before it
    # ends (it ends sooner once idle); 0 applies once per run.
    apply_run_window_seconds: NonNegativeInt = Field(
        600, alias="CANVAS_APPLY_RUN_WINDOW_SECONDS", le=3000
    )
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

    @model_validator(mode="before")
    @classmethod
    def _schema_from_institution(cls, values: object) -> object:
        """An institution's tables default to their own schema, canvas_<institution>."""
        if isinstance(values, dict):
            institution = values.get("CANVAS_INSTITUTION", values.get("institution"))
            has_schema = "CANVAS_WAREHOUSE_SCHEMA" in values or "warehouse_schema" in values
            valid = isinstance(institution, str) and _INSTITUTION.match(institution)
            if valid and not has_schema:
                values = {**values, "CANVAS_WAREHOUSE_SCHEMA": f"canvas_{institution}"}
        return values

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
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """One line per bad variable: its name, what it must be, and the value given."""
    lines = []
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, SettingError):  # already names its variable and value
            lines.append(str(cause))
            continue
        name = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}; got {error.get('input')!r}.")
    return " ".join(lines)
