"""Dagster's services for the local stack, in the production shape: one gRPC code server per code
location (each with its own environment, so its Canvas token and queue stay its own), and the
webserver and daemon loading them from a workspace file."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from canvas_devstack.processes import DevStackError, free_port, stop_process_group

CODE_SERVER_STARTUP_SECONDS = 180.0


@dataclass(frozen=True)
class CodeServer:
    location: str
    port: int
    proc: subprocess.Popen


# The project's instance settings, at the root of the checkout these tools are installed from.
PROJECT_INSTANCE = Path(__file__).resolve().parents[2] / "dagster.yaml"
# Run and event history in the stack's PostgreSQL (start_postgres sets the address).
STORAGE = {"storage": {"postgres": {"postgres_url": {"env": "CANVAS_DAGSTER_PG_URL"}}}}


def write_instance(home: Path) -> Path:
    """``<state>/dagster_home/dagster.yaml``: the project's dagster.yaml, with storage in the
    stack's PostgreSQL."""
    if not PROJECT_INSTANCE.is_file():
        raise DevStackError(
            f"The project's dagster.yaml is not at {PROJECT_INSTANCE}: install the local tools "
            "from the project folder (pip install -e ./local)."
        )
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance = {**STORAGE, **yaml.safe_load(PROJECT_INSTANCE.read_text())}
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
    return dagster_home


def start_code_server(
    location: str, env: dict[str, str], stack: contextlib.ExitStack, output: IO[bytes] | None
) -> CodeServer:
    port = free_port()
    command = [
        sys.executable, "-m", "dagster", "code-server", "start",
        "-h", "127.0.0.1", "-p", str(port),
        "-m", "canvas_assets.definitions", "--location-name", location,
        "--log-level", "info",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=output, stderr=subprocess.STDOUT
    )
    stack.callback(stop_process_group, proc)
    return CodeServer(location, port, proc)


def wait_for_code_servers(servers: list[CodeServer], env: dict[str, str]) -> None:
    """Until each server answers a health check (loading the code can take seconds)."""
    deadline = time.monotonic() + CODE_SERVER_STARTUP_SECONDS
    for server in servers:
        while True:
            if server.proc.poll() is not None:
                raise DevStackError(
                    f"The code server of {server.location} exited; see its log in the state "
                    "folder (logs/code-server.log), or run with --verbose."
                )
            check = subprocess.run(
                [sys.executable, "-m", "dagster", "api", "grpc-health-check", "-p",
                 str(server.port)],
                env=env, capture_output=True,
            )  # fmt: skip
            if check.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise DevStackError(f"The code server of {server.location} did not start.")
            time.sleep(1)


def write_workspace(home: Path, servers: list[CodeServer]) -> Path:
    workspace = home / "workspace.yaml"
    entries = "".join(
        f"  - grpc_server:\n      host: 127.0.0.1\n      port: {s.port}\n"
        f"      location_name: {s.location}\n"
        for s in servers
    )
    workspace.write_text(f"load_from:\n{entries}")
    return workspace


@dataclass(frozen=True)
class Services:
    """The webserver (the UI at ``port``) and the daemon (sensors, schedules, run queue)."""

    webserver: subprocess.Popen
    daemon: subprocess.Popen
    port: int


def start_webserver_and_daemon(
    env: dict[str, str],
    workspace: Path,
    port: int,
    stack: contextlib.ExitStack,
    outputs: tuple[IO[bytes] | None, IO[bytes] | None],
) -> Services:
    """dagster-webserver (on ``port``) and dagster-daemon, each in its own process group,
    writing to ``outputs`` (their log files, or the terminal when None)."""
    common = ["-w", str(workspace), "--log-level", "info"]
    bin_dir = Path(sys.executable).parent  # the environment's own Dagster commands
    webserver = [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)]
    daemon = [str(bin_dir / "dagster-daemon"), "run"]
    procs = []
    for command, output in zip((webserver + common, daemon + common), outputs, strict=True):
        proc = subprocess.Popen(
            command, env=env, start_new_session=True, stdout=output, stderr=subprocess.STDOUT
        )
        stack.callback(stop_process_group, proc)
        procs.append(proc)
    return Services(procs[0], procs[1], port)
