"""The code location as the chart runs it: `dagster code-server start` with the image's command on a loopback
port, and dagster-webserver on deploy/workspace.yaml pointed at it, loading the project's jobs over gRPC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nthlayer_pipelines.sandbox import DEFAULT_CORTEX_TOKEN, DEFAULT_PAGERDUTY_TOKEN, DEFAULT_SLACK_TOKEN
from tests.deploy.dockerfile import exec_form, final_stage
from tests.deploy.helm_chart import DOCKERFILE, WORKSPACE, load_yaml
from tests.e2e.deployment import LOCATION, DagsterUi, _process, _wait_until_serving, wait_until
from tests.postgres import free_port
from tests.support import EXAMPLE_DEFINITIONS

JOBS_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name
    displayMetadata { key value }
    locationOrLoadError { __typename ... on RepositoryLocation {
        repositories { name jobs { name } } } } } } } }"""
PROJECT_JOBS = {"refresh", "nightly_audit", "approve_plan", "reject_plan", "apply_plan"}


def _image_command(port: int) -> list[str]:
    """The image's CMD with the port moved to a free one, run from the tests' virtualenv."""
    command = exec_form(next(i for i in final_stage(DOCKERFILE) if i.keyword == "CMD"))
    command[command.index("-p") + 1] = str(port)
    command[command.index("-h") + 1] = "127.0.0.1"  # loopback here; 0.0.0.0 in the pod
    return [str(Path(sys.executable).parent / command[0]), *command[1:]]


def _healthy(port: int, env: dict[str, str]) -> bool:
    """The chart's readiness probe: `dagster api grpc-health-check -p PORT`."""
    probe = [str(Path(sys.executable).parent / "dagster"), "api", "grpc-health-check", "-p", str(port)]
    return subprocess.run(probe, env=env, capture_output=True, timeout=60).returncode == 0


def _workspace_at(port: int) -> dict[str, Any]:
    """deploy/workspace.yaml with the Service's host and port replaced by the loopback server's."""
    workspace = load_yaml(WORKSPACE)
    (entry,) = workspace["load_from"]
    entry["grpc_server"].update(host="127.0.0.1", port=port)
    return workspace


@pytest.mark.postgres
def test_the_webserver_loads_the_projects_jobs_from_the_code_server(
    postgres_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    code_port, web_port = free_port(), free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump(_workspace_at(code_port)))
    # The pod's environment: the image's NTHLAYER_DEFINITIONS, the values' settings, the Secret's tokens.
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "NTHLAYER_DEFINITIONS": str(EXAMPLE_DEFINITIONS),
        "NTHLAYER_IO_MANAGER": "ledger",
        "NTHLAYER_LEDGER_URL": postgres_url,
        "PAGERDUTY_API_TOKEN": DEFAULT_PAGERDUTY_TOKEN,
        "CORTEX_API_TOKEN": DEFAULT_CORTEX_TOKEN,
        "SLACK_BOT_TOKEN": DEFAULT_SLACK_TOKEN,
    }
    webserver = [
        str(Path(sys.executable).parent / "dagster-webserver"),
        *("-w", str(workspace), "-h", "127.0.0.1", "-p", str(web_port)),
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    ui = DagsterUi(url=f"http://127.0.0.1:{web_port}")

    with _process(_image_command(code_port), env, logs / "code-server.log") as code_server:
        # Ready first, as the chart's readiness probe keeps the Service back until then: the webserver
        # tries a location once at startup.
        wait_until("the code server to pass its health check", lambda: _healthy(code_port, env), 120)
        with _process(webserver, env, logs / "dagster-webserver.log") as web:
            _wait_until_serving(
                ui,
                {
                    "dagster code-server": (code_server, logs / "code-server.log"),
                    "dagster-webserver": (web, logs / "dagster-webserver.log"),
                },
            )
            entries = ui.graphql(JOBS_QUERY)["workspaceOrError"]["locationEntries"]

    (entry,) = entries
    assert entry["name"] == LOCATION
    # Loaded from the server the workspace names, not from a module of the webserver's own.
    metadata = {item["key"]: item["value"] for item in entry["displayMetadata"]}
    assert metadata.get("host") == "127.0.0.1" and metadata.get("port") == str(code_port)
    (repository,) = entry["locationOrLoadError"]["repositories"]
    assert {job["name"] for job in repository["jobs"]} >= PROJECT_JOBS
