"""The command line as users meet it: Dagster's own CLIs in the project folder, the dev stack's
state-folder rule, and a sandbox that survives restarts."""

import os
import subprocess
import sys
from pathlib import Path

from canvas_assets.sandbox import ChangeDriver, generate_institution
from canvas_assets.tools.local_pieces import load_institution, save_institution

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: no Dagster home, no stack addresses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANVAS_", "DAGSTER_"))}
    env["HOME"] = str(tmp_path)
    return env


def test_dagster_cli_loads_the_package_in_the_project_folder(tmp_path) -> None:
    """Without this, `dagster … -m canvas_assets` found no Definitions, and any dagster command
    in the project folder failed on the dev stack's instance config (CANVAS_DAGSTER_PG_URL)."""
    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "canvas_assets"],
        cwd=PROJECT, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "All code locations passed validation" in output
    assert "CANVAS_DAGSTER_PG_URL" not in output


def test_dg_checks_and_lists_the_definitions(tmp_path) -> None:
    """Without this, `dg check defs` / `dg list defs` (what Dagster's docs now teach) would not
    find the project."""
    env = _clean_env(tmp_path)
    check = subprocess.run(
        [str(BIN / "dg"), "check", "defs"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = subprocess.run(
        [str(BIN / "dg"), "list", "defs", "--json"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "canvas/enrollments" in listed.stdout and "canvas_live_events" in listed.stdout


def test_dev_started_outside_the_project_refuses_instead_of_a_second_stack(tmp_path) -> None:
    """Without this, `canvas-assets dev` typed in another folder silently started a second,
    empty stack there."""
    result = subprocess.run(
        [sys.executable, "-m", "canvas_assets", "dev"],
        cwd=tmp_path, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "not inside the canvas-assets project folder" in result.stderr
    assert "--home" in result.stderr and "CANVAS_ASSETS_HOME" in result.stderr
    assert not (tmp_path / ".canvas-assets").exists()


def test_the_sandbox_comes_back_as_the_last_session_left_it(tmp_path) -> None:
    """Without this, a restarted dev stack regenerated the sandbox from its seed while the
    warehouse kept the last session's changes, so the next backfill "removed" rows."""
    institution = generate_institution("small", seed=0)
    ChangeDriver(institution, None, None, seed=3).run(25)
    path = tmp_path / "sandbox-small.pickle"
    save_institution(institution, path, "small")
    restored, was_saved = load_institution(path, "small")
    assert was_saved
    for table in ("courses", "sections", "enrollments", "users"):
        assert getattr(restored, table) == getattr(institution, table), table
    assert restored.version == institution.version > 0
    fresh, was_saved = load_institution(path, "medium")  # another size: a new institution
    assert not was_saved and len(fresh.courses) > len(institution.courses)
