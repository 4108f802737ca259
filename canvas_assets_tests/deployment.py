"""Helpers for the deployment tests: the deploy/ files, PostgreSQL roles, Helm rendering."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import psycopg
import yaml
from psycopg import sql

from canvas_assets.settings import ALERT_SECRETS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ROLES_SQL = DEPLOY / "postgres" / "roles.sql"

# Every variable that holds a secret: it may be named in deployment files, never given a value.
SECRET_VARIABLES = (
    "CANVAS_API_TOKEN",
    "CANVAS_CLIENT_SECRET",
    "CANVAS_REFRESH_TOKEN",
    "CANVAS_WAREHOUSE_URL",
    "DAGSTER_POSTGRES_PASSWORD",
    "DAGSTER_PG_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "POSTGRES_PASSWORD",
    "CANVAS_WAREHOUSE_PASSWORD",
    *ALERT_SECRETS,
)


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def project_instance_config() -> dict:
    """The project's own dagster.yaml, at the project root (the dev stack's instance)."""
    return load_yaml(ROOT / "dagster.yaml")


def database_url(server_url: str, database: str, user: str | None = None) -> str:
    parts = urlsplit(server_url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(path=f"/{database}", netloc=netloc))


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def storage_env(server_url: str, database: str, user: str, password: str) -> dict[str, str]:
    """DAGSTER_POSTGRES_* for Dagster's documented `postgres_db` block. A Unix-socket server
    (the embedded one) gets an empty host and PGHOST, which libpq reads when no host is given."""
    parts = urlsplit(server_url)
    query = dict(parse_qsl(parts.query))
    env = {
        "DAGSTER_POSTGRES_HOST": parts.hostname or "",
        "DAGSTER_POSTGRES_PORT": str(parts.port or 5432),
        "DAGSTER_POSTGRES_USER": user,
        "DAGSTER_POSTGRES_PASSWORD": password,
        "DAGSTER_POSTGRES_DB": database,
    }
    if not parts.hostname and "host" in query:
        env["PGHOST"] = unquote(query["host"])
    return env


def psql() -> str:
    """psql of the embedded PostgreSQL package (a dependency), else the one on PATH."""
    import pgserver

    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    return str(bundled) if bundled.exists() else "psql"


def run_roles_sql(admin_url: str, **variables: str) -> str:
    """Run deploy/postgres/roles.sql exactly as DEPLOYMENT.md says, with psql variables."""
    command = [psql(), admin_url, "-v", "ON_ERROR_STOP=1", "-X", "-q"]
    for name, value in variables.items():
        command += ["-v", f"{name}={value}"]
    command += ["-f", str(ROLES_SQL)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def roles_from_roles_sql(
    admin_url: str, prefix: str, schema: str = "canvas", runs: int = 1
) -> Iterator[dict[str, str]]:
    """Fresh databases and roles made by deploy/postgres/roles.sql (run ``runs`` times: it must
    be re-runnable), named ``prefix_…``; dropped after, with any role the caller adds to the
    names under a key ending in ``_role`` (the last added first: members before their groups)."""
    names = {
        "dagster_db": unique(f"{prefix}_dagster"),
        "dagster_role": unique(f"{prefix}_dagster"),
        "dagster_password": uuid.uuid4().hex,
        "warehouse_db": unique(f"{prefix}_warehouse"),
        "warehouse_schema": schema,
        "warehouse_role": unique(f"{prefix}_warehouse"),
        "warehouse_password": uuid.uuid4().hex,
        "reader_role": unique(f"{prefix}_reader"),
    }
    for _ in range(runs):
        run_roles_sql(admin_url, **names)
    try:
        yield names
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for database in (names["dagster_db"], names["warehouse_db"]):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database)
                    )
                )
            for key in reversed([k for k in names if k.endswith("_role")]):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(names[key])))


# -- Helm ------------------------------------------------------------------------------------
# The instance ConfigMap of Dagster's Helm chart (templates/configmap-instance.yaml and
# templates/helpers/instance/*.tpl), for the value keys deploy/kubernetes/values.yaml uses. A key
# this renderer does not know fails the test rather than being skipped: check how the chart
# renders it (`helm template`) before teaching it here.

_K8S_LAUNCHER_KEYS = {
    "imagePullPolicy": "image_pull_policy",
    "loadInclusterConfig": "load_incluster_config",
    "kubeconfigFile": "kubeconfig_file",
    "jobNamespace": "job_namespace",
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "resources": "resources",
    "schedulerName": "scheduler_name",
    "securityContext": "security_context",
    "failPodOnRunFailure": "fail_pod_on_run_failure",
}
_RUN_K8S_CONFIG_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}
_RUN_MONITORING_KEYS = {
    "enabled": "enabled",
    "startTimeoutSeconds": "start_timeout_seconds",
    "pollIntervalSeconds": "poll_interval_seconds",
    "maxResumeRunAttempts": "max_resume_run_attempts",
    "freeSlotsAfterRunEndSeconds": "free_slots_after_run_end_seconds",
}


def _known(section: dict, known: set[str], where: str) -> None:
    unknown = set(section) - known
    assert not unknown, f"{where}: the Helm renderer does not know {sorted(unknown)}"


def _helm_storage(values: dict) -> dict:
    pg = values["postgresql"]
    _known(
        pg,
        {"enabled", "postgresqlHost", "postgresqlUsername", "postgresqlDatabase"}
        | {"postgresqlParams", "postgresqlScheme", "service"},
        "postgresql",
    )
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams", {}),
    }
    if pg.get("postgresqlScheme"):
        postgres_db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": postgres_db}


def _helm_launcher(values: dict, release: str) -> dict:
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    _known(
        k8s,
        set(_K8S_LAUNCHER_KEYS) | {"envConfigMaps", "envSecrets", "runK8sConfig", "image"},
        "runLauncher.config.k8sRunLauncher",
    )
    global_values = values.get("global", {})
    config: dict = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or "dagster",
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": values.get("serviceAccount", {}).get("name") or release,
        "dagster_home": global_values.get("dagsterHome", "/opt/dagster/dagster_home"),
        "instance_config_map": f"{release}-instance",
        "postgres_password_secret": global_values.get("postgresqlSecretName", "dagster-postgresql"),
    }
    for key, name in _K8S_LAUNCHER_KEYS.items():
        if k8s.get(key) and name not in config:
            config[name] = k8s[key]
    if k8s.get("envConfigMaps"):
        config["env_config_maps"] = [item["name"] for item in k8s["envConfigMaps"]]
    if k8s.get("envSecrets"):
        config["env_secrets"] = [item["name"] for item in k8s["envSecrets"]]
    if k8s.get("runK8sConfig"):
        _known(k8s["runK8sConfig"], set(_RUN_K8S_CONFIG_KEYS), "runK8sConfig")
        config["run_k8s_config"] = {
            _RUN_K8S_CONFIG_KEYS[key]: value for key, value in k8s["runK8sConfig"].items() if value
        }
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _helm_coordinator(daemon: dict) -> dict | None:
    coordinator = daemon["runCoordinator"]
    if not (daemon.get("enabled", True) and coordinator.get("enabled", True)):
        return None
    assert coordinator["type"] == "QueuedRunCoordinator"
    queued = (coordinator.get("config") or {}).get("queuedRunCoordinator") or {}
    _known(queued, {"maxConcurrentRuns", "tagConcurrencyLimits"}, "queuedRunCoordinator")
    rendered: dict = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    config = {}
    if queued.get("maxConcurrentRuns") is not None:
        config["max_concurrent_runs"] = queued["maxConcurrentRuns"]
    if queued.get("tagConcurrencyLimits"):
        config["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
    if config:
        rendered["config"] = config
    return rendered


def _helm_daemon_settings(daemon: dict) -> dict:
    """run_monitoring, run_retries and sensors, from the daemon's values."""
    rendered: dict = {}
    monitoring = daemon.get("runMonitoring") or {}
    _known(monitoring, set(_RUN_MONITORING_KEYS), "dagsterDaemon.runMonitoring")
    if monitoring.get("enabled"):
        rendered["run_monitoring"] = {
            _RUN_MONITORING_KEYS[key]: value
            for key, value in monitoring.items()
            if value or key == "enabled"
        }
    retries = daemon.get("runRetries") or {}
    _known(retries, {"enabled", "maxRetries"}, "dagsterDaemon.runRetries")
    if retries.get("enabled"):
        rendered["run_retries"] = {"enabled": True, "max_retries": retries.get("maxRetries", 0)}
    sensors = daemon.get("sensors") or {}
    _known(sensors, {"useThreads", "numWorkers"}, "dagsterDaemon.sensors")
    if sensors.get("useThreads"):
        rendered["sensors"] = {"use_threads": True}
        if sensors.get("numWorkers"):
            rendered["sensors"]["num_workers"] = sensors["numWorkers"]
    return rendered


