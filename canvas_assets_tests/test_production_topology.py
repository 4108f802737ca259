"""The production topology as separate processes: `dagster code-server start`, the webserver and
the daemon, each with its own DAGSTER_HOME (as if on its own machine), one PostgreSQL-backed
instance with the QueuedRunCoordinator (deploy/compose/dagster.yaml, verbatim), Dagster storage
under the least-privilege role of deploy/postgres/roles.sql. A semester backfill submitted to
the webserver and a Live Event from SQS flow through it; every run goes through the queue and
runs in its own process; nothing is left on any process's local disk."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import psycopg
import pytest
import requests
import yaml
from psycopg import sql

from canvas_assets.defs.sensors.live_events import IN_FLIGHT
from canvas_devstack.processes import free_port

from .deployment import DEPLOY, roles_from_roles_sql, storage_env
from .stack import services_env
from .truth import rename_course_in_canvas, semester_of

pytestmark = pytest.mark.slow  # Dagster's production processes, each on its own

BIN = Path(sys.executable).parent
SEMESTER_JOB = "canvas_semester_sync"
PID_EVENT = re.compile(r"Started process for run \(pid: (\d+)\)")


class Topology:
    """The three long-running Dagster processes, each in its own process group and log file."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        with (self.tmp_path / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited early\n{self.logs()}"

    def logs(self, tail: int = 2500) -> str:
        out = []
        for name in self.procs:
            text = (self.tmp_path / f"{name}.log").read_text(errors="replace")
            out.append(f"----- {name} -----\n{text[-tail:]}")
        return "\n".join(out)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _wait(predicate, timeout: float, topology: Topology, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topology.check_alive()
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{topology.logs()}")


def _clean_env() -> dict[str, str]:
    """This process's environment without any Canvas, AWS, Dagster or libpq setting."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CANVAS_", "AWS_", "DAGSTER_", "PG"))
    }


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (the webserver leaves empty telemetry folders, no files)."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def _run_pids(instance: dg.DagsterInstance, run_id: str) -> list[int]:
    """The process ids the code server reported starting for a run (its run worker)."""
    messages = [entry.message for entry in instance.all_logs(run_id) if entry.message]
    return [int(m.group(1)) for m in map(PID_EVENT.search, messages) if m]


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=5).ok
    except requests.ConnectionError:
        return False


def _healthy(port: int) -> bool:
    check = [str(BIN / "dagster"), "api", "grpc-health-check", "--port", str(port)]
    return subprocess.run(check, capture_output=True, timeout=60).returncode == 0


def _submit_backfill(port: int, semester: str) -> str:
    """What a user does in the UI: launch the semester job for one partition."""
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    return client.submit_job_execution(
        SEMESTER_JOB,
        repository_location_name="canvas_assets",
        repository_name="__repository__",
        tags={"dagster/partition": semester},
    )


@pytest.fixture
def dagster_storage_role(postgres_url):
    """A Dagster storage database and role made by deploy/postgres/roles.sql; dropped after."""
    with roles_from_roles_sql(postgres_url, "topo") as names:
        yield names


def _environments(postgres_url, roles, sandbox, queue, sqs_endpoint, homes, state_dir, semester):
    """The code server gets the project's settings and secrets; the webserver and the daemon
    get the Dagster storage settings and nothing else."""
    storage = storage_env(
        postgres_url, roles["dagster_db"], roles["dagster_role"], roles["dagster_password"]
    )
    base = _clean_env()
    code_env = {
        **base,
        **storage,
        **services_env(postgres_url, sandbox.url, queue, sqs_endpoint),
        "DAGSTER_HOME": str(homes["code"]),
        "CANVAS_ASSETS_HOME": str(state_dir),
        "CANVAS_TARGET_SEMESTERS": semester,
        # The sensor adds the partition; the backfill is launched from the webserver, by hand.
        "CANVAS_AUTO_IMPORT_SEMESTERS": "false",
        "CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS": "5",
        "CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS": "5",
    }
    code_env.pop("CANVAS_DAGSTER_PG_URL")  # the instance config names its storage
    web_env = {**base, **storage, "DAGSTER_HOME": str(homes["webserver"])}
    daemon_env = {**base, **storage, "DAGSTER_HOME": str(homes["daemon"])}
    return storage, code_env, web_env, daemon_env


def _start_services(topology, tmp_path, code_env, web_env, daemon_env):
    """Code server, then (once it answers) webserver and daemon, as compose starts them."""
    code_port, ui_port = free_port(), free_port()
    workspace = yaml.safe_load((DEPLOY / "compose" / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=code_port)
    workspace_path = tmp_path / "workspace.yaml"
    workspace_path.write_text(yaml.safe_dump(workspace))
    code = topology.start(
        "code-server",
        [str(BIN / "dagster"), "code-server", "start", "--host", "127.0.0.1",
         "--port", str(code_port), "--module-name", "canvas_assets.definitions",
         "--location-name", "canvas_assets"],
        code_env,
    )  # fmt: skip
    _wait(lambda: _healthy(code_port), 120, topology, "the code server")
    web = topology.start(
        "webserver",
        [str(BIN / "dagster-webserver"), "--host", "127.0.0.1", "--port", str(ui_port),
         "--workspace", str(workspace_path)],
        web_env,
    )  # fmt: skip
    daemon = topology.start(
        "daemon", [str(BIN / "dagster-daemon"), "run", "--workspace", str(workspace_path)],
        daemon_env,
    )  # fmt: skip
    return (code, web, daemon), ui_port


def _backfill_then_live_event(instance, conn, topology, ui_port, schema, semester, queue, inst):
    """The sensor adds the partition; a user launches the backfill through the webserver; then
    a Live Event from SQS reaches the table. Returns the backfill's run id."""
    _wait(
        lambda: semester in instance.get_dynamic_partitions("semester"),
        120, topology, "the semester partition",
    )  # fmt: skip
    _wait(lambda: _answers(ui_port), 120, topology, "the webserver")
    backfill_id = _submit_backfill(ui_port, semester)
    status = sql.SQL("SELECT status FROM {}.semester_sync_status WHERE semester = %s")
    status = status.format(sql.Identifier(schema))
    _wait(
        lambda: conn.execute(status, (semester,)).fetchone() == ("synced",),
        120, topology, "the backfill",
    )  # fmt: skip
    course_id = rename_course_in_canvas(inst, queue, semester, "Renamed in prod")
    course_name = sql.SQL(
        "SELECT name FROM {}.courses WHERE semester = %s AND institution_id = %s"
    ).format(sql.Identifier(schema))
    _wait(
        lambda: conn.execute(course_name, (semester, course_id)).fetchone()
        == ("Renamed in prod",),
        120, topology, "the Live Event",
    )  # fmt: skip
    return backfill_id


def _assert_runs_went_through_the_queue_in_their_own_processes(
    instance, topology, services, backfill_id
) -> None:
    def finished_runs():
        # The sensors keep requesting short runs (terms refreshes, applies): look at the runs
        # that finished, once the backfill and an apply are among them.
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
        pids = {run.run_id: _run_pids(instance, run.run_id) for run in runs}
        sources = {run.tags.get("canvas-assets/source") for run in runs}
        done = backfill_id in pids and "live_events" in sources and all(pids.values())
        return (runs, pids) if done else None

    runs, run_pids = _wait(finished_runs, 60, topology, "every run's process")
    unfinished = {dg.DagsterRunStatus.SUCCESS, *IN_FLIGHT}
    statuses = [(run.job_name, run.status) for run in instance.get_runs()]
    assert all(status in unfinished for _, status in statuses), statuses  # no run failed
    run_pid_set = {pid for pids in run_pids.values() for pid in pids}
    service_pids = {
        p.pid
        for proc in services
        for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]
        if p.pid not in run_pid_set
    }
    sources = {}
    for run in runs:
        run = instance.get_run_by_id(run.run_id)
        sources[run.run_id] = run.tags.get("canvas-assets/source")
        types = [entry.dagster_event_type for entry in instance.all_logs(run.run_id)]
        # Through the QueuedRunCoordinator: queued, then dequeued and launched by the daemon
        # (RUN_STARTING), then started by its worker.
        queued = types.index(dg.DagsterEventType.RUN_ENQUEUED)
        assert queued < types.index(dg.DagsterEventType.RUN_STARTING), run.job_name
        starting = types.index(dg.DagsterEventType.RUN_STARTING)
        assert starting < types.index(dg.DagsterEventType.RUN_START)
    # Each run in a process of its own, none of them a service's process.
    assert all(len(pids) == 1 for pids in run_pids.values()), run_pids
    pids = [pids[0] for pids in run_pids.values()]
    assert len(set(pids)) == len(runs)
    assert not set(pids) & service_pids
    assert backfill_id in run_pids
    assert "live_events" in sources.values(), sources


