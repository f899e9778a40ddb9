"""Nothing fails silently: a failed refresh or nightly audit is announced in Slack as a failed apply is."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.sandbox import RunningSandbox
from tests.integration.test_plan_instances import Deployment, environment, slack_messages

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
