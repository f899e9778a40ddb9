"""Plans are instances, and an approval applies only what is still wanted, through the Dagster jobs against
the sandbox: a drift that comes back is fixed again; a rejection is not forever, but the policy does not undo
it; an approved change the definitions no longer want is superseded, written nowhere; a failed change is
retried by the client alone and announced once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from nthlayer_pipelines.core.model import ChangeStatus, Plan
from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.orchestration.sensors import run_failure_to_slack
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.sandbox import RunningSandbox
from nthlayer_pipelines.sandbox.faults import parse_plan
from tests.integration.test_apply_flow import approve_config, pagerduty_members, tick
from tests.reliability import Reliability
from tests.support import REPO, pipeline_environment, slack_messages

PAYMENTS_AS_SEEDED = """\
apiVersion: nthlayer/v1
kind: Team
metadata: {name: payments}
spec:
  displayName: Payments
  prune: true
  members:
    - {email: alice@example.com, role: manager}
    - {email: bob@example.com, role: observer}
    - {email: carol@example.com, role: responder}
    - {email: dave@example.com, role: observer}
%s
"""
MALLORY = "    - {email: mallory@example.com, role: responder}"


def definitions(tmp_path: Path, *, with_mallory: bool = True, with_carol: bool = True) -> Path:
    """Payments as the sandbox holds it, but for carol (missing there) and, optionally, mallory."""
    folder = tmp_path / "definitions"
    folder.mkdir(exist_ok=True)
    text = PAYMENTS_AS_SEEDED % (MALLORY if with_mallory else "")
    if not with_carol:
        text = text.replace("    - {email: carol@example.com, role: responder}\n", "")
    (folder / "payments.yaml").write_text(text)
    return folder


def environment(sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str):
    environ = pipeline_environment(
        sandbox,
        tmp_path,
        NTHLAYER_DEFINITIONS=str(tmp_path / "definitions"),
        CORTEX_API_URL="",  # Git alone: the plans below hold exactly the drift each test makes
        **extra,
    )
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return environ


class Deployment:
    """One instance for every run, as a deployment has, so run tags and failure events can be read."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.environ = environ
        self.instance = dg.DagsterInstance.ephemeral()

    def run(self, name: str, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
        job = build_definitions(self.environ).resolve_job_def(name)
        return job.execute_in_process(
            run_config=run_config or {}, instance=self.instance, raise_on_error=False
        )

    def refresh(self) -> tuple[Plan, dict[str, object]]:
        result = self.run("refresh")
        assert result.success
        (event,) = [
            e for e in result.get_asset_materialization_events() if e.asset_key.path == ["change_plan"]
        ]
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
        return result.output_for_node("change_plan"), metadata

    def gate(self, cursor: str | None) -> tuple[list[dg.ExecuteInProcessResult], str | None]:
        """One tick of the approval sensor, and the apply runs it asks for."""
        result = tick(self.environ, cursor)
        runs = [self.run("apply_plan", request.run_config) for request in result.run_requests]
        return runs, result.cursor or cursor


def members_of_payments(sandbox: RunningSandbox) -> dict[str, str]:
    return pagerduty_members(sandbox)["Payments"]


def test_a_drift_that_comes_back_is_fixed_again(
    example_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    definitions(tmp_path)
    deployment = Deployment(environment(example_sandbox, tmp_path, monkeypatch))
    org = example_sandbox.state.pagerduty
    payments, carol = org.team_by_name("Payments").id, org.user_by_email("carol@example.com").id
    cursor = None
    plan_ids = []
    for _ in range(3):
        plan, metadata = deployment.refresh()
        assert [(c.kind.value, c.email) for c in plan.changes] == [("add_member", "carol@example.com")]
        assert metadata["new_plan"] is True and metadata["pre_approved_changes"] == 1
        plan_ids.append(plan.id)
        runs, cursor = deployment.gate(cursor)
        assert [r.success for r in runs] == [True]
        assert members_of_payments(example_sandbox)["carol@example.com"] == "responder"
        # Someone takes carol off the team by hand again.
        org.remove_membership(payments, carol)
        reliability.count("recurring drift", drifts_made=1, drifts_fixed=1)

    assert len(set(plan_ids)) == 3, "each return of the drift is a plan instance of its own"
    with Ledger(deployment.environ["NTHLAYER_LEDGER_URL"]) as ledger:
        instances = [ledger.get_plan(plan_id) for plan_id in plan_ids]
        assert all(p is not None and p.content_id == instances[0].content_id for p in instances)
        statuses = [o.status for plan_id in plan_ids for o in ledger.outcomes(plan_id)]
    assert statuses == [ChangeStatus.APPLIED] * 3


def test_a_rejected_plan_comes_back_for_a_person_but_the_policy_does_not_overrule_the_rejection(
    example_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    definitions(tmp_path)
    deployment = Deployment(
        environment(example_sandbox, tmp_path, monkeypatch, NTHLAYER_PRE_APPROVED_KINDS="")
    )
    plan, _ = deployment.refresh()
    reject = {"ops": {"reject": {"config": {"plan_id": plan.id, "approver": "bob", "comment": "next week"}}}}
    assert deployment.run("reject_plan", reject).success

    monkeypatch.setenv("NTHLAYER_PRE_APPROVED_KINDS", "add_member")
    deployment.environ["NTHLAYER_PRE_APPROVED_KINDS"] = "add_member"
    again, metadata = deployment.refresh()

    assert again.id != plan.id and again.content_id == plan.content_id
    assert (metadata["new_plan"], metadata["held_back_changes"], metadata["pre_approved_changes"]) == (
        True,
        1,
        0,
    )
    runs, cursor = deployment.gate(None)
    assert runs == [] and "carol@example.com" not in members_of_payments(example_sandbox)
    assert deployment.run("approve_plan", approve_config(again.id, comment="she started")).success
    runs, _ = deployment.gate(cursor)
    assert [r.success for r in runs] == [True]
    assert members_of_payments(example_sandbox)["carol@example.com"] == "responder"


def test_an_approved_removal_undone_in_git_is_superseded_and_written_nowhere(
    example_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    definitions(tmp_path, with_mallory=False, with_carol=False)
    deployment = Deployment(environment(example_sandbox, tmp_path, monkeypatch))
    plan, _ = deployment.refresh()
    assert [(c.kind.value, c.email) for c in plan.changes] == [("remove_member", "mallory@example.com")]
    assert deployment.run("approve_plan", approve_config(plan.id, comment="mallory left")).success
    # Then the change is reverted in Git: mallory stays after all.
    definitions(tmp_path, with_mallory=True, with_carol=False)
    example_sandbox.clear_requests()

    runs, _ = deployment.gate(None)

    assert [r.success for r in runs] == [True]
    assert [r for r in example_sandbox.requests(provider="pagerduty") if r["method"] != "GET"] == []
    assert members_of_payments(example_sandbox)["mallory@example.com"] == "responder"
    with Ledger(deployment.environ["NTHLAYER_LEDGER_URL"]) as ledger:
        (outcome,) = ledger.outcomes(plan.id)
        audited = ledger.audit(team="payments")
    assert outcome.status is ChangeStatus.SUPERSEDED
    assert "the definitions now declare mallory@example.com as responder" in outcome.detail
    assert [(o.status, o.email) for o in audited] == [(ChangeStatus.SUPERSEDED, "mallory@example.com")]
    assert "1 superseded" in slack_messages(example_sandbox)[-1]
    reliability.count("stale approval", approved_after_revert=1, written=0)


def test_a_retry_of_a_superseded_plan_writes_nothing_the_definitions_no_longer_want(
    example_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    definitions(tmp_path, with_mallory=False, with_carol=False)
    deployment = Deployment(environment(example_sandbox, tmp_path, monkeypatch))
    plan, _ = deployment.refresh()
    assert deployment.run("approve_plan", approve_config(plan.id)).success
    # The removal fails (PagerDuty answers 500 to it every time)...
    example_sandbox.faults.set_plan(
        parse_plan({"rules": [{"kind": "status", "status": 500, "rate": 1.0, "endpoint": "DELETE *"}]})
    )
    runs, cursor = deployment.gate(None)
    assert [r.success for r in runs] == [False]
    example_sandbox.faults.set_plan(parse_plan({"rules": []}))
    # ... Git is reverted and a refresh plans something else; then someone retries the old plan.
    definitions(tmp_path, with_mallory=True, with_carol=False)
    newer, _ = deployment.refresh()
    assert newer.id != plan.id
    retried = subprocess.run(
        [sys.executable, "-m", "nthlayer_pipelines.cli", "retry", plan.id, "--approver", "alice"],
        env={**os.environ, **deployment.environ},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert retried.returncode == 0, retried.stderr
    example_sandbox.clear_requests()

    runs, _ = deployment.gate(cursor)

    assert [r.success for r in runs] == [True]
    assert [r for r in example_sandbox.requests(provider="pagerduty") if r["method"] != "GET"] == []
    with Ledger(deployment.environ["NTHLAYER_LEDGER_URL"]) as ledger:
        (outcome,) = ledger.outcomes(plan.id)
        history = [o.status for o in ledger.audit(team="payments")]
    assert outcome.status is ChangeStatus.SUPERSEDED
    assert history == [ChangeStatus.SUPERSEDED, ChangeStatus.FAILED]


def test_a_failed_change_is_retried_by_the_client_alone_and_its_apply_announced_once(
    example_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    definitions(tmp_path)
    deployment = Deployment(environment(example_sandbox, tmp_path, monkeypatch))
    example_sandbox.faults.set_plan(
        parse_plan({"rules": [{"kind": "status", "status": 500, "rate": 1.0, "endpoint": "PUT *"}]})
    )
    deployment.refresh()
    example_sandbox.clear_requests()

    (run,), _ = deployment.gate(None)

    assert not run.success
    puts = [r for r in example_sandbox.requests(provider="pagerduty") if r["method"] == "PUT"]
    assert len(puts) == 6, "the client's six attempts, and no op retry on top of them"
    failure = next(e for e in run.all_events if e.is_step_failure)
    assert "nthlayer retry" in failure.step_failure_data.user_failure_data.description
    # The failure sensor sees the run's failure and stays quiet: the apply announced its outcome.
    dagster_run = deployment.instance.get_run_by_id(run.run_id)
    run_failure = next(e for e in run.all_events if e.event_type_value == "PIPELINE_FAILURE")
    with dg.build_run_status_sensor_context(
        sensor_name="run_failure_to_slack",
        dagster_event=run_failure,
        dagster_instance=deployment.instance,
        dagster_run=dagster_run,
        resources={"slack": build_definitions(deployment.environ).resources["slack"]},
    ).for_run_failure() as context:
        run_failure_to_slack(context)
    messages = slack_messages(example_sandbox)
    assert len(messages) == 1 and "applied with problems" in messages[0]
    reliability.count("failed change retries", puts_sent=len(puts), slack_messages=len(messages))
