"""Races on one Postgres ledger, each with one stated outcome, against the sandbox over loopback.

- Two refreshes recording one plan at once: the pre-approval policy approves it once (checked and written
  in one transaction), so the sensor launches one apply.
- Two approvals of one plan at once: both are recorded (distinct seqs, so the sensor launches both), and
  their applies, started together, take the ledger's apply lock in turn: the first writes each change
  once, the second waits, finds every change done in the intent log and writes nothing.
- A plan approved, then superseded by a newer refresh (its policy approval applying at the same time):
  approving the old plan is refused from then on; the approval given before is applied, re-reading each
  entity: what converged meanwhile is skipped, what moved is stale and left alone, the rest is written
  once. Nothing is written twice across the two plans.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from nthlayer_pipelines.apply import ApplyReport, apply_approval
from nthlayer_pipelines.core.model import Change, ChangeKind, ChangeStatus, Plan, Role
from nthlayer_pipelines.desired.git import load_definitions
from nthlayer_pipelines.resources.ledger import Approval, Ledger, LedgerError
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from nthlayer_pipelines.sandbox import DEFAULT_PAGERDUTY_TOKEN, RunningSandbox, load_seed, running_sandbox
from tests.integration.test_apply_engine import (
    GIT_DESIRED,
    git_only_write_paths,
    ids,
    landed_writes,
    plan_and_verdict,
    record_git_plan,
)
from tests.reliability import Reliability
from tests.support import EXAMPLE_DEFINITIONS, EXAMPLE_SEED, drop_ledger

pytestmark = pytest.mark.postgres

POLICY_ROUNDS = 12
LATENCY_MS = 20  # every request waits: two applies started together overlap for certain without the lock
T = TypeVar("T")


@pytest.fixture
def ledger_url(postgres_url: str) -> str:
    drop_ledger(postgres_url)  # every test starts from an empty ledger
    return postgres_url


@pytest.fixture
def slow_sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(load_seed(EXAMPLE_SEED), latency_ms=LATENCY_MS) as sandbox:
        yield sandbox


def addition_plan(number: int) -> Plan:
    email = f"person-{number}@example.com"
    change = Change.planned(
        "pagerduty",
        ChangeKind.ADD_MEMBER,
        team="payments",
        team_name="Payments",
        team_id="PPAY001",
        email=email,
        user_id=f"PU{number:05d}",
        role=Role.RESPONDER,
    )
    return Plan(id=Plan.make_id((change,)), changes=(change,))


def client_of(sandbox: RunningSandbox) -> PagerDutyClient:
    return PagerDutyClient(sandbox.pagerduty_url, DEFAULT_PAGERDUTY_TOKEN, sleep=lambda _seconds: None)


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Run the calls in threads released together; their results in call order, or the first error."""
    start = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], T]) -> None:
        start.wait()
        try:
            results[index] = call()
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


def count_race(
    reliability: Reliability, scenario: str, approved: int, sandbox: RunningSandbox, logged: int
) -> None:
    """For the reliability table: approved changes, writes that took effect twice, changes not logged."""
    writes = landed_writes(sandbox)
    reliability.count(
        scenario,
        changes_approved=approved,
        duplicate_writes=sum(n - 1 for n in writes.values()),
        lost_changes=approved - logged,
    )


def applying(
    ledger_url: str, sandbox: RunningSandbox, approval: Approval, run_id: str
) -> Callable[[], ApplyReport]:
    """An apply as a run worker does it: a ledger and a client of its own."""

    def apply() -> ApplyReport:
        ledger = Ledger(ledger_url)
        try:
            with client_of(sandbox) as client:
                return apply_approval(
                    desired=GIT_DESIRED,
                    ledger=ledger,
                    approval=approval,
                    client=client,
                    run_id=run_id,
                    verify_delay_seconds=0,
                )
        finally:
            ledger.dispose()

    return apply


def test_two_refreshes_seeing_one_plan_at_once_pre_approve_it_once(
    ledger_url: str, reliability: Reliability
) -> None:
    """The policy's part of two refreshes that finish together, round after round."""
    refreshes = [Ledger(ledger_url), Ledger(ledger_url)]
    ledger = Ledger(ledger_url)
    for round_ in range(POLICY_ROUNDS):
        plan = addition_plan(round_)

        def refresh(store: Ledger, plan: Plan = plan) -> Approval | None:
            store.record_plan(plan)
            return store.approve_by_policy(plan.id, change_ids=[plan.changes[0].id], comment="pre-approved")

        approved = at_once(*(lambda store=store: refresh(store) for store in refreshes))
        assert sum(a is not None for a in approved) == 1, f"round {round_}: {approved}"
        assert len(ledger.approvals_after(0)) == round_ + 1
    duplicates = len(ledger.approvals_after(0)) - POLICY_ROUNDS
    reliability.count("race_two_refreshes_policy", rounds=POLICY_ROUNDS, duplicate_approvals=duplicates)
    for store in [*refreshes, ledger]:
        store.dispose()