def test_production_topology_runs_a_backfill_and_a_live_event_in_separate_processes(
    postgres_url,
    dagster_storage_role,
    sandbox,
    institution,
    queue,
    sqs_endpoint,
    tmp_path,
    monkeypatch,
) -> None:
    """Without this, the deployments in deploy/ could fail where `canvas-assets dev` works: the
    webserver or daemon needing the project's secrets, sensors not running against a remote
    code server, runs not going through the queue or not starting in their own processes, or
    state left on one process's disk that a run on another machine would never see."""
    semester = sorted(semester_of(t) for t in institution.terms.values() if t["sis_term_id"])[0]
    homes = {name: tmp_path / f"{name}_home" for name in ("code", "webserver", "daemon", "test")}
    for home in homes.values():
        home.mkdir()
        shutil.copyfile(DEPLOY / "compose" / "dagster.yaml", home / "dagster.yaml")
    state_dir = tmp_path / "canvas_assets_home"  # must stay absent: no embedded PostgreSQL
    storage, code_env, web_env, daemon_env = _environments(
        postgres_url, dagster_storage_role, sandbox, queue, sqs_endpoint, homes, state_dir,
        semester,
    )  # fmt: skip
    schema = code_env["CANVAS_WAREHOUSE_SCHEMA"]
    topology = Topology(tmp_path)
    try:
        services, ui_port = _start_services(topology, tmp_path, code_env, web_env, daemon_env)
        for name, value in {**storage, "DAGSTER_HOME": str(homes["test"])}.items():
            monkeypatch.setenv(name, value)
        with (
            dg.DagsterInstance.get() as instance,
            psycopg.connect(postgres_url, autocommit=True) as conn,
        ):
            backfill_id = _backfill_then_live_event(
                instance, conn, topology, ui_port, schema, semester, queue, institution
            )
            _assert_runs_went_through_the_queue_in_their_own_processes(
                instance, topology, services, backfill_id
            )
        _, web, daemon = services
        assert "CANVAS_API_TOKEN" not in psutil.Process(web.pid).environ()
        assert "CANVAS_API_TOKEN" not in psutil.Process(daemon.pid).environ()
        children = [c for proc in services for c in psutil.Process(proc.pid).children(True)]
    finally:
        topology.stop()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    time.sleep(1)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    # Every process on its own machine: nothing any of them wrote stayed on local disk.
    assert not state_dir.exists(), _files(state_dir)
    for name in ("code", "webserver", "daemon"):
        assert _files(homes[name]) == ["dagster.yaml"], (name, _files(homes[name]))
