"""On a live deployment (dagster-webserver and dagster-daemon on Postgres, the daemon's sensor as the gate):
a drift that comes back is fixed again each time, and an approval whose change was then undone in Git is
superseded, never written."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from nthlayer_pipelines.core.model import ChangeStatus
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.sandbox import RunningSandbox, load_seed, running_sandbox
from tests.e2e.deployment import Deployment
from tests.e2e.test_apply_e2e import (
    NTHLAYER,
    TOKENS,
    apply_environment,
    pagerduty_members,
    started_deployment,
)
from tests.integration.test_plan_instances import definitions
from tests.reliability import Reliability
from tests.support import ARTIFACTS, EXAMPLE_SEED, slack_messages

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recurring")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(load_seed(EXAMPLE_SEED), tokens=TOKENS) as running:
        yield running


@pytest.fixture(scope="module")
def deployment(sandbox: RunningSandbox, postgres_server_url: URL, workdir: Path) -> Iterator[Deployment]:
    definitions(workdir)  # Payments as the sandbox holds it, carol missing: the only drift
    environ = apply_environment(
        sandbox, workdir / "home", NTHLAYER_DEFINITIONS=str(workdir / "definitions"), CORTEX_API_URL=""
    )
    with started_deployment(
        postgres_server_url, environ, workdir / "home", ARTIFACTS / "e2e" / "recurring"
    ) as running:
        yield running


def refresh_and_wait(deployment: Deployment) -> str:
    ui = deployment.ui
    assert ui.wait_for_run(ui.launch_run("refresh")).status == "SUCCESS"
    with Ledger(deployment.database_url) as ledger:
        plan_id = ledger.latest_plan_id()
    assert plan_id is not None
    return plan_id


def test_a_member_removed_by_hand_again_and_again_is_put_back_each_time(
    deployment: Deployment, sandbox: RunningSandbox, reliability: Reliability
) -> None:
    ui = deployment.ui
    org = sandbox.state.pagerduty
    payments, carol = org.team_by_name("Payments").id, org.user_by_email("carol@example.com").id
    plan_ids = []
    for round_ in range(3):
        if round_:
            org.remove_membership(payments, carol)  # someone takes her off the team by hand again
        plan_id = refresh_and_wait(deployment)
        plan_ids.append(plan_id)
        with Ledger(deployment.database_url) as ledger:
            policy = ledger.latest_approval(plan_id)
        assert policy is not None and policy.source == "policy", "the policy approves each return of it"
        applied = ui.wait_for_tagged_run("apply_plan", {"nthlayer/approval_id": policy.id})
        assert applied.status == "SUCCESS"
        assert pagerduty_members(sandbox)["Payments"]["carol@example.com"] == "responder"
        after = ui.wait_for_tagged_run("refresh", {"dagster/run_key": f"refresh-after:{applied.run_id}"})
        assert after.status == "SUCCESS"
        assert ui.materializations(after.run_id)["change_plan"]["changes_total"] == 0
        reliability.count("recurring drift on the daemon", drifts_made=1, drifts_fixed=1)

    assert len(set(plan_ids)) == 3
    with Ledger(deployment.database_url) as ledger:
        contents = {ledger.get_plan(plan_id).content_id for plan_id in plan_ids}
    assert len(contents) == 1, "three instances of one drift"


def test_an_approved_removal_undone_in_git_before_the_gate_applies_it_is_superseded(
    deployment: Deployment, sandbox: RunningSandbox, workdir: Path, reliability: Reliability
) -> None:
    ui = deployment.ui
    definitions(workdir, with_mallory=False)  # mallory is to leave Payments
    plan_id = refresh_and_wait(deployment)
    with Ledger(deployment.database_url) as ledger:
        plan = ledger.get_plan(plan_id)
    removal = next(c for c in plan.changes if c.email == "mallory@example.com")
    # The daemon is down for a moment (a deploy, say) while alice approves the removal ...
    deployment.daemon.stop()
    approved = subprocess.run(
        [str(NTHLAYER), "approve", plan_id, "--approver", "alice", "--change", removal.id],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert approved.returncode == 0, approved.stderr
    # ... and the removal is reverted in Git before the gate comes back.
    definitions(workdir, with_mallory=True)
    sandbox.clear_requests()
    deployment.daemon.restart()
    with Ledger(deployment.database_url) as ledger:
        approval = ledger.latest_approval(plan_id)

    applied = ui.wait_for_tagged_run("apply_plan", {"nthlayer/approval_id": approval.id})

    assert applied.status == "SUCCESS"
    assert pagerduty_members(sandbox)["Payments"]["mallory@example.com"] == "responder"
    assert not [r for r in sandbox.requests("pagerduty") if r["method"] == "DELETE"]
    with Ledger(deployment.database_url) as ledger:
        (outcome,) = [o for o in ledger.outcomes(plan_id) if o.change_id == removal.id]
    assert outcome.status is ChangeStatus.SUPERSEDED
    messages = slack_messages(sandbox)
    assert "superseded" in messages[-1]
    reliability.count("stale approval on the daemon", approved_after_revert=1, written=0)
