"""The command line as users meet it: Dagster's own CLIs in the project folder, the dev stack's
state-folder rule, and a sandbox that survives restarts."""

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from canvas_assets.commands import cli
from canvas_devstack.local_pieces import load_institution, save_institution
from canvas_sandbox import ChangeDriver, generate_institution

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: no Dagster home, no stack addresses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANVAS_", "DAGSTER_"))}
    env["HOME"] = str(tmp_path)
    return env


def test_dagster_cli_in_the_project_folder_finds_the_code_location_and_instance_settings(
    tmp_path,
) -> None:
    """Without this, a `dagster` command in the project folder (which reads the project's
    dagster.yaml beside its throwaway storage) could fail on settings only the dev stack can
    satisfy, or find no code location without `-m`."""
    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate"],
        cwd=PROJECT, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Validation successful for code location canvas_assets" in output
    assert "dagster.yaml" not in output and "CANVAS_DAGSTER_PG_URL" not in output


@pytest.mark.slow  # two `dg` processes loading the code location
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


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                yield from _commands(command)


def test_every_command_and_option_says_what_it_does_and_its_default() -> None:
    """Without this, `dev --help` and `sandbox --help` had no description and options such as
    --size, --port, --token and --seed no help and no default."""
    for command in _commands(cli.parser()):
        assert command.description, f"{command.prog} has no description"
        for action in command._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"{command.prog} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help"
            shown = issubclass(command.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
            if action.option_strings and not shown:
                assert "default" in action.help % {"default": action.default}, where
