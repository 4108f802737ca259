"""The one-command local stack: pieces that can be checked without starting Dagster.

Starting the whole stack is covered by test_daemon_e2e.py and by CI, which runs the README's
install-and-start command until the UI answers."""

import os
import subprocess
import sys

from canvas_assets.tools.processes import exclusive_lock


def test_second_dev_stack_on_the_same_state_folder_refuses_clearly(tmp_path) -> None:
    """Without this, two stacks would share one Postgres and two daemons would double-launch."""
    home = tmp_path / "home"
    with exclusive_lock(home / "dev.lock"):
        env = {**os.environ, "CANVAS_ASSETS_HOME": str(home)}
        second = subprocess.run(
            [sys.executable, "-m", "canvas_assets", "dev"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert second.returncode == 2
    assert "already running" in second.stderr and "CANVAS_ASSETS_HOME" in second.stderr


def test_cli_rejects_bad_settings_with_the_variable_name(tmp_path) -> None:
    """Without this, a typo in a setting would surface as a traceback deep in Dagster."""
    env = {**os.environ, "CANVAS_RECONCILE_CRON": "nightly"}
    result = subprocess.run(
        [sys.executable, "-c", "import canvas_assets.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "CANVAS_RECONCILE_CRON" in result.stderr


def test_production_refuses_a_local_disk_warehouse_by_name() -> None:
    """Without this, a production container started without CANVAS_WAREHOUSE_URL would quietly
    start an embedded PostgreSQL on its own disk and lose the warehouse with the container."""
    import pytest

    from canvas_assets.defs.resources import build_resources
    from canvas_assets.settings import SettingError, Settings

    settings = Settings.from_env({"CANVAS_EMBEDDED_WAREHOUSE": "false"})
    with pytest.raises(SettingError, match="CANVAS_WAREHOUSE_URL"):
        build_resources(settings)
    configured = {"CANVAS_EMBEDDED_WAREHOUSE": "false", "CANVAS_WAREHOUSE_URL": "postgresql://h/db"}
    assert build_resources(Settings.from_env(configured))["warehouse"].url