def _helm_concurrency(values: dict) -> dict | None:
    concurrency = values.get("concurrency") or {}
    if not concurrency.get("enabled"):
        return None
    _known(concurrency, {"enabled", "pools", "runs"}, "concurrency")
    rendered: dict = {}
    pools = concurrency.get("pools") or {}
    _known(pools, {"defaultLimit", "granularity", "opGranularityRunBuffer"}, "pools")
    pool_names = {
        "defaultLimit": "default_limit",
        "granularity": "granularity",
        "opGranularityRunBuffer": "op_granularity_run_buffer",
    }
    if pools:
        rendered["pools"] = {pool_names[key]: value for key, value in pools.items()}
    runs = concurrency.get("runs") or {}
    _known(runs, {"maxConcurrentRuns", "tagConcurrencyLimits"}, "runs")
    if runs:
        rendered["runs"] = {}
        if runs.get("maxConcurrentRuns") is not None:
            rendered["runs"]["max_concurrent_runs"] = runs["maxConcurrentRuns"]
        if runs.get("tagConcurrencyLimits"):
            rendered["runs"]["tag_concurrency_limits"] = runs["tagConcurrencyLimits"]
    return rendered


def render_helm_instance(values: dict, release: str = "dagster") -> dict:
    """The dagster.yaml the chart writes into its instance ConfigMap for ``values``."""
    storage = _helm_storage(values)
    instance: dict = {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": storage,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
        "run_launcher": _helm_launcher(values, release),
    }
    coordinator = _helm_coordinator(values["dagsterDaemon"])
    if coordinator:
        instance["run_coordinator"] = coordinator
    assert values["computeLogManager"]["type"] == "NoOpComputeLogManager", (
        "only the no-op manager is rendered here"
    )
    instance["compute_logs"] = {
        "module": "dagster.core.storage.noop_compute_log_manager",
        "class": "NoOpComputeLogManager",
    }
    instance.update(_helm_daemon_settings(values["dagsterDaemon"]))
    concurrency = _helm_concurrency(values)
    if concurrency is not None:
        instance["concurrency"] = concurrency
    python_logs = values.get("pythonLogs") or {}
    _known(python_logs, {"pythonLogLevel"}, "pythonLogs")
    if python_logs:
        instance["python_logs"] = {"python_log_level": python_logs["pythonLogLevel"]}
    instance["telemetry"] = {"enabled": values.get("telemetry", {}).get("enabled", True)}
    return instance
