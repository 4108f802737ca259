"""The production configuration: Dagster's documented PostgreSQL storage works with the project's
dependencies, and every deployment's instance, image, compose, Helm, ECS and IAM file is valid and
keeps secrets out. No container daemon or cluster is available here, so these tests check what
can be checked without one; test_production_topology.py runs the process topology itself."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import dagster as dg
import pytest
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import ConfigurableClassData
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from canvas_assets.settings import ALERT_SECRETS
from canvas_assets.warehouse.embedded import ensure_database

from .deployment import (
    DEPLOY,
    ROOT,
    SECRET_VARIABLES,
    database_url,
    load_yaml,
    project_instance_config,
    render_helm_instance,
    unique,
)

COMPOSE = DEPLOY / "compose"
KUBERNETES = DEPLOY / "kubernetes"
ECS = DEPLOY / "ecs"


@dg.op
def _hello() -> int:
    return 1


@dg.job
def _hello_job() -> None:
    _hello()


def _storage_configs(url: str) -> dict[str, dict]:
    """Dagster's two documented ways to name the storage database."""
    parts = urlsplit(url)
    block = {
        "hostname": parts.hostname or "localhost",
        "port": parts.port or 5432,
        "username": parts.username or "postgres",
        "password": parts.password or "",
        "db_name": parts.path.lstrip("/"),
        "params": dict(parse_qsl(parts.query)),
    }
    plain = url.replace("postgres://", "postgresql://", 1)
    assert plain.startswith("postgresql://")
    return {"postgres_db": {"postgres_db": block}, "postgresql_url": {"postgres_url": plain}}


@pytest.mark.parametrize("form", ["postgres_db", "postgresql_url"])
def test_dagsters_documented_postgres_storage_runs_a_job(form, postgres_url, tmp_path) -> None:
    """Without this, an instance configured by Dagster's docs (a `postgres_db` block or a plain
    postgresql:// URL) fails in every process with `syntax error at or near "$1"` as soon as a
    run stores an event: SQLAlchemy 2.1 hands dagster-postgres psycopg 3, which it does not
    speak. The pin in pyproject.toml keeps psycopg2."""
    database = unique("dagster_docs")
    ensure_database(postgres_url, database)
    storage = _storage_configs(database_url(postgres_url, database))[form]
    (tmp_path / "dagster.yaml").write_text(json.dumps({"storage": {"postgres": storage}}))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        result = _hello_job.execute_in_process(instance=instance)
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS
        events = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
        assert len(events) == 1


def _deployment_instance(name: str) -> dict:
    if name == "kubernetes":
        return render_helm_instance(load_yaml(KUBERNETES / "values.yaml"))
    return load_yaml(DEPLOY / name / "dagster.yaml")


