"""What Dagster's Helm chart (dagster/dagster 1.13) renders from deploy/helm/values.yaml, written out in
Python for the settings that file uses: the instance's dagster.yaml (templates/configmap-instance.yaml and
templates/helpers/instance/*.tpl), the workspace (configmap-workspace.yaml) and the code server's command
(charts/dagster-user-deployments/templates/deployment-user.yaml).

Neither helm nor the chart can be fetched here, so this stands in for `helm template`. It reads only what the
values set, never the chart's defaults, and refuses a setting it does not render: a value it would drop
silently could not be checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO

VALUES = REPO / "deploy" / "helm" / "values.yaml"
DAGSTER_YAML = REPO / "deploy" / "dagster.yaml"
WORKSPACE = REPO / "deploy" / "workspace.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
# Secrets the code reads, bound as EnvVars (definitions.build_resources): never a value in values.yaml.
SECRET_VARIABLES = ("PAGERDUTY_API_TOKEN", "SLACK_BOT_TOKEN", "CORTEX_API_TOKEN", "NTHLAYER_LEDGER_URL")


class UnrenderedSetting(AssertionError):
    """The values set something this stand-in for the chart does not render."""


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _only(section: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(section) - known
    if unknown:
        raise UnrenderedSetting(f"{where}: {', '.join(sorted(unknown))} not rendered here")


def _postgres_storage(values: dict[str, Any]) -> dict[str, Any]:
    """dagsterYaml.postgresql.config, for an external database (postgresql.enabled false)."""
    postgresql = values["postgresql"]
    if postgresql["enabled"]:
        raise UnrenderedSetting("postgresql.enabled: the chart's own database is not rendered here")
    _only(
        postgresql,
        {
            "enabled",
            "postgresqlHost",
            "postgresqlUsername",
            "postgresqlDatabase",
            "postgresqlParams",
            "service",
        },
        "postgresql",
    )
    return {
        "postgres_db": {
            "username": postgresql["postgresqlUsername"],
            # From the Secret global.postgresqlSecretName names, key postgresql-password, in every pod.
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": postgresql["postgresqlHost"],
            "db_name": postgresql["postgresqlDatabase"],
            "port": postgresql["service"]["port"],
            "params": postgresql.get("postgresqlParams") or {},
        }
    }


# K8sRunLauncher fields the chart renders from runLauncher.config.k8sRunLauncher, by the values' name.
_K8S_RUN_LAUNCHER_FIELDS = {
    "kubeconfigFile": "kubeconfig_file",
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "failPodOnRunFailure": "fail_pod_on_run_failure",
    "resources": "resources",
    "schedulerName": "scheduler_name",
    "securityContext": "security_context",
}
_RUN_K8S_CONFIG_FIELDS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


def _k8s_run_launcher(values: dict[str, Any], namespace: str, service_account: str) -> dict[str, Any]:
    """dagsterYaml.runLauncher.k8s."""
    launcher = values["runLauncher"]
    if launcher["type"] != "K8sRunLauncher":
        raise UnrenderedSetting(f"runLauncher.type {launcher['type']} is not rendered here")
    settings = launcher["config"]["k8sRunLauncher"]
    plain = {"imagePullPolicy", "jobNamespace", "loadInclusterConfig", "envConfigMaps", "envSecrets"}
    _only(
        settings,
        plain | set(_K8S_RUN_LAUNCHER_FIELDS) | {"runK8sConfig"},
        "runLauncher.config.k8sRunLauncher",
    )
    config: dict[str, Any] = {
        "load_incluster_config": settings["loadInclusterConfig"],
        "job_namespace": settings.get("jobNamespace") or namespace,
        "image_pull_policy": settings["imagePullPolicy"],
        "service_account_name": service_account,
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [
            {"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"},
            *(source["name"] for source in settings.get("envConfigMaps") or [] if "name" in source),
        ],
    }
    if values.get("imagePullSecrets"):
        config["image_pull_secrets"] = values["imagePullSecrets"]
    secrets = [source["name"] for source in settings.get("envSecrets") or [] if "name" in source]
    if secrets:
        config["env_secrets"] = secrets
    for name, field in _K8S_RUN_LAUNCHER_FIELDS.items():
        if settings.get(name):  # the chart renders each only when it is set and not empty
            config[field] = settings[name]
    run_k8s_config = settings.get("runK8sConfig") or {}
    _only(run_k8s_config, set(_RUN_K8S_CONFIG_FIELDS), "runLauncher.config.k8sRunLauncher.runK8sConfig")
    if run_k8s_config:
        config["run_k8s_config"] = {_RUN_K8S_CONFIG_FIELDS[k]: v for k, v in run_k8s_config.items()}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _run_coordinator(values: dict[str, Any]) -> dict[str, Any] | None:
    """dagsterYaml.runCoordinator.queued."""
    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    if not (daemon["enabled"] and coordinator["enabled"]):
        return None
    if coordinator["type"] != "QueuedRunCoordinator":
        raise UnrenderedSetting(
            f"dagsterDaemon.runCoordinator.type {coordinator['type']} is not rendered here"
        )
    queued = coordinator["config"]["queuedRunCoordinator"] or {}
    fields = {
        "maxConcurrentRuns": "max_concurrent_runs",
        "dequeueIntervalSeconds": "dequeue_interval_seconds",
    }
    _only(queued, set(fields), "dagsterDaemon.runCoordinator.config.queuedRunCoordinator")
    rendered: dict[str, Any] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    config = {fields[name]: value for name, value in queued.items() if value is not None}
    if config:
        rendered["config"] = config
    return rendered


def _run_monitoring(values: dict[str, Any]) -> dict[str, Any] | None:
    daemon = values["dagsterDaemon"]
    monitoring = daemon.get("runMonitoring") or {}
    if not (daemon["enabled"] and monitoring.get("enabled")):
        return None
    fields = {
        "enabled": "enabled",
        "startTimeoutSeconds": "start_timeout_seconds",
        "cancelTimeoutSeconds": "cancel_timeout_seconds",
        "maxResumeRunAttempts": "max_resume_run_attempts",
        "pollIntervalSeconds": "poll_interval_seconds",
        "freeSlotsAfterRunEndSeconds": "free_slots_after_run_end_seconds",
    }
    _only(monitoring, set(fields), "dagsterDaemon.runMonitoring")
    return {fields[name]: value for name, value in monitoring.items() if value is not None}


def _concurrency(values: dict[str, Any]) -> dict[str, Any] | None:
    """dagsterYaml.concurrency."""
    concurrency = values.get("concurrency") or {}
    if not concurrency.get("enabled"):
        return None
    _only(concurrency, {"enabled", "pools", "runs"}, "concurrency")
    pools, runs = concurrency.get("pools") or {}, concurrency.get("runs") or {}
    pool_fields = {"defaultLimit": "default_limit", "granularity": "granularity"}
    _only(pools, set(pool_fields), "concurrency.pools")
    _only(runs, {"maxConcurrentRuns"}, "concurrency.runs")
    rendered: dict[str, Any] = {}
    if pools:
        rendered["pools"] = {pool_fields[name]: value for name, value in pools.items() if value is not None}
    if runs.get("maxConcurrentRuns") is not None:
        rendered["runs"] = {"max_concurrent_runs": runs["maxConcurrentRuns"]}
    return rendered


def _compute_logs(values: dict[str, Any]) -> dict[str, Any]:
    kind = values["computeLogManager"]["type"]
    if kind != "NoOpComputeLogManager":
        raise UnrenderedSetting(f"computeLogManager.type {kind} is not rendered here")
    return {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}


def _python_logs(values: dict[str, Any]) -> dict[str, Any] | None:
    logs = values.get("pythonLogs") or {}
    _only(logs, {"managedPythonLoggers"}, "pythonLogs")
    loggers = logs.get("managedPythonLoggers")
    return {"managed_python_loggers": list(loggers)} if loggers else None


def instance_config(
    values: dict[str, Any], *, namespace: str = "nthlayer", service_account: str = "nthlayer-dagster"
) -> dict[str, Any]:
    """The dagster.yaml the chart's instance ConfigMap holds for these values."""
    storage = _postgres_storage(values)
    rendered: dict[str, Any] = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_launcher": _k8s_run_launcher(values, namespace, service_account),
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
        "compute_logs": _compute_logs(values),
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    for section, render in (
        ("run_coordinator", _run_coordinator),
        ("run_monitoring", _run_monitoring),
        ("concurrency", _concurrency),
        ("python_logs", _python_logs),
    ):
        part = render(values)
        if part is not None:
            rendered[section] = part
    return rendered


def workspace(values: dict[str, Any]) -> dict[str, Any]:
    """The workspace.yaml the chart renders for the webserver and the daemon."""
    fixed = values["dagsterWebserver"]["workspace"]
    if fixed["enabled"]:
        servers = [
            (server["host"], server["port"], server.get("name") or server["host"])
            for server in fixed["servers"]
        ]
    else:
        servers = [
            (d["name"], d["port"], d["name"]) for d in values["dagster-user-deployments"]["deployments"]
        ]
    return {
        "load_from": [
            {"grpc_server": {"host": host, "port": port, "location_name": name}}
            for host, port, name in servers
        ]
    }


def code_server_command(deployment: dict[str, Any]) -> list[str]:
    """The user deployment's container args, as deployment-user.yaml writes them."""
    port = str(deployment["port"])
    if deployment.get("dagsterApiGrpcArgs"):
        return ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", port, *deployment["dagsterApiGrpcArgs"]]
    return ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", port, *deployment["codeServerArgs"]]


def user_deployment(values: dict[str, Any]) -> dict[str, Any]:
    """The one code location of these values."""
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment
