"""What `canvas-assets dev` shows in the terminal: the addresses, one line per sandbox change and
one line per failure (a run, a sensor tick). Dagster's own output (the webserver's access log,
the daemon's and code servers' INFO lines) goes to log files in ``<state>/logs/`` unless
``--verbose`` asks for everything."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from canvas_assets.outcomes import first_line

WATCH_SECONDS = 3.0
IN_FLIGHT_NAMES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")


def service_output(home: Path, name: str, verbose: bool) -> IO[bytes] | None:
    """Where a Dagster service's stdout and stderr go: its log file, or the terminal."""
    if verbose:
        return None
    folder = home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return (folder / f"{name}.log").open("ab")


def say(line: str) -> None:
    print(line, flush=True)


@contextlib.contextmanager
def dagster_instance(env: dict[str, str]) -> Iterator[object]:
    """The stack's Dagster instance, opened from this process (its storage is in env)."""
    import dagster as dg

    os.environ["CANVAS_DAGSTER_PG_URL"] = env["CANVAS_DAGSTER_PG_URL"]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        yield instance


def _run_failure(instance, run) -> str:
    """A failed run's reason in one line: its step's failure description, else its error."""
    import dagster as dg

    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = record.dagster_event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return first_line(Exception(data.user_failure_data.description))
        if data.error is not None:
            cause = data.error.cause or data.error
            return first_line(Exception(cause.message))
    return "see the run's logs in the UI"


class FailureWatcher:
    """Prints one line for each run that fails and each sensor tick that fails, while the
    stack runs (Dagster's own logs hold the details)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.stop = threading.Event()
        self._seen: set[str] = set()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="failures")

    def start(self) -> FailureWatcher:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        since = time.time()
        with contextlib.suppress(Exception), dagster_instance(self.env) as instance:
            while not self.stop.wait(WATCH_SECONDS):
                with contextlib.suppress(Exception):  # a restarting database: next round
                    self._runs(instance, since)
                    self._ticks(instance, since)

    def _runs(self, instance, since: float) -> None:
        import dagster as dg

        failed = dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE],
            created_after=datetime.fromtimestamp(since, UTC),
        )
        for record in instance.get_run_records(filters=failed, limit=20):
            run = record.dagster_run
            if run.run_id in self._seen:
                continue
            self._seen.add(run.run_id)
            partition = run.tags.get("dagster/partition")
            where = f"{run.job_name} {partition}" if partition else run.job_name
            say(f"failed: run {where}: {_run_failure(instance, run)}")

    def _ticks(self, instance, since: float) -> None:
        for state in instance.all_instigator_state():
            ticks = instance.get_ticks(
                state.instigator_origin_id, state.selector_id, after=since, limit=5
            )
            for tick in ticks:
                key = f"tick:{state.instigator_name}:{tick.tick_id}"
                if key in self._seen or tick.status.value != "FAILURE" or tick.error is None:
                    continue
                self._seen.add(key)
                cause = tick.error.cause or tick.error
                reason = first_line(Exception(cause.message))
                say(f"failed: sensor {state.instigator_name}: {reason}")


def cancel_runs_in_flight(env: dict[str, str], timeout: float = 60.0) -> int:
    """Cancel every run queued or in flight through Dagster (the run coordinator terminates
    started ones), and wait until they are no longer in flight. Returns how many."""
    import dagster as dg

    statuses = [getattr(dg.DagsterRunStatus, name) for name in IN_FLIGHT_NAMES]
    with dagster_instance(env) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=statuses))
        for run in runs:
            with contextlib.suppress(Exception):  # a run that ended meanwhile
                instance.run_coordinator.cancel_run(run.run_id)
        deadline = time.monotonic() + timeout
        waiting = {run.run_id for run in runs}
        while waiting and time.monotonic() < deadline:
            time.sleep(0.5)
            waiting = {
                run_id
                for run_id in waiting
                if (found := instance.get_run_by_id(run_id)) is not None
                and found.status in statuses + [dg.DagsterRunStatus.CANCELING]
            }
    return len(runs)
