"""The one-command local stack: pieces that can be checked without starting Dagster.

Starting the whole stack is covered by test_daemon_e2e.py and by CI, which runs the README's
install-and-start command until the UI answers."""

import os
import signal
import subprocess
import sys
import time

import psutil

from canvas_assets.settings import Settings
from canvas_assets.warehouse.status import mark_semesters_added
from canvas_devstack.preflight import untargeted_semesters
from canvas_devstack.processes import exclusive_lock, stop_process_group


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
        [sys.executable, "-c", "from canvas_assets import definitions; definitions.defs()"],
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


# A stand-in for `canvas-assets dev`: starts a child in a session of its own (as dev starts its
# code servers, webserver and daemon), prints the child's pid, and does not stop on Ctrl-C.
STUBBORN_PARENT = """
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_stopping_a_stuck_parent_also_stops_the_children_in_their_own_sessions() -> None:
    """Without this, a `canvas-assets dev` that did not stop within the Ctrl-C grace was killed
    alone: its code server and webserver, in sessions of their own, ran on as orphans (once
    they held the benchmark's Canvas budget and made a later fetch test throttle)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", STUBBORN_PARENT], stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    child = int(parent.stdout.readline())
    assert os.getpgid(child) == child != parent.pid
    assert stop_process_group(parent, 2.0, signal.SIGINT) is False  # it had to be killed
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != "zombie":
        assert time.monotonic() < deadline, "the child in its own session outlived its parent"
        time.sleep(0.1)


def test_dev_says_at_start_which_imported_semesters_are_no_longer_targeted(
    warehouse, db, postgres_url
) -> None:
    """Without this, a narrowed CANVAS_TARGET_SEMESTERS silently closed the Live Events of
    semesters already imported, and nothing at start said so."""
    mark_semesters_added(db, warehouse.table_schema(), ["2025FA", "2026SP", "2026FA"])
    settings = Settings(
        target_semesters=("2026F?",), CANVAS_WAREHOUSE_SCHEMA=warehouse.table_schema()
    )
    (line,) = untargeted_semesters(settings, postgres_url)
    assert line.startswith("canvas: 2025FA, 2026SP imported but outside Target Semesters")
    assert "CANVAS_TARGET_SEMESTERS" in line
    everything = Settings(CANVAS_WAREHOUSE_SCHEMA=warehouse.table_schema())
    assert untargeted_semesters(everything, postgres_url) == []


def test_dev_with_oauth_gives_the_code_location_a_developer_key_that_works(
    tmp_path, queue, warehouse, postgres_url, capsys, monkeypatch
) -> None:
    """Without this, `canvas-assets dev --oauth` could hand the code location half a key, or
    the sandbox token after all, and trying the OAuth path locally would try nothing."""
    import contextlib

    from canvas_assets.commands.canvas_check import run_check
    from canvas_assets.settings import Settings
    from canvas_devstack.devstack import _single_site

    env = {"CANVAS_LIVE_EVENTS_QUEUE_URL": queue.queue_url}
    with contextlib.ExitStack() as stack:
        site = _single_site(env, tmp_path, stack, "small", 3600.0, 3600.0)
        assert "CANVAS_API_TOKEN" not in site.env
        database = {"CANVAS_WAREHOUSE_URL": postgres_url,
                    "CANVAS_WAREHOUSE_SCHEMA": warehouse.schema_name}  # fmt: skip
        for name, value in {**site.env, **database}.items():  # as the code server gets them
            monkeypatch.setenv(name, value)
        settings = Settings.from_env()
        assert settings.institutions[0].developer_key
        capsys.readouterr()
        code = run_check(settings)
        output = capsys.readouterr().out
    assert code == 0, output
    assert "developer key CANVAS_CLIENT_ID" in output
