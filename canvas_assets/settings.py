"""Every user-facing setting: its environment variable, default and parsing.

Settings that are secrets (the Canvas token, the warehouse URL) are never read here; they reach
resources through ``dg.EnvVar`` so Dagster keeps them out of the UI and run config.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ACCOUNT_ID = "self"
DEFAULT_WAREHOUSE_SCHEMA = "canvas"
DEFAULT_SEMESTER_SENSOR_INTERVAL_SECONDS = 300
DEFAULT_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS = 30
DEFAULT_RECONCILE_CRON = "0 3 * * *"
DEFAULT_CANVAS_CONCURRENCY_LIMIT = 2

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingError(ValueError):
    """A setting has a value we cannot use; the message names the environment variable."""


def parse_bool(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingError(f"{name} must be true or false, got {value!r}.")


def parse_positive_int(name: str, value: str | None, default: int) -> int:
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingError(f"{name} must be a whole number, got {value!r}.") from None
    if number <= 0:
        raise SettingError(f"{name} must be greater than 0, got {number}.")
    return number


def parse_target_semesters(value: str | None) -> tuple[str, ...]:
    """Split CANVAS_TARGET_SEMESTERS into keys or shell-style patterns; empty means all."""
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def semester_matches(key: str, patterns: tuple[str, ...]) -> bool:
    """True when ``key`` is wanted by Target Semesters (no patterns means every semester)."""
    return not patterns or any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def validate_schema_name(schema: str) -> str:
    if not _IDENTIFIER.match(schema):
        raise SettingError(
            f"CANVAS_WAREHOUSE_SCHEMA must be a plain PostgreSQL identifier (letters, digits, "
            f"underscores, not starting with a digit), got {schema!r}."
        )
    return schema


def _cron(value: str | None) -> str:
    cron = (value or "").strip() or DEFAULT_RECONCILE_CRON
    if len(cron.split()) != 5:
        raise SettingError(
            f"CANVAS_RECONCILE_CRON must be a 5-field cron expression like '0 3 * * *', "
            f"got {value!r}."
        )
    return cron


def state_dir() -> Path:
    """Local state folder (embedded Postgres data, Dagster home, dev lock)."""
    return Path(os.environ.get("CANVAS_ASSETS_HOME") or ".canvas-assets").resolve()


@dataclass(frozen=True)
class SyncSettings:
    """Non-secret sync preferences, read once when the code location loads."""

    target_semesters: tuple[str, ...]
    auto_import_semesters: bool
    semester_sensor_interval_seconds: int
    live_events_sensor_interval_seconds: int = DEFAULT_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS
    reconcile_cron: str = DEFAULT_RECONCILE_CRON

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SyncSettings:
        env = os.environ if environ is None else environ
        return cls(
            target_semesters=parse_target_semesters(env.get("CANVAS_TARGET_SEMESTERS")),
            auto_import_semesters=parse_bool(
                "CANVAS_AUTO_IMPORT_SEMESTERS", env.get("CANVAS_AUTO_IMPORT_SEMESTERS"), True
            ),
            semester_sensor_interval_seconds=parse_positive_int(
                "CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS",
                env.get("CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS"),
                DEFAULT_SEMESTER_SENSOR_INTERVAL_SECONDS,
            ),
            live_events_sensor_interval_seconds=parse_positive_int(
                "CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS",
                env.get("CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS"),
                DEFAULT_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS,
            ),
            reconcile_cron=_cron(env.get("CANVAS_RECONCILE_CRON")),
        )
