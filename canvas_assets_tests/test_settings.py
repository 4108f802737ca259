"""The README's promise for its settings table: a bad value of any setting stops the code
location (and ``canvas-assets dev``) with a message naming the variable."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from canvas_assets.settings import SettingError, Settings
from canvas_devstack.preflight import check_canvas, check_warehouse
from canvas_devstack.processes import DevStackError

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_A_FOLDER = Path(__file__)

# Each setting the code location reads, with a value it must refuse.
BAD_VALUES = {
    "CANVAS_BASE_URL": "school.instructure.com",
    "CANVAS_ACCOUNT_ID": "main",
    "CANVAS_MAX_CONCURRENCY": "0",
    "CANVAS_WAREHOUSE_URL": "mysql://user:hunter2@db/canvas",
    "CANVAS_WAREHOUSE_SCHEMA": "canvas-data",
    "CANVAS_EMBEDDED_WAREHOUSE": "nope",
    "CANVAS_INSTITUTIONS_FILE": "/nonexistent/institutions.yaml",
    "CANVAS_SHARED_SCHEMA": "1shared",
    "CANVAS_INSTITUTION": "state university",
    "CANVAS_TARGET_SEMESTERS": "[",
    "CANVAS_AUTO_IMPORT_SEMESTERS": "flase",
    "CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS": "5m",
    "CANVAS_LIVE_EVENTS_QUEUE_URL": "canvas-live-events",
    "CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS": "-1",
    "CANVAS_LIVE_EVENTS_MAX_LAG_SECONDS": "0",
    "CANVAS_LIVE_EVENTS_STALL_SECONDS": "an hour",
    "CANVAS_RECONCILE_CRON": "0 25 * * *",
    "CANVAS_ASSET_OWNERS": "data engineering",
    "CANVAS_ASSETS_HOME": str(NOT_A_FOLDER),
    "CANVAS_ASSETS_DEV_EXIT_WHEN_READY": "sometimes",
    "CANVAS_FRESHNESS_HOURS": "0",
    "CANVAS_ASSETS_UI_URL": "localhost:3000",
    "CANVAS_ALERT_SENSOR_INTERVAL_SECONDS": "0",
    "CANVAS_ALERT_WEBHOOK_URL": "hooks.example.com/hunter2",
    "CANVAS_ALERT_TEAMS_WEBHOOK_URL": "outlook.office.com/webhook/hunter2",
    "CANVAS_ALERT_SLACK_API_URL": "slack.com/api",
    "CANVAS_ALERT_SMTP_PORT": "99999",
    "CANVAS_ALERT_SMTP_STARTTLS": "perhaps",
    "CANVAS_ALERT_EMAIL_FROM": "alerts",
    "CANVAS_ALERT_EMAIL_TO": "data@school.edu, nobody",
}
# Settings that only go wrong with another: set alone, each names the one it needs.
NEEDS_ANOTHER = {
    "CANVAS_ALERT_SLACK_TOKEN": "CANVAS_ALERT_SLACK_CHANNEL",
    "CANVAS_ALERT_SLACK_CHANNEL": "CANVAS_ALERT_SLACK_TOKEN",
    "CANVAS_ALERT_SMTP_HOST": "CANVAS_ALERT_EMAIL_FROM",
    "CANVAS_ALERT_SMTP_USER": "CANVAS_ALERT_SMTP_PASSWORD",
    "CANVAS_ALERT_SMTP_PASSWORD": "CANVAS_ALERT_SMTP_USER",
}
# Settings whose bad values only a server can judge: `canvas-assets dev` checks them before
# it starts anything (tested below).
CHECKED_BY_THE_DEV_PREFLIGHT = {
    "CANVAS_API_TOKEN", "CANVAS_CLIENT_ID", "CANVAS_CLIENT_SECRET", "CANVAS_REFRESH_TOKEN",
    "CANVAS_DAGSTER_PG_URL",
}  # fmt: skip
# Not ours to check: boto3 reads its own; the tests' own variables.
NOT_OURS = {
    "AWS_ENDPOINT_URL_SQS",
    "AWS_REGION",
    "CANVAS_TEST_DATABASE_URL",
    "CANVAS_TEST_CHROMIUM",
}


def _readme_settings() -> set[str]:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_every_setting_in_the_readme_table_is_tried_with_a_bad_value() -> None:
    """Without this, a setting added to the README's table could go unvalidated, and a typo in
    it would be silently taken for something else."""
    tried = set(BAD_VALUES) | set(NEEDS_ANOTHER) | CHECKED_BY_THE_DEV_PREFLIGHT | NOT_OURS
    assert _readme_settings() - tried == set()
    assert set(BAD_VALUES) <= _readme_settings()


@pytest.mark.parametrize(("variable", "bad"), sorted(BAD_VALUES.items()))
def test_a_bad_value_fails_naming_its_variable(variable: str, bad: str) -> None:
    """Without this, a bad value was accepted: e.g. CANVAS_TARGET_SEMESTERS='[' matched no
    semester and Live Events of imported semesters were silently closed as out_of_target."""
    with pytest.raises(SettingError) as raised:
        Settings.from_env({variable: bad})
    message = str(raised.value)
    assert variable in message and "\n" not in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({}, "CANVAS_API_TOKEN"),
        ({"CANVAS_CLIENT_ID": "10000000000001"}, "CANVAS_CLIENT_SECRET"),
        ({"CANVAS_API_TOKEN": "t", "CANVAS_CLIENT_ID": "1"}, "CANVAS_CLIENT_SECRET"),
    ],
)
def test_incomplete_canvas_credentials_name_what_is_missing(given: dict, named: str) -> None:
    """Without this, a Canvas with no credential, or half a developer key, loaded and failed
    later in every run (or crashed the settings' own error message)."""
    with pytest.raises(SettingError, match=named) as raised:
        Settings.from_env({"CANVAS_BASE_URL": "https://school.instructure.com", **given})
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("variable", "needed"), sorted(NEEDS_ANOTHER.items()))
def test_a_setting_that_needs_another_names_it(variable: str, needed: str) -> None:
    """Without this, an alert channel set up halfway loaded, and its alerts went nowhere."""
    with pytest.raises(SettingError, match=needed) as raised:
        Settings.from_env({variable: "hunter2@school.edu"})
    assert "\n" not in str(raised.value) and "hunter2" not in str(raised.value)


