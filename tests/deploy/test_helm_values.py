"""deploy/helm/values.yaml: the instance the Helm chart renders from it is one Dagster accepts, with the K8s
run launcher's own config schema (dagster-k8s) and each configured class's; it keeps deploy/dagster.yaml's
limits and monitoring; secrets reach every pod from Kubernetes Secrets and none is written in the values."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes import ConfigurableClassData
from dagster_k8s import K8sRunLauncher

from nthlayer_pipelines.definitions import build_resources
from tests.deploy.helm_chart import (
    DAGSTER_YAML,
    SECRET_VARIABLES,
    VALUES,
    WORKSPACE,
    instance_config,
    load_yaml,
    user_deployment,
    workspace,
)
from tests.support import REPO

SECRET_NAME = "nthlayer-secrets"
# What the chart sets in the pods it starts, which the rendered dagster.yaml reads.
CHART_ENVIRONMENT = {
    "DAGSTER_HOME": "/opt/dagster/dagster_home",
    "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "nthlayer-dagster-instance",
    "DAGSTER_K8S_PG_PASSWORD_SECRET": "nthlayer-postgresql",
    "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP": "nthlayer-dagster-pipeline-env",
    "DAGSTER_PG_PASSWORD": "from-the-secret",
}


@pytest.fixture
def values() -> dict[str, Any]:
    return load_yaml(VALUES)


@pytest.fixture
def chart_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CHART_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


def _class(section: dict[str, Any]) -> type:
    """The configured class, found as Dagster finds it (`dagster.core` is `dagster._core`)."""
    data = ConfigurableClassData(section["module"], section["class"], "{}")
    return getattr(importlib.import_module(data.module_name), data.class_name)


def test_the_k8s_run_launcher_config_passes_dagster_k8s_own_schema(
    values: dict[str, Any], chart_environment: None
) -> None:
    launcher = instance_config(values)["run_launcher"]
    assert _class(launcher) is K8sRunLauncher

    processed = process_config(K8sRunLauncher.config_type(), launcher["config"])

    assert processed.success, processed.errors
    config = processed.value
    assert config["env_secrets"] == [SECRET_NAME]
    assert config["load_incluster_config"] is True
    assert config["job_namespace"] == "nthlayer"  # the release's
    assert config["fail_pod_on_run_failure"] is True
    assert config["security_context"]["runAsNonRoot"] is True


def test_the_rendered_instance_passes_dagsters_instance_schema_and_each_class_its_own(
    values: dict[str, Any], chart_environment: None, tmp_path: Path
) -> None:
    rendered = instance_config(values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))

    accepted, custom_instance = dagster_instance_config(str(tmp_path))

    assert custom_instance is None
    assert set(accepted) >= {"run_storage", "event_log_storage", "schedule_storage", "run_launcher"}
    for name, section in rendered.items():
        if isinstance(section, dict) and "module" in section:
            processed = process_config(_class(section).config_type() or {}, section.get("config") or {})
            assert processed.success, f"{name}: {processed.errors}"
    storage = rendered["run_storage"]["config"]["postgres_db"]
    assert storage["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert storage["hostname"] == values["postgresql"]["postgresqlHost"]


def test_limits_and_monitoring_are_deploy_dagster_yamls(values: dict[str, Any]) -> None:
    single_machine = load_yaml(DAGSTER_YAML)
    rendered = instance_config(values)

    assert rendered["concurrency"] == single_machine["concurrency"]
    assert rendered["run_coordinator"] == single_machine["run_coordinator"]  # no limit of its own
    for setting, value in single_machine["run_monitoring"].items():
        assert rendered["run_monitoring"][setting] == value, setting
    assert rendered["telemetry"] == single_machine["telemetry"]
    assert rendered["python_logs"] == single_machine["python_logs"]
    assert values["dagsterDaemon"]["enabled"] is True


def test_secrets_come_from_kubernetes_secrets_into_the_code_server_and_every_run(
    values: dict[str, Any],
) -> None:
    deployment = user_deployment(values)
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]

    assert deployment["envSecrets"] == [{"name": SECRET_NAME}]
    assert launcher["envSecrets"] == [{"name": SECRET_NAME}]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert not set(SECRET_VARIABLES) & set(deployment["env"])
    # Dagster's own database password: from the Secret, which the chart is told not to write from a value.
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert "postgresqlPassword" not in values["postgresql"]
    # The code reads each at run time from the pod's environment, never from the run's config.
    environ = {name: "set" for name in SECRET_VARIABLES} | {"CORTEX_API_URL": "https://cortex.example"}
    bound = {
        getattr(resource, field).env_var_name
        for resource in build_resources(environ).values()
        for field in type(resource).model_fields
        if isinstance(getattr(resource, field), dg.EnvVar)
    }
    assert set(SECRET_VARIABLES) <= bound


def test_the_code_servers_settings_are_variables_the_code_reads(values: dict[str, Any]) -> None:
    source = "\n".join(path.read_text() for path in (REPO / "nthlayer_pipelines").rglob("*.py"))
    unread = [name for name in user_deployment(values)["env"] if f'"{name}"' not in source]
    assert not unread, f"set in values.yaml but read nowhere: {unread}"


def test_the_workspace_the_chart_renders_is_deploy_workspace_yaml(values: dict[str, Any]) -> None:
    assert workspace(values) == load_yaml(WORKSPACE)
    (entry,) = load_yaml(WORKSPACE)["load_from"]
    assert entry["grpc_server"]["port"] == user_deployment(values)["port"]
    assert entry["grpc_server"]["location_name"] == "nthlayer_pipelines"  # pyproject's code_location_name


def test_a_read_only_webserver_serves_beside_the_writable_one(values: dict[str, Any]) -> None:
    assert values["dagsterWebserver"]["enableReadOnly"] is True