def test_two_approvals_of_one_plan_at_once_are_both_recorded_and_each_change_is_written_once(
    ledger_url: str, slow_sandbox: RunningSandbox, reliability: Reliability
) -> None:
    ledger = Ledger(ledger_url)
    with client_of(slow_sandbox) as client:
        plan = record_git_plan(client, ledger)
    people = [Ledger(ledger_url), Ledger(ledger_url)]
    first, second = at_once(
        *(lambda store=store: store.approve(plan.id, approver="alice") for store in people)
    )
    for store in people:
        store.dispose()
    assert first.id != second.id and first.seq != second.seq
    assert ledger.approvals_after(0) == sorted([first, second], key=lambda a: a.seq)
    slow_sandbox.clear_requests()

    reports = at_once(
        applying(ledger_url, slow_sandbox, first, "run-1"),
        applying(ledger_url, slow_sandbox, second, "run-2"),
    )

    assert landed_writes(slow_sandbox) == Counter(dict.fromkeys(git_only_write_paths(slow_sandbox), 1))
    assert sorted(r.already_done for r in reports) == [0, len(plan.changes)]
    assert sorted(r.counts["applied"] for r in reports) == [0, len(plan.changes)]
    outcomes = ledger.outcomes(plan.id)
    assert [(o.status, o.attempts) for o in outcomes] == [(ChangeStatus.APPLIED, 1)] * len(plan.changes)
    count_race(reliability, "race_two_approvals_one_plan", len(plan.changes), slow_sandbox, len(outcomes))
    ledger.dispose()


def test_a_plan_superseded_after_its_approval_applies_only_what_is_still_needed(
    ledger_url: str, slow_sandbox: RunningSandbox, reliability: Reliability
) -> None:
    ledger = Ledger(ledger_url)
    client = client_of(slow_sandbox)
    old_plan = record_git_plan(client, ledger)
    old_approval = ledger.approve(old_plan.id, approver="alice")
    # Meanwhile people change PagerDuty by hand: carol is added as planned, bob made a manager.
    i = ids(slow_sandbox)
    slow_sandbox.state.pagerduty.set_membership(i["Payments"], i["carol"], "responder")
    slow_sandbox.state.pagerduty.set_membership(i["Payments"], i["bob"], "manager")
    # A refresh records the newer plan, and the policy approves its creation and additions.
    new_plan, verdict = plan_and_verdict(client, load_definitions(EXAMPLE_DEFINITIONS))
    ledger.record_plan(new_plan, blast_radius=verdict)
    assert new_plan.id != old_plan.id
    assert "carol@example.com" not in {c.email for c in new_plan.changes}
    policy_changes = [
        c.id
        for c in new_plan.changes
        if c.kind is ChangeKind.CREATE_TEAM
        or (c.kind is ChangeKind.ADD_MEMBER and c.role is not Role.MANAGER)
    ]
    policy = ledger.approve(new_plan.id, approver="policy", change_ids=policy_changes, source="policy")
    with pytest.raises(LedgerError, match=f"plan {old_plan.id} is not the latest plan"):
        ledger.approve(old_plan.id, approver="bob")
    slow_sandbox.clear_requests()

    at_once(
        applying(ledger_url, slow_sandbox, old_approval, "run-old"),
        applying(ledger_url, slow_sandbox, policy, "run-new"),
    )

    by_email = {o.email: o for o in ledger.outcomes(old_plan.id)}
    assert by_email["carol@example.com"].status is ChangeStatus.SKIPPED
    assert by_email["bob@example.com"].status is ChangeStatus.STALE
    assert by_email["bob@example.com"].detail == "now a member as manager; the plan expected observer"
    terminal = [o for p in (old_plan, new_plan) for o in ledger.outcomes(p.id) if o.status.terminal]
    base = "/pagerduty/teams"
    search = slow_sandbox.state.pagerduty.team_by_name("Search").id
    assert landed_writes(slow_sandbox) == Counter(
        {
            ("POST", base): 1,
            ("PUT", f"{base}/{search}/users/{i['heidi']}"): 1,
            ("PUT", f"{base}/{search}/users/{i['ivan']}"): 1,
            ("DELETE", f"{base}/{i['Payments']}/users/{i['mallory']}"): 1,
        }
    )
    approved = len(old_plan.changes) + len(policy_changes)
    assert len(terminal) == approved
    count_race(reliability, "race_plan_superseded", approved, slow_sandbox, len(terminal))
    # bob's role stays as the person set it, until someone approves a plan that changes it.
    assert slow_sandbox.state.pagerduty.memberships[i["Payments"]][i["bob"]] == "manager"
    client.close()
    ledger.dispose()
