"""Process plumbing for the dev stack: free ports, a state-folder lock, stopping process groups,
waiting for a server to answer."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


class DevStackError(RuntimeError):
    pass


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    candidates = [preferred] if preferred else []
    for port in [*candidates, 0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise DevStackError("No free TCP port on 127.0.0.1.")


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise DevStackError(
            f"canvas-assets dev is already running with state folder {path.parent} ({owner}). "
            "Stop it, or set CANVAS_ASSETS_HOME to another folder to run a second stack."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(
    proc: subprocess.Popen, grace_seconds: float = 30.0, signum: int = signal.SIGTERM
) -> bool:
    """Stop a process and everything it started: ``signum`` to its process group (SIGTERM,
    which Dagster's processes handle as a shutdown, run workers recording the interruption;
    SIGINT, the Ctrl-C a user stops ``canvas-assets dev`` with), then whatever is still alive
    after ``grace_seconds`` is killed. That includes descendants that lead process groups of
    their own (dev's code servers, webserver and daemon), which would otherwise outlive a
    killed parent as orphans. False when the process itself had to be killed."""
    groups = {proc.pid, *_descendant_groups(proc.pid)}  # found by parentage while it lives
    deadline = time.monotonic() + grace_seconds
    stopped = True
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        try:
            proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            stopped = False
    # Run workers can outlive their parent for a moment while they record the interruption.
    while any(_group_alive(group) for group in groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    proc.wait()
    return stopped


def _descendant_groups(pid: int) -> set[int]:
    """Process groups led by descendants of ``pid`` (those started in sessions of their own)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    groups = set()
    for child in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(child.pid) == child.pid:
                groups.add(child.pid)
    return groups


def start_dev(
    args: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen:
    """``canvas-assets dev`` with ``args`` in its own process group, its output in ``log_path``:
    the whole local stack, for the tests and benchmarks that need it as a user runs it."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "canvas_assets", "dev", *args],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )


def wait_until_ready(proc: subprocess.Popen, url: str, timeout_seconds: float = 240.0) -> bool:
    """Poll the webserver until it answers; False if dagster exits or the time runs out."""
    import requests

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return True
        time.sleep(1.0)
    return False
