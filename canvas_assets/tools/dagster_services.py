"""Dagster's services for the local stack, in the production shape: one gRPC code server per code
location (each with its own environment, so its Canvas token and queue stay its own), and the
webserver and daemon loading them from a workspace file."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from canvas_assets.tools.processes import DevStackError, free_port, stop_process_group

CODE_SERVER_STARTUP_SECONDS = 180.0


@dataclass(frozen=True)
class CodeServer:
    location: str
    port: int
    proc: subprocess.Popen


def write_instance(home: Path) -> Path:
    """``<state>/dagster_home/dagster.yaml``: the local stack's instance config."""
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    source = resources.files("canvas_assets.tools").joinpath("dagster.yaml")
    (dagster_home / "dagster.yaml").write_text(source.read_text())
    return dagster_home


def start_code_server(
    location: str, env: dict[str, str], stack: contextlib.ExitStack
) -> CodeServer:
    port = free_port()
    command = [
        sys.executable, "-m", "dagster", "code-server", "start",
        "-h", "127.0.0.1", "-p", str(port),
        "-m", "canvas_assets.definitions", "--location-name", location,
        "--log-level", "info",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    stack.callback(stop_process_group, proc)
    return CodeServer(location, port, proc)


def wait_for_code_servers(servers: list[CodeServer], env: dict[str, str]) -> None:
    """Until each server answers a health check (loading the code can take seconds)."""
    deadline = time.monotonic() + CODE_SERVER_STARTUP_SECONDS
    for server in servers:
        while True:
            if server.proc.poll() is not None:
                raise DevStackError(f"The code server of {server.location} exited; see above.")
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


def start_webserver_and_daemon(
    env: dict[str, str], workspace: Path, ui_port: int, stack: contextlib.ExitStack
) -> tuple[subprocess.Popen, int]:
    """dagster-webserver and dagster-daemon, each in its own process group."""
    port = free_port(ui_port)
    common = ["-w", str(workspace), "--log-level", "info"]
    webserver = [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port)]
    daemon = [sys.executable, "-m", "dagster._daemon", "run"]
    procs = []
    for command in (webserver + common, daemon + common):
        proc = subprocess.Popen(command, env=env, start_new_session=True)
        stack.callback(stop_process_group, proc)
        procs.append(proc)
    return procs[0], port