def test_a_refused_canvas_token_stops_the_dev_preflight_naming_it(sandbox, monkeypatch) -> None:
    """Without this, `canvas-assets dev` said "ready" with a token Canvas refuses."""
    settings = Settings.from_env({"CANVAS_BASE_URL": sandbox.url, "CANVAS_API_TOKEN": "x"})
    with monkeypatch.context() as env:
        env.setenv("CANVAS_BASE_URL", sandbox.url)
        env.setenv("CANVAS_API_TOKEN", "wrong-token")
        with pytest.raises(DevStackError, match="CANVAS_API_TOKEN") as raised:
            check_canvas(settings, settings.institutions[0])
    assert "wrong-token" not in str(raised.value) and "\n" not in str(raised.value)


def test_an_unreachable_dagster_database_stops_the_dev_preflight_naming_it() -> None:
    """Without this, a bad CANVAS_DAGSTER_PG_URL printed hundreds of lines of Dagster's retries."""
    url = "postgresql://dagster:hunter2@127.0.0.1:1/dagster"
    with pytest.raises(DevStackError) as raised:
        check_warehouse(url, "CANVAS_DAGSTER_PG_URL")
    message = str(raised.value)
    assert message.startswith("CANVAS_DAGSTER_PG_URL") and "refused" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (
            {"CANVAS_WAREHOUSE_URL": "postgresql://nobody:hunter2@127.0.0.1:1/x"},
            "CANVAS_WAREHOUSE_URL",
        ),
        ({"CANVAS_BASE_URL": "http://127.0.0.1:9", "CANVAS_API_TOKEN": "t"}, "CANVAS_BASE_URL"),
        ({"CANVAS_TARGET_SEMESTERS": "["}, "CANVAS_TARGET_SEMESTERS"),
    ],
)
def test_dev_stops_before_starting_anything_with_one_line_naming_the_setting(
    settings: dict[str, str], named: str, tmp_path: Path
) -> None:
    """Without this, an unreachable warehouse printed 770 lines of tracebacks before "Dagster
    did not start", and an unreachable Canvas said "ready"."""
    env = {"PATH": "/usr/bin:/bin", "CANVAS_ASSETS_HOME": str(tmp_path / "home"), **settings}
    done = subprocess.run(
        [sys.executable, "-m", "canvas_assets", "dev"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, lines
    assert named in lines[0] and "hunter2" not in lines[0]
    assert not (tmp_path / "home" / "postgres").exists()  # nothing was started
