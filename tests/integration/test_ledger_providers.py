"""Plans per provider, on SQLite and Postgres: a plan is what one apply writes through one client, and the
latest plan is the latest of its provider. Another provider's plans, recorded since or not, never make a
PagerDuty plan "not the latest": approvals, the policy, the approval gate and rejections are each
provider's own."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from nthlayer_pipelines.cli import main
from nthlayer_pipelines.model import Change, ChangeKind, FieldChange, Plan, Role
from nthlayer_pipelines.resources.ledger import Ledger, LedgerError
from tests.integration.test_ledger import ADD as CAROL
from tests.integration.test_ledger import (  # noqa: F401 (fixtures)
    change,
    ledger,
    ledger_url,
    postgres_database,
)


def slack_topic(topic: str) -> Change:
    """A change another provider's apply writes: a Slack channel's topic."""
    return Change.of_fields(
        "slack",
        ChangeKind.UPDATE_SERVICE,
        team="payments",
        team_name="Payments",
        team_id=None,
        target_id="C0PAYMENTS",
        target_name="#payments-oncall",
        fields=(FieldChange(name="topic", before="on call: bob", after=topic),),
    )


def plan_of(*changes: Change, provider: str = "pagerduty") -> Plan:
    return Plan(id=Plan.make_id(changes), changes=changes, provider=provider)


DAVE = change(ChangeKind.ADD_MEMBER, "payments", "dave@example.com", Role.RESPONDER)
PAGERDUTY = plan_of(CAROL)
SLACK = plan_of(slack_topic("on call: carol"), provider="slack")


def test_a_newer_plan_of_another_provider_leaves_the_pagerduty_plan_the_latest(
    ledger: Ledger,  # noqa: F811 (the fixture imported above)
) -> None:
    ledger.record_plan(PAGERDUTY)
    ledger.record_plan(SLACK)

    assert ledger.latest_plan_id() == PAGERDUTY.id
    assert ledger.latest_plan_id("pagerduty") == PAGERDUTY.id
    assert ledger.latest_plan_id("slack") == SLACK.id
    assert ledger.latest_plan_id("cortex") is None
    assert ledger.get_plan(SLACK.id) == SLACK and ledger.get_plan(PAGERDUTY.id) == PAGERDUTY
    # Seen again by a refresh after Slack's plan: the same open instance, which a person may approve.
    assert ledger.preview_plan(PAGERDUTY).new is False
    again = ledger.record_plan(PAGERDUTY)
    assert (again.new, again.plan.id) == (False, PAGERDUTY.id)
    assert ledger.approve(PAGERDUTY.id, approver="alice").plan_id == PAGERDUTY.id
    assert ledger.approve(SLACK.id, approver="alice").plan_id == SLACK.id

    newer_slack = ledger.record_plan(plan_of(slack_topic("on call: dave"), provider="slack")).plan
    with pytest.raises(LedgerError) as raised:
        ledger.approve(SLACK.id, approver="alice")
    assert str(raised.value) == (
        f"plan {SLACK.id} is not the latest plan of slack ({newer_slack.id} is): refresh and approve that one"
    )
    assert ledger.approve(PAGERDUTY.id, approver="bob", change_ids=[CAROL.id]).plan_id == PAGERDUTY.id
    newer = ledger.record_plan(plan_of(CAROL, DAVE)).plan
    with pytest.raises(LedgerError, match=f"plan {PAGERDUTY.id} is not the latest plan \\({newer.id} is\\)"):
        ledger.approve(PAGERDUTY.id, approver="alice")
    assert ledger.latest_plan_id("slack") == newer_slack.id


def test_the_policy_the_gate_and_rejections_are_each_providers_own(
    ledger: Ledger,  # noqa: F811 (the fixture imported above)
) -> None:
    ledger.record_plan(PAGERDUTY)
    ledger.record_plan(SLACK)
    pagerduty_policy = ledger.approve_by_policy(PAGERDUTY.id, change_ids=[CAROL.id], comment="pre-approved")
    slack_policy = ledger.approve_by_policy(
        SLACK.id, change_ids=[c.id for c in SLACK.changes], comment="pre-approved"
    )
    assert pagerduty_policy is not None and slack_policy is not None
    # The approval gate launches both providers' applies, in the order they were approved.
    assert ledger.approvals_after(0) == [pagerduty_policy, slack_policy]

    ledger.reject(SLACK.id, approver="bob", comment="not this channel")

    assert ledger.approvals_after(0) == [pagerduty_policy], "Slack's rejection withdraws Slack's alone"
    # PagerDuty's next plan inherits nothing of Slack's rejection; Slack's next plan holds it back.
    pagerduty_next = ledger.record_plan(plan_of(CAROL, DAVE))
    assert pagerduty_next.new and pagerduty_next.held_back == ()
    slack_again = ledger.record_plan(SLACK)
    assert slack_again.new and slack_again.previous_id == SLACK.id
    assert slack_again.held_back == tuple(c.id for c in SLACK.changes)
    assert (
        ledger.approve_by_policy(slack_again.plan.id, change_ids=[*slack_again.held_back], comment="") is None
    )
    assert ledger.approve_by_policy(pagerduty_next.plan.id, change_ids=[DAVE.id], comment="") is not None


def test_a_plan_without_changes_is_the_provider_it_names(
    ledger: Ledger,  # noqa: F811 (the fixture imported above)
) -> None:
    ledger.record_plan(PAGERDUTY)
    slack_converged = ledger.record_plan(plan_of(provider="slack"))

    assert slack_converged.plan.provider == "slack"
    assert ledger.latest_plan_id("slack") == slack_converged.plan.id
    assert ledger.latest_plan_id() == PAGERDUTY.id
    assert ledger.approve(PAGERDUTY.id, approver="alice").plan_id == PAGERDUTY.id

    # Converged plans share one content id whoever's they are; each provider's is an instance of its own.
    pagerduty_converged = ledger.record_plan(plan_of())
    assert pagerduty_converged.new and pagerduty_converged.plan.provider == "pagerduty"
    assert pagerduty_converged.plan.id != slack_converged.plan.id
    assert ledger.latest_plan_id() == pagerduty_converged.plan.id
    assert ledger.latest_plan_id("slack") == slack_converged.plan.id
    seen_again = ledger.record_plan(plan_of(provider="slack"))
    assert (seen_again.new, seen_again.plan.id) == (False, slack_converged.plan.id)
    assert ledger.preview_plan(plan_of()).plan.id == pagerduty_converged.plan.id


def test_a_plan_is_one_providers(
    ledger: Ledger,  # noqa: F811 (the fixture imported above)
) -> None:
    mixed = Plan(id="plan-mixed", changes=(CAROL, *SLACK.changes))
    with pytest.raises(LedgerError, match="holds changes of several providers \\(pagerduty, slack\\)"):
        ledger.record_plan(mixed)
    with pytest.raises(LedgerError, match="holds changes of several providers"):
        ledger.preview_plan(mixed)
    mislabelled = Plan(id=PAGERDUTY.id, changes=PAGERDUTY.changes, provider="slack")
    with pytest.raises(LedgerError, match="says it is slack's, but its changes are pagerduty's"):
        ledger.record_plan(mislabelled)
    assert ledger.latest_plan_id() is None and ledger.latest_plan_id("slack") is None
    # A plan that names no provider is its changes'.
    unlabelled = ledger.record_plan(Plan(id="anything", changes=SLACK.changes)).plan
    assert unlabelled == SLACK


def test_an_outcome_names_its_changes_provider_and_subject(
    ledger: Ledger,  # noqa: F811 (the fixture imported above)
) -> None:
    ledger.record_plan(SLACK)
    approval = ledger.approve(SLACK.id, approver="alice")
    (topic,) = SLACK.changes
    ledger.mark_pending(SLACK.id, approval.id, [topic.id], "run-1")
    (pending,) = ledger.outcomes(SLACK.id)
    applied = ledger.record_outcome(
        SLACK.id, topic.id, status="applied", approval_id=approval.id, run_id="run-1"
    )

    for outcome in (pending, applied):
        assert (outcome.provider, outcome.subject, outcome.kind) == (
            "slack",
            "payments/#payments-oncall",
            ChangeKind.UPDATE_SERVICE,
        )
    assert ledger.audit(team="payments") == [applied]
    audit = CliRunner().invoke(main, ["audit"], env={"NTHLAYER_LEDGER_URL": ledger.url})
    assert f"applied  update_service payments/#payments-oncall (slack)  [{SLACK.id} {approval.id}]" in (
        audit.output
    )
