"""The apply engine against the sandbox's faults that a retry alone does not settle: reads that lag the
writes, PagerDuty's 2001 refusal, and a create whose answer was lost."""

import time
from typing import Any

import pytest

from nthlayer_pipelines.apply import apply_approval
from nthlayer_pipelines.core.model import ChangeKind, ChangeStatus
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from nthlayer_pipelines.sandbox import RunningSandbox
from nthlayer_pipelines.sandbox.faults import parse_plan
from tests.integration import test_apply_engine
from tests.integration.test_apply_engine import GIT_DESIRED, record_git_plan
from tests.reliability import Reliability

# The apply engine tests' fixtures: a client of the example sandbox that does not sleep, a SQLite ledger.
client, ledger = test_apply_engine.client, test_apply_engine.ledger


def use(sandbox: RunningSandbox, *rules: dict[str, Any]) -> None:
    sandbox.faults.set_plan(parse_plan({"rules": list(rules)}))


def held(sandbox: RunningSandbox, team_name: str) -> dict[str, str]:
    org = sandbox.state.pagerduty
    team = org.team_by_name(team_name)
    return {org.users[u].email: role for u, role in org.memberships[team.id].items()} if team else {}


def test_verification_waits_out_reads_that_lag_the_writes(
    example_sandbox: RunningSandbox, client: PagerDutyClient, ledger: Ledger, reliability: Reliability
) -> None:
    plan = record_git_plan(client, ledger)
    use(example_sandbox, {"kind": "lag", "lag_ms": 500})
    approval = ledger.approve(plan.id, approver="alice")

    report = apply_approval(
        desired=GIT_DESIRED,
        ledger=ledger,
        approval=approval,
        client=client,
        verify_delay_seconds=0.2,
        sleep=time.sleep,
    )

    injected = example_sandbox.faults.injected()
    assert injected.get("stale_read", 0) > 0, injected  # verification did read the old state first
    assert report.succeeded and report.unconverged == ()
    assert report.counts["applied"] == len(plan.changes)
    assert held(example_sandbox, "Payments")["bob@example.com"] == "responder"
    reliability.count_faults("apply_tests", injected)


def test_a_removal_pagerduty_refuses_is_blocked_never_reported_applied(
    example_sandbox: RunningSandbox, client: PagerDutyClient, ledger: Ledger, reliability: Reliability
) -> None:
    plan = record_git_plan(client, ledger)
    use(example_sandbox, {"kind": "refuse_removal"})
    approval = ledger.approve(plan.id, approver="alice")

    report = apply_approval(
        desired=GIT_DESIRED, ledger=ledger, approval=approval, client=client, sleep=lambda _s: None
    )

    (removal,) = [row for row in report.rows if row.change.kind is ChangeKind.REMOVE_MEMBER]
    assert removal.status is ChangeStatus.BLOCKED
    assert "PagerDuty refuses to remove mallory@example.com" in removal.detail
    assert "mallory@example.com" in held(example_sandbox, "Payments")
    assert report.counts["applied"] == len(plan.changes) - 1 and report.succeeded
    reliability.count_faults("apply_tests", example_sandbox.faults.injected())


@pytest.mark.parametrize(
    "lost", [{"kind": "drop", "when": "after"}, {"kind": "status", "status": 502, "when": "after"}]
)
def test_a_team_created_whose_answer_was_lost_is_found_not_created_twice(
    example_sandbox: RunningSandbox,
    client: PagerDutyClient,
    ledger: Ledger,
    lost: dict[str, Any],
    reliability: Reliability,
) -> None:
    plan = record_git_plan(client, ledger)
    use(example_sandbox, {**lost, "endpoint": "POST /teams"})
    approval = ledger.approve(plan.id, approver="alice")

    report = apply_approval(
        desired=GIT_DESIRED, ledger=ledger, approval=approval, client=client, sleep=lambda _s: None
    )

    (create,) = [row for row in report.rows if row.change.kind is ChangeKind.CREATE_TEAM]
    assert create.status is ChangeStatus.APPLIED and "the answer was lost" in create.detail
    assert len(example_sandbox.requests("pagerduty", "POST")) == 1
    names = [t.name for t in example_sandbox.state.pagerduty.teams.values()]
    assert names.count("Search") == 1
    assert report.succeeded
    reliability.count_faults("apply_tests", example_sandbox.faults.injected())
