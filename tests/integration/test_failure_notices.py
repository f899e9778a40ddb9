"""Nothing fails silently: a failed refresh or nightly audit is announced in Slack as a failed apply is, and
the clients' retries are in the run's event log on the demo's and a deployment's instance."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml

from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.demo import INSTANCE_YAML
from nthlayer_pipelines.sandbox import RunningSandbox
from tests.integration.test_plan_instances import Deployment, environment
from tests.support import REPO, slack_messages

# A member with a role no definition may have: git_definitions fails, and the run with it.
INVALID_TEAM = """\
apiVersion: nthlayer/v1
kind: Team
metadata: {name: payments}
spec:
  displayName: Payments
  members:
    - {email: alice@example.com, role: overlord}
"""


def sensor_tick(deployment: Deployment, cursor: str | None) -> str | None:
    """One evaluation of the failure sensor as the daemon makes it: every run it monitors since `cursor`."""
    defs = build_definitions(deployment.environ)
    sensor = defs.get_sensor_def("run_failure_to_slack")
    with dg.build_sensor_context(
        instance=deployment.instance, cursor=cursor, resources=defs.resources
    ) as context:
        sensor.evaluate_tick(context)
        return context.cursor


@pytest.mark.parametrize(("job", "called"), [("refresh", "refresh"), ("nightly_audit", "nightly audit")])
def test_a_failed_read_only_run_is_announced_in_slack(
    job: str,
    called: str,
    example_sandbox: RunningSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "definitions"
    folder.mkdir()
    (folder / "payments.yaml").write_text(INVALID_TEAM)
    deployment = Deployment(environment(example_sandbox, tmp_path, monkeypatch))
    cursor = sensor_tick(deployment, None)  # the first tick starts from now, as on a new deployment

    failed = deployment.run(job)
    sensor_tick(deployment, cursor)

    assert not failed.success
    (message,) = example_sandbox.state.to_dict()["slack"]["messages"]
    assert message["text"].startswith(f"nthlayer: the {called} failed: git_definitions: ")
    assert "overlord" in message["text"], "the reason, not only the failed step's name"
    assert failed.run_id[:8] in str(message["blocks"]), "a link to the run"
    assert slack_messages(example_sandbox) == [message["text"]]


def instance_settings(source: str) -> dict[str, Any]:
    """What the demo's or deploy/dagster.yaml's instance says about Python logs (storage aside)."""
    text = INSTANCE_YAML if source == "demo" else (REPO / "deploy" / "dagster.yaml").read_text()
    return {"python_logs": yaml.safe_load(text)["python_logs"]}


@pytest.mark.parametrize("source", ["demo", "deploy"])
def test_a_client_retry_is_in_the_runs_event_log(
    source: str, example_sandbox: RunningSandbox, pipeline_env: dict[str, str]
) -> None:
    # The first read of the users answers 500; the client's retry gets them.
    plan = {"rules": [{"kind": "status", "status": 500, "endpoint": "GET /users", "first_arrivals": 1}]}
    assert httpx.put(f"{example_sandbox.url}/_admin/faults", json=plan).status_code == 200

    with dg.instance_for_test(overrides=instance_settings(source)) as instance:
        job = build_definitions(pipeline_env).resolve_job_def("refresh")
        result = job.execute_in_process(instance=instance)
        records = instance.all_logs(result.run_id)

    assert result.success
    retries = [(r.level, r.step_key, r.user_message) for r in records if "retrying in" in r.user_message]
    assert len(retries) == 1, retries
    ((level, step, message),) = retries
    assert (level, step) == (logging.WARNING, "pagerduty_snapshot")
    assert message.startswith("GET /users: HTTP 500 on attempt 1 of 6, retrying in ")
