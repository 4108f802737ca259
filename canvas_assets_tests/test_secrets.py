"""Secrets never leave their settings: after a full backfill, a Live Events tick and apply, and a
failed apply (Canvas down), neither the Canvas API token nor the warehouse password appears in
stdout/stderr, Python logs, the Dagster instance's files (event log, run storage, compute logs),
run configs and tags, asset metadata, the sensor's result, or any warehouse table a reader can
see. With a developer key, neither do its client secret, its refresh token or any access token
Canvas issued; the current one is kept in canvas_access_token, which only the code location's
role may read (test_least_privilege.py)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from canvas_assets.defs.apply import build_apply_job
from canvas_assets.defs.assets import build_semester_tables
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.resources import build_resources
from canvas_assets.defs.sensors.live_events import build_live_events_sensor, queues_followed
from canvas_assets.settings import Settings
from canvas_sandbox import SandboxServer, envelope, global_id, send_envelopes

from .backfills import real_semesters
from .oauth import authorise, developer_key_env, sandbox_with_key
from .truth import expected_semester

TOKEN_TABLE = "canvas_access_token"  # readable by the code location's role only

# A hang under injected faults fails fast instead of eating the CI budget.
pytestmark = pytest.mark.timeout(240)


def _warehouse_text(url: str, schema: str) -> str:
    """Every row of every table of ``schema`` a reader may select, as text."""
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name <> %s",
            (schema, TOKEN_TABLE),
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(
                sql.SQL("SELECT t::text FROM {}.{} AS t").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            ).fetchall()
            out.extend(row for (row,) in rows)
    assert len(tables) >= 8 and out  # the scan read the tables it must
    return "\n".join(out)


def _instance_text(instance: dg.DagsterInstance, home: Path) -> str:
    """Every file under the instance's home (sqlite event log and run storage, compute logs),
    plus what its APIs return: runs with their configs and tags, every event log entry."""
    parts = [p.read_bytes().decode("utf-8", "replace") for p in home.rglob("*") if p.is_file()]
    for record in instance.get_run_records():
        run = record.dagster_run
        parts.append(json.dumps(run.run_config, default=str) + json.dumps(run.tags))
        parts.extend(
            str(r.event_log_entry) for r in instance.get_records_for_run(run.run_id).records
        )
    assert len(parts) > 10
    return "\n".join(parts)


def _canvas(institution, mode: str) -> tuple[SandboxServer, dict[str, str]]:
    """A sandbox, and the settings that reach it: a token, or a developer key whose tokens
    live two seconds (so the run is served by several)."""
    if mode == "token":
        token = f"canvas-token-{uuid.uuid4().hex}"
        sandbox = SandboxServer(institution, token=token).start()
        return sandbox, {"CANVAS_BASE_URL": sandbox.url, "CANVAS_API_TOKEN": token}
    sandbox = sandbox_with_key(institution, token_lifetime_seconds=2)
    return sandbox, developer_key_env(sandbox, authorise(sandbox))


def _secrets(sandbox: SandboxServer, environment: dict[str, str], password: str) -> dict:
    found = {"password": [password], "token": [environment.get("CANVAS_API_TOKEN", "")]}
    if sandbox.oauth is not None:
        found["client secret"] = [environment["CANVAS_CLIENT_SECRET"]]
        found["refresh token"] = [environment["CANVAS_REFRESH_TOKEN"]]
        found["access tokens"] = list(sandbox.oauth.issued)  # every one Canvas issued
        assert len(found["access tokens"]) >= 4  # several lifetimes' worth
    return {name: [s for s in values if s] for name, values in found.items()}


@pytest.mark.slow  # scans everything a backfill, apply and sensor leave behind
@pytest.mark.parametrize("mode", ["token", "developer_key"])
def test_the_token_and_the_database_password_appear_nowhere(
    institution, postgres_url, sqs_endpoint, queue, tmp_path, monkeypatch, capfd, caplog,
    figures, mode,
) -> None:  # fmt: skip
    """Without this, the Canvas token (or the developer key's secret, refresh token and access
    tokens) or the warehouse password could leak into the Dagster UI (run configs, logs,
    metadata), into compute logs that are shipped elsewhere, or into the warehouse, where every
    analyst can read it."""
    caplog.set_level("DEBUG")
    password = f"pw-{uuid.uuid4().hex}"
    schema = f"secrets_{uuid.uuid4().hex[:8]}"
    # Trust auth ignores the password, but it travels in the URL as a real one would.
    url = postgres_url.replace("postgres:@", f"postgres:{password}@", 1)
    assert password in url
    sandbox, credentials = _canvas(institution, mode)
    environment = {
        **credentials,
        "CANVAS_WAREHOUSE_URL": url,
        "CANVAS_WAREHOUSE_SCHEMA": schema,
        "CANVAS_LIVE_EVENTS_QUEUE_URL": queue.queue_url,
        "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    resources = build_resources(settings)
    namespaces = [Namespace(settings.institutions[0])]
    home = tmp_path / "dagster-home"
    home.mkdir()
    semester = real_semesters(institution)[0]
    try:
        with dg.DagsterInstance.local_temp(tempdir=str(home)) as instance:
            instance.add_dynamic_partitions("semester", [semester])
            backfill = dg.materialize(
                [build_semester_tables(settings, namespaces[0])], partition_key=semester,
                resources=resources, instance=instance,
            )  # fmt: skip
            assert backfill.success
            course = next(iter(expected_semester(institution, semester)["courses"]))
            with institution.lock:
                institution.courses[course]["name"] = "Renamed, secretly"
            event = envelope(
                institution, "course_updated",
                {"course_id": str(global_id(course)), "name": "Renamed, secretly"},
                event_time=datetime.now(UTC) + timedelta(seconds=1),
            )  # fmt: skip
            send_envelopes(queue.client(), queue.queue_url, [event])
            sensor = build_live_events_sensor(settings, queues_followed(settings, namespaces)[0])
            # A developer key's Canvas holds its warehouse: Dagster opens such resources as
            # context managers.
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                tick = sensor(context)
            assert isinstance(tick, dg.SensorResult) and tick.run_requests
            apply_job = build_apply_job(namespaces)
            request = tick.run_requests[0]
            sandbox.faults.error_rate = 1.0  # a failed apply: error messages are logged too
            failed = apply_job.execute_in_process(
                run_config=request.run_config, resources=resources,
                instance=instance, raise_on_error=False,
            )  # fmt: skip
            sandbox.faults.error_rate = 0.0
            if sandbox.oauth is not None:
                time.sleep(2.1)  # the apply after a token's life: another token
            applied = apply_job.execute_in_process(
                run_config=request.run_config, resources=resources,
                instance=instance,
            )  # fmt: skip
            assert not failed.success and applied.success
            captured = capfd.readouterr()
            places = {
                "stdout/stderr": captured.out + captured.err,
                "Python logs": caplog.text,
                "Dagster instance (event log, run storage, compute logs, run configs)": (
                    _instance_text(instance, home)
                ),
                "sensor result (tick, asset metadata)": repr(tick),
                "warehouse tables": _warehouse_text(postgres_url, schema),
            }
            secrets = _secrets(sandbox, environment, password)
    finally:
        sandbox.stop()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    assert "Renamed, secretly" in places["warehouse tables"]  # the scan saw the applied data
    leaks = {
        place: [name for name, values in secrets.items() if any(v in text for v in values)]
        for place, text in places.items()
    }
    assert leaks == {place: [] for place in places}
    figures(
        f"secrets ({mode})",
        scanned={place: f"{len(text):,} characters" for place, text in places.items()},
        secrets_looked_for={name: len(values) for name, values in secrets.items()},
        hits=0,
    )