_FAKE_ENV = {
    "DAGSTER_POSTGRES_HOST": "postgres.example.internal",
    "DAGSTER_POSTGRES_PORT": "5432",
    "DAGSTER_POSTGRES_USER": "dagster",
    "DAGSTER_POSTGRES_PASSWORD": "not-a-secret",
    "DAGSTER_POSTGRES_DB": "dagster",
    "DAGSTER_PG_PASSWORD": "not-a-secret",
    "DAGSTER_POSTGRES_PASSWORD_SECRET_ARN": (
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:dagster/postgres-password"
    ),
    "DAGSTER_RUN_LOG_GROUP": "/canvas-assets/runs",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def _kubeconfig(tmp_path: Path) -> str:
    """A kubeconfig for constructing K8sRunLauncher outside a cluster (it is never contacted)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


@pytest.mark.parametrize("deployment", ["compose", "kubernetes", "ecs"])
def test_each_deployment_instance_is_valid_for_its_launcher_and_coordinator(
    deployment, tmp_path, monkeypatch
) -> None:
    """Without this, a typo or a field the launcher does not accept in a deployment's
    dagster.yaml is found by the daemon at its first start in production, not here."""
    for name, value in _FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    config = _deployment_instance(deployment)
    (tmp_path / "dagster.yaml").write_text(json.dumps(config))
    validated, _ = dagster_instance_config(str(tmp_path))  # the whole instance schema

    for section in ("run_launcher", "run_coordinator"):
        data = validated[section]
        launcher_config = dict(data.get("config") or {})
        if deployment == "kubernetes" and section == "run_launcher":
            launcher_config["load_incluster_config"] = False
            launcher_config["kubeconfig_file"] = _kubeconfig(tmp_path)
        loaded = ConfigurableClassData(data["module"], data["class"], json.dumps(launcher_config))
        cls = _class(data["module"], data["class"])
        processed = process_config(cls.config_type(), launcher_config)
        assert processed.success, f"{section}: {[e.message for e in processed.errors]}"
        # Constructing it is what every Dagster process does when it loads the instance.
        loaded.rehydrate(object)

    expected = {"compose": "DefaultRunLauncher", "kubernetes": "K8sRunLauncher"}
    assert validated["run_launcher"]["class"] == expected.get(deployment, "EcsRunLauncher")
    assert validated["run_coordinator"]["class"] == "QueuedRunCoordinator"


def _class(module: str, name: str):
    import importlib

    module = module.replace("dagster.core.", "dagster._core.")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("deployment", ["compose", "kubernetes", "ecs"])
def test_each_deployment_keeps_the_projects_run_policy_and_no_local_state(deployment) -> None:
    """Without this, a deployment drifts from the policy the project relies on (one apply run
    per semester, two backfills per Canvas token, run monitoring retrying dead runs) or keeps
    state on a container's disk (SQLite storage, local compute logs) that the next run, on
    another machine, cannot see."""
    config = _deployment_instance(deployment)
    project = project_instance_config()
    assert config["concurrency"] == project["concurrency"]
    assert config.get("python_logs") == project.get("python_logs")
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"].get("max_resume_run_attempts", 0) == 0
    assert config["run_retries"] == project["run_retries"]
    assert config["telemetry"] == {"enabled": False}
    # Several code locations (institutions) share the daemon: sensors must not tick serially.
    assert config["sensors"]["use_threads"] is True and config["sensors"]["num_workers"] >= 4

    storages = (
        [config["storage"]["postgres"]]
        if "storage" in config
        else [config[key]["config"] for key in ("run_storage", "event_log_storage")]
        + [config["schedule_storage"]["config"]]
    )
    assert all("postgres_db" in storage for storage in storages)
    if "storage" not in config:
        assert {
            config[k]["module"].split(".")[0] for k in ("run_storage", "event_log_storage")
        } == {"dagster_postgres"}
    # No compute logs on local disk, no local artifact storage configured.
    assert config["compute_logs"]["class"] == "NoOpComputeLogManager"
    assert "local_artifact_storage" not in config
    for storage in storages:
        password = storage["postgres_db"]["password"]
        assert isinstance(password, dict) and set(password) == {"env"}, "password in a file"


def test_ecs_code_location_names_its_secrets_and_runs_with_its_own_role() -> None:
    """Without this, the code server's container context (the secrets and role every run of
    that institution gets) could be invalid, which only shows when the first ECS run launches,
    or could carry a secret value instead of an ARN."""
    from dagster_aws.ecs.container_context import EcsContainerContext

    task = json.loads((ECS / "task-definitions" / "code-server.json").read_text())
    container = task["containerDefinitions"][0]
    environment = {item["name"]: item["value"] for item in container["environment"]}
    context = json.loads(environment["DAGSTER_CONTAINER_CONTEXT"])
    parsed = EcsContainerContext.create_from_config(context)
    assert {secret["name"] for secret in parsed.secrets} == {
        "CANVAS_API_TOKEN",
        "CANVAS_WAREHOUSE_URL",
    }
    assert parsed.execution_role_arn == task["executionRoleArn"]
    assert parsed.task_role_arn is None, "runs call no AWS API: they need no task role"
    assert environment["DAGSTER_CURRENT_IMAGE"] == container["image"]
    for name in ("webserver", "daemon", "code-server"):
        definition = json.loads((ECS / "task-definitions" / f"{name}.json").read_text())
        for item in definition["containerDefinitions"]:
            assert not set(SECRET_VARIABLES) & {e["name"] for e in item["environment"]}
            for secret in item.get("secrets", []):
                assert re.fullmatch(r"arn:aws:(secretsmanager|ssm):[^\s]+", secret["valueFrom"])


def _statements(name: str) -> list[dict]:
    return json.loads((ECS / "iam" / f"{name}.json").read_text())["Statement"]


def test_iam_policies_are_least_privilege() -> None:
    """Without this, a widened policy (SQS on every queue, sqs:*, listing every secret,
    passing any role) would ship unnoticed; Live Events need only receive, delete and
    get-attributes on the one queue."""
    (sqs,) = _statements("code-server-task-role")
    assert sorted(sqs["Action"]) == [
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    assert re.fullmatch(r"arn:aws:sqs:[a-z0-9-]+:\d{12}:canvas-live-events-[\w-]+", sqs["Resource"])
    for path in sorted((ECS / "iam").glob("*.json")):
        for statement in _statements(path.stem):
            actions = statement["Action"]
            actions = [actions] if isinstance(actions, str) else actions
            assert statement["Effect"] == "Allow"
            assert not [a for a in actions if a.endswith(":*") or a == "*"], path.name
            assert "secretsmanager:ListSecrets" not in actions
            if "iam:PassRole" in actions:
                assert statement["Condition"]["StringEquals"]["iam:PassedToService"] == (
                    "ecs-tasks.amazonaws.com"
                )
            if any(a.startswith("sqs:") for a in actions):
                assert path.stem == "code-server-task-role", "only the code server reads SQS"


def _compose() -> dict:
    return load_yaml(COMPOSE / "docker-compose.yml")


def test_compose_runs_dagsters_service_shape_with_secrets_only_in_the_code_server() -> None:
    """Without this, the one-VM deployment could point the webserver or daemon at the wrong code
    server, lose the instance file, or hand Canvas and warehouse credentials to services that
    never need them."""
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "canvas-assets-code", "webserver", "daemon"}
    workspace = load_yaml(COMPOSE / "workspace.yaml")
    (server,) = [entry["grpc_server"] for entry in workspace["load_from"]]
    assert server["host"] == "canvas-assets-code" and server["port"] == 4000
    assert "--workspace" in services["webserver"]["command"]
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    for name in ("canvas-assets-code", "webserver", "daemon"):
        mounts = services[name]["volumes"]
        assert "./dagster.yaml:/opt/dagster/dagster_home/dagster.yaml:ro" in mounts
        assert services[name]["environment"]["DAGSTER_POSTGRES_HOST"] == "postgres"
    code_env = services["canvas-assets-code"]["environment"]
    for name in (
        "CANVAS_API_TOKEN",
        "CANVAS_WAREHOUSE_URL",
        "AWS_SECRET_ACCESS_KEY",
        *ALERT_SECRETS,
    ):
        assert name in code_env
        assert name not in services["webserver"]["environment"]
        assert name not in services["daemon"]["environment"]
    for service in services.values():
        for name, value in (service.get("environment") or {}).items():
            if name in SECRET_VARIABLES:
                assert "${" in str(value), f"{name} has a literal value in docker-compose.yml"
    assert services["webserver"]["ports"] == ["127.0.0.1:3000:3000"]
    example = (COMPOSE / "env.example").read_text()
    assert not [
        line
        for line in example.splitlines()
        if re.match(rf"({'|'.join(SECRET_VARIABLES)})=.", line)
    ], "env.example must leave every secret empty"


def test_helm_values_name_kubernetes_secrets_and_run_the_projects_image() -> None:
    """Without this, the Helm values could carry a password, generate a throwaway Postgres
    secret, or run the webserver and daemon on an image without the SQLAlchemy pin (Dagster's
    documented storage would then fail there)."""
    values = load_yaml(KUBERNETES / "values.yaml")
    assert values["postgresql"]["enabled"] is False
    assert "postgresqlPassword" not in values["postgresql"]
    assert values["generatePostgresqlPasswordSecret"] is False
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["envSecrets"] == [{"name": "canvas-assets-school"}]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert not set(SECRET_VARIABLES) & {item["name"] for item in deployment["env"]}
    image = deployment["image"]["repository"]
    for component in ("dagsterWebserver", "dagsterDaemon"):
        assert values[component]["image"]["repository"] == image
    args = deployment["codeServerArgs"]
    assert args[args.index("--module-name") + 1] == "canvas_assets.definitions"
    text = (KUBERNETES / "values.yaml").read_text()
    assert not re.search(r"(?i)password:\s*\S", text)


def test_requirements_lock_satisfies_pyproject() -> None:
    """Without this, the image would install versions the project does not allow (or drop the
    SQLAlchemy pin), and the lock would drift from pyproject.toml unnoticed."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            locked[canonicalize_name(name)] = version
    required = [*pyproject["dependencies"], *pyproject["optional-dependencies"]["deploy"]]
    for text in required:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in deploy/requirements.lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{name}=={locked[name]} does not satisfy {requirement}"
        )
    assert locked["sqlalchemy"].startswith("2.0.")
    assert "canvas-assets" not in locked
