"""The ledger on SQLite and on Postgres: plans with their verdicts, approvals, and the intent log."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from nthlayer_pipelines.model import Change, ChangeKind, ChangeStatus, Plan, Role
from nthlayer_pipelines.reconcile.safety import BlastRadius, BlastRadiusLimits
from nthlayer_pipelines.resources.ledger import Ledger, LedgerError
from nthlayer_pipelines.resources.ledger.store import changes_digest
from tests.postgres import PostgresUnavailable, fresh_database, postgres_server, render
from tests.support import drop_ledger


def change(kind: ChangeKind, team: str, email: str | None, role=None, from_role=None, team_id="PPAY001"):
    return Change.planned(
        "pagerduty",
        kind,
        team=team,
        team_name=team.title(),
        team_id=team_id,
        email=email,
        user_id=f"P{email[:6].upper()}" if email else None,
        role=role,
        from_role=from_role,
    )


CREATE = change(ChangeKind.CREATE_TEAM, "search", None, team_id=None)
ADD = change(ChangeKind.ADD_MEMBER, "payments", "carol@example.com", Role.RESPONDER)
SET_ROLE = change(ChangeKind.SET_ROLE, "payments", "bob@example.com", Role.RESPONDER, Role.OBSERVER)
REMOVE = change(ChangeKind.REMOVE_MEMBER, "payments", "mallory@example.com", None, Role.RESPONDER)
CHANGES = (CREATE, ADD, SET_ROLE, REMOVE)
PLAN = Plan(id=Plan.make_id(CHANGES), changes=CHANGES)
EXCEEDED = BlastRadius(exceeded=True, reasons=("payments: 3 of 4 members removed (75 % > 20 %)",), removals=3)
WITHIN = BlastRadius(exceeded=False, reasons=(), removals=1)


def other_plan(*changes: Change) -> Plan:
    return Plan(id=Plan.make_id(changes), changes=changes)


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    try:
        with postgres_server() as server, fresh_database(server, prefix="nthlayer_ledger_test") as database:
            yield render(database)
    except PostgresUnavailable as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url = request.getfixturevalue("postgres_database")
    drop_ledger(url)  # every test starts from an empty ledger
    return url


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    store = Ledger(ledger_url)
    yield store
    store.dispose()


def test_a_plan_keeps_its_blast_radius_verdict_and_the_latest_replaces_it(ledger: Ledger) -> None:
    assert ledger.record_plan(PLAN, run_id="run-1", blast_radius=EXCEEDED).new is True
    assert ledger.blast_radius(PLAN.id) == EXCEEDED
    assert ledger.record_plan(PLAN, run_id="run-2").new is False
    assert ledger.blast_radius(PLAN.id) == EXCEEDED, "a sighting without a verdict keeps the last one"
    ledger.record_plan(PLAN, run_id="run-3", blast_radius=WITHIN)
    assert ledger.blast_radius(PLAN.id) == WITHIN
    assert ledger.get_plan(PLAN.id) == PLAN
    assert ledger.latest_plan_id() == PLAN.id

    unjudged = other_plan(ADD)
    ledger.record_plan(unjudged)
    assert ledger.blast_radius(unjudged.id) is None


def test_approve_every_change_by_default(ledger: Ledger) -> None:
    ledger.record_plan(PLAN, blast_radius=WITHIN)
    approval = ledger.approve(PLAN.id, approver=" alice@example.com ", comment="looks right")
    assert re.fullmatch(r"apr-[0-9a-f]{12}", approval.id)
    assert approval.seq >= 1
    assert (approval.plan_id, approval.approver, approval.comment) == (
        PLAN.id,
        "alice@example.com",
        "looks right",
    )
    assert approval.change_ids == tuple(c.id for c in CHANGES)
    assert (approval.decision, approval.source, approval.allow_blast_radius) == ("approved", "person", False)
    assert abs(approval.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert ledger.get_approval(approval.id) == approval
    assert ledger.latest_approval(PLAN.id) == approval
    assert ledger.get_approval("apr-000000000000") is None


def test_approve_some_changes_resolves_them_in_plan_order(ledger: Ledger) -> None:
    ledger.record_plan(PLAN)
    approval = ledger.approve(PLAN.id, approver="policy", change_ids=[ADD.id, CREATE.id], source="policy")
    assert approval.change_ids == (CREATE.id, ADD.id)
    assert approval.source == "policy"
    second = ledger.approve(PLAN.id, approver="alice", change_ids=[REMOVE.id])
    assert second.seq > approval.seq
    assert approval.id != second.id


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"plan_id": "plan-000000000000"}, "no plan 'plan-000000000000' in the ledger"),
        ({"approver": "  "}, "approver is empty"),
        ({"change_ids": ["chg-ffffffffffff", ADD.id]}, f"change chg-ffffffffffff is not in plan {PLAN.id}"),
        ({"change_ids": []}, "change_ids is empty"),
        ({"source": "robot"}, "source must be one of person, policy, not 'robot'"),
    ],
)
def test_approve_refuses_with_a_clear_message(ledger: Ledger, arguments: dict, message: str) -> None:
    ledger.record_plan(PLAN)
    call = {"plan_id": PLAN.id, "approver": "alice", **arguments}
    with pytest.raises(LedgerError) as raised:
        ledger.approve(call.pop("plan_id"), **call)
    assert message in str(raised.value)
    assert ledger.approvals_after(0) == []


def test_only_the_latest_plan_can_be_approved(ledger: Ledger) -> None:
    newer = other_plan(ADD, REMOVE)
    ledger.record_plan(PLAN)
    ledger.record_plan(newer)
    with pytest.raises(LedgerError) as raised:
        ledger.approve(PLAN.id, approver="alice")
    assert str(raised.value) == (
        f"plan {PLAN.id} is not the latest plan ({newer.id} is): refresh and approve that one"
    )
    # Seen again by a later refresh: a new instance of the same changes, which is the one to approve.
    again = ledger.record_plan(PLAN)
    assert (again.new, again.generation, again.previous_id) == (True, 2, PLAN.id)
    assert again.plan.id != PLAN.id and again.plan.changes == PLAN.changes
    with pytest.raises(LedgerError, match=f"plan {PLAN.id} is not the latest plan"):
        ledger.approve(PLAN.id, approver="alice")
    assert ledger.approve(again.plan.id, approver="alice").plan_id == again.plan.id


def test_a_plan_without_changes_cannot_be_approved(ledger: Ledger) -> None:
    empty = other_plan()
    ledger.record_plan(empty)
    with pytest.raises(LedgerError, match=f"plan {empty.id} has no changes to approve"):
        ledger.approve(empty.id, approver="alice")


def test_an_exceeded_blast_radius_needs_allow_blast_radius(ledger: Ledger) -> None:
    # The verdict is judged at approval from the rosters recorded with the plan, with the limits in force.
    ledger.record_plan(PLAN, blast_radius=WITHIN, basis={"PPAY001": {"members": 4, "managers": 1}})
    strict = BlastRadiusLimits(min_team_removals=1)
    with pytest.raises(LedgerError) as raised:
        ledger.approve(PLAN.id, approver="alice", limits=strict)
    message = str(raised.value)
    assert "payments (PPAY001): 1 of 4 members removed (25 % > 20 %)" in message
    assert "`allow_blast_radius: true`" in message
    # Approving only what removes nobody needs no override.
    additions = ledger.approve(PLAN.id, approver="alice", change_ids=[CREATE.id, ADD.id], limits=strict)
    assert additions.allow_blast_radius is False
    allowed = ledger.approve(PLAN.id, approver="alice", allow_blast_radius=True, limits=strict)
    assert allowed.allow_blast_radius is True
    assert allowed.change_ids == tuple(c.id for c in CHANGES)


def test_a_stored_verdict_is_never_what_an_approval_is_judged_on(ledger: Ledger) -> None:
    # A verdict row says nothing the rosters do not: deleting or editing it loosens nothing, and a plan
    # recorded without rosters is judged at apply, on what PagerDuty holds then.
    ledger.record_plan(PLAN, blast_radius=EXCEEDED, basis={"PPAY001": {"members": 40, "managers": 3}})
    assert ledger.approve(PLAN.id, approver="alice").allow_blast_radius is False


def test_a_rejected_plan_cannot_be_approved_and_its_approvals_are_withdrawn(ledger: Ledger) -> None:
    ledger.record_plan(PLAN)
    approval = ledger.approve(PLAN.id, approver="alice")
    assert ledger.approvals_after(0) == [approval]
    rejection = ledger.reject(PLAN.id, approver="bob", comment="mallory is on call this week")
    assert rejection.decision == "rejected"
    assert rejection.seq > approval.seq
    assert rejection.change_ids == tuple(c.id for c in CHANGES)
    assert ledger.latest_approval(PLAN.id) == rejection
    assert ledger.rejection(PLAN.id) == rejection
    assert ledger.approvals_after(0) == []
    with pytest.raises(LedgerError) as raised:
        ledger.approve(PLAN.id, approver="alice")
    assert str(raised.value) == (
        f"plan {PLAN.id} was rejected by bob ({rejection.id}): mallory is on call this week; "
        "a rejected plan is never applied; the next refresh run records the drift still there as a new "
        "plan (the rejected changes in it wait for a person, never pre-approved): launch the `refresh` job "
        "(in the UI, or `dg launch --job refresh -m nthlayer_pipelines.definitions`; refresh_schedule runs "
        "it hourly)"
    )
    with pytest.raises(LedgerError, match="was rejected"):
        ledger.reject(PLAN.id, approver="bob")
    with pytest.raises(LedgerError, match="was rejected"):
        ledger.retry(PLAN.id, approver="alice")


def test_approvals_after_is_a_cursor_over_approvals_in_seq_order(ledger: Ledger) -> None:
    first_plan = other_plan(ADD)
    ledger.record_plan(first_plan)
    first = ledger.approve(first_plan.id, approver="alice")
    ledger.record_plan(PLAN)
    second = ledger.approve(PLAN.id, approver="alice", change_ids=[CREATE.id])
    third = ledger.approve(PLAN.id, approver="alice", change_ids=[ADD.id])
    assert ledger.approvals_after(0) == [first, second, third]
    assert ledger.approvals_after(first.seq) == [second, third]
    assert ledger.approvals_after(third.seq) == []


def test_retry_covers_what_the_log_does_not_show_done(ledger: Ledger) -> None:
    ledger.record_plan(PLAN)
    with pytest.raises(LedgerError, match=f"plan {PLAN.id} has no approval to retry"):
        ledger.retry(PLAN.id, approver="alice")
    approval = ledger.approve(PLAN.id, approver="alice", allow_blast_radius=True)
    ledger.mark_pending(PLAN.id, approval.id, [c.id for c in CHANGES], "run-1")
    ledger.record_outcome(PLAN.id, CREATE.id, status="applied", approval_id=approval.id, run_id="run-1")
    ledger.record_outcome(PLAN.id, ADD.id, status="failed", approval_id=approval.id, run_id="run-1")
    ledger.record_outcome(PLAN.id, SET_ROLE.id, status="stale", approval_id=approval.id, run_id="run-1")
    # REMOVE stays pending: the run died before it got to it.

    ledger.record_plan(other_plan(ADD))  # a newer plan does not stop a retry of this one
    retry = ledger.retry(PLAN.id, approver="bob")
    assert retry.change_ids == (ADD.id, REMOVE.id)
    assert (retry.approver, retry.comment, retry.decision) == ("bob", f"retry of {approval.id}", "approved")
    assert retry.allow_blast_radius is True
    assert retry.seq > approval.seq and retry.id != approval.id
    assert ledger.approvals_after(approval.seq) == [retry]

    for done in (ADD, REMOVE):
        ledger.record_outcome(PLAN.id, done.id, status="applied", approval_id=retry.id, run_id="run-2")
    with pytest.raises(LedgerError) as raised:
        ledger.retry(PLAN.id, approver="bob")
    assert "nothing left to retry" in str(raised.value) and retry.id in str(raised.value)


def test_mark_pending_never_reopens_a_finished_change(ledger: Ledger) -> None:
    ledger.record_plan(PLAN)
    approval = ledger.approve(PLAN.id, approver="alice")
    every = [c.id for c in CHANGES]
    assert ledger.mark_pending(PLAN.id, approval.id, reversed(every), "run-1") == tuple(every)
    for c, status in zip(CHANGES, ["applied", "skipped", "blocked", "failed"], strict=True):
        ledger.record_outcome(PLAN.id, c.id, status=status, approval_id=approval.id, run_id="run-1")
    assert ledger.mark_pending(PLAN.id, approval.id, every, "run-2") == (REMOVE.id,)
    ledger.record_outcome(PLAN.id, ADD.id, status="stale", approval_id=approval.id, run_id="run-2")
    assert ledger.mark_pending(PLAN.id, approval.id, every, "run-3") == (REMOVE.id,)

    outcomes = ledger.outcomes(PLAN.id)
    assert [o.change_id for o in outcomes] == every
    assert [o.status for o in outcomes] == ["applied", "stale", "blocked", "pending"]
    assert [o.attempts for o in outcomes] == [1, 1, 1, 3]
    assert [(o.provider, o.subject) for o in outcomes] == [
        ("pagerduty", "search"),
        ("pagerduty", "payments/carol@example.com"),
        ("pagerduty", "payments/bob@example.com"),
        ("pagerduty", "payments/mallory@example.com"),
    ]
    remove = outcomes[3]
    assert (remove.kind, remove.team, remove.email, remove.from_role, remove.run_id) == (
        ChangeKind.REMOVE_MEMBER,
        "payments",
        "mallory@example.com",
        Role.RESPONDER,
        "run-3",
    )
    with pytest.raises(LedgerError, match=f"change chg-ffffffffffff is not in plan {PLAN.id}"):
        ledger.mark_pending(PLAN.id, approval.id, ["chg-ffffffffffff"], "run-4")


def test_record_outcome_adds_up_the_cost_and_keeps_the_detail(ledger: Ledger) -> None:
    ledger.record_plan(PLAN)
    approval = ledger.approve(PLAN.id, approver="alice")
    ledger.mark_pending(PLAN.id, approval.id, [REMOVE.id], "run-1")
    ledger.record_outcome(
        PLAN.id,
        REMOVE.id,
        status=ChangeStatus.FAILED,
        approval_id=approval.id,
        run_id="run-1",
        api_calls=7,
        retries=5,
        error="PagerDuty DELETE /teams/PPAY001/users/PMALLOR: Internal Server Error (HTTP 500)",
    )
    ledger.mark_pending(PLAN.id, approval.id, [REMOVE.id], "run-2")
    outcome = ledger.record_outcome(
        PLAN.id,
        REMOVE.id,
        status=ChangeStatus.BLOCKED,
        approval_id=approval.id,
        run_id="run-2",
        api_calls=2,
        detail="mallory@example.com is a target of escalation policy Payments On-Call (PEP0001)",
    )
    assert (outcome.status, outcome.attempts, outcome.api_calls, outcome.retries) == ("blocked", 2, 9, 5)
    assert outcome.error is None
    assert outcome.detail.endswith("Payments On-Call (PEP0001)")
    assert ledger.outcomes(PLAN.id) == [outcome]
    with pytest.raises(ValueError, match="'done' is not a valid ChangeStatus"):
        ledger.record_outcome(PLAN.id, ADD.id, status="done", approval_id=approval.id, run_id=None)


def test_audit_is_newest_first_without_pending_and_filters_by_team_and_time(ledger: Ledger) -> None:
    ledger.record_plan(PLAN)
    approval = ledger.approve(PLAN.id, approver="alice")
    ledger.mark_pending(PLAN.id, approval.id, [c.id for c in CHANGES], "run-1")
    ledger.record_outcome(PLAN.id, CREATE.id, status="applied", approval_id=approval.id, run_id="run-1")
    time.sleep(0.01)
    cutoff = datetime.now(UTC)
    time.sleep(0.01)
    ledger.record_outcome(PLAN.id, ADD.id, status="applied", approval_id=approval.id, run_id="run-1")
    ledger.record_outcome(PLAN.id, SET_ROLE.id, status="skipped", approval_id=approval.id, run_id="run-1")
    # REMOVE is still pending: not in the audit.

    assert [o.change_id for o in ledger.audit()] == [SET_ROLE.id, ADD.id, CREATE.id]
    assert [o.change_id for o in ledger.audit(team="payments")] == [SET_ROLE.id, ADD.id]
    assert [o.change_id for o in ledger.audit(team="search")] == [CREATE.id]
    assert [o.change_id for o in ledger.audit(since=cutoff)] == [SET_ROLE.id, ADD.id]
    naive_cutoff = cutoff.replace(tzinfo=None)
    assert [o.change_id for o in ledger.audit(team="search", since=naive_cutoff)] == []
    assert all(o.updated_at.tzinfo is not None for o in ledger.audit())


def test_concurrent_approvals_from_two_processes_get_distinct_increasing_seqs(ledger_url: str) -> None:
    """Two ledgers on one database (the CLI and the policy, say) approving at once."""
    first, second = Ledger(ledger_url), Ledger(ledger_url)
    first.record_plan(PLAN)
    results: list[int] = []
    errors: list[BaseException] = []

    def approve_many(store: Ledger) -> None:
        try:
            for _ in range(8):
                results.append(store.approve(PLAN.id, approver="alice", change_ids=[ADD.id]).seq)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=approve_many, args=(store,)) for store in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(set(results)) == 16
    assert [a.seq for a in second.approvals_after(0)] == sorted(results)
    first.dispose()
    second.dispose()


def test_a_write_waits_for_another_process_holding_the_write_lock(ledger_url: str) -> None:
    """What keeps approvals committed in seq order and check-then-write decisions sound."""
    holder, waiter = Ledger(ledger_url), Ledger(ledger_url)
    holder.record_plan(PLAN)
    approved = threading.Event()

    def approve() -> None:
        waiter.approve(PLAN.id, approver="alice")
        approved.set()

    with holder._begin(write=True):
        thread = threading.Thread(target=approve)
        thread.start()
        assert not approved.wait(0.5), "the approval went through while another writer held the lock"
    thread.join(timeout=10)
    assert approved.is_set()
    holder.dispose()
    waiter.dispose()


# ---- plan instances ---------------------------------------------------------------------------------


def test_a_plan_applied_and_seen_again_is_a_new_instance_the_policy_approves_afresh(ledger: Ledger) -> None:
    first = ledger.record_plan(PLAN)
    policy = ledger.approve_by_policy(PLAN.id, change_ids=[ADD.id], comment="pre-approved")
    assert policy is not None
    assert ledger.record_plan(PLAN).plan.id == PLAN.id, "seen again before any apply: the same instance"
    ledger.mark_pending(PLAN.id, policy.id, [ADD.id], "run-1")
    ledger.record_outcome(PLAN.id, ADD.id, status="applied", approval_id=policy.id, run_id="run-1")

    # The same drift seen after the apply (someone undid it by hand) is planned afresh.
    again = ledger.record_plan(PLAN)

    assert (again.new, again.generation, again.previous_id) == (True, 2, first.plan.id)
    assert ledger.latest_plan_id() == again.plan.id
    second = ledger.approve_by_policy(again.plan.id, change_ids=[ADD.id], comment="pre-approved")
    assert second is not None and second.change_ids == (ADD.id,)
    assert ledger.mark_pending(again.plan.id, second.id, [ADD.id], "run-2") == (ADD.id,)


def test_a_rejected_drift_is_a_new_instance_a_person_may_approve_but_the_policy_holds_back(
    ledger: Ledger,
) -> None:
    ledger.record_plan(PLAN)
    ledger.reject(PLAN.id, approver="bob", comment="not yet")

    again = ledger.record_plan(PLAN)

    assert again.new and again.plan.id != PLAN.id
    assert again.held_back == tuple(c.id for c in CHANGES)
    assert ledger.approve_by_policy(again.plan.id, change_ids=[ADD.id], comment="pre-approved") is None
    assert ledger.record_plan(PLAN).held_back == again.held_back, "a sighting keeps what is held back"
    approval = ledger.approve(again.plan.id, approver="alice", comment="now")
    assert approval.change_ids == tuple(c.id for c in CHANGES)


def test_a_rejection_lasts_as_long_as_the_drift_it_rejected(ledger: Ledger) -> None:
    ledger.record_plan(PLAN)
    ledger.reject(PLAN.id, approver="bob")
    without_add = other_plan(CREATE, SET_ROLE, REMOVE)
    assert set(ledger.record_plan(without_add).held_back) == {CREATE.id, SET_ROLE.id, REMOVE.id}

    # The addition's drift went away and came back: it is a new drift, the policy may approve it.
    back = ledger.record_plan(PLAN)

    assert set(back.held_back) == {CREATE.id, SET_ROLE.id, REMOVE.id}
    policy = ledger.approve_by_policy(back.plan.id, change_ids=[CREATE.id, ADD.id], comment="pre-approved")
    assert policy is not None and policy.change_ids == (ADD.id,)


def test_an_approval_records_the_digest_of_exactly_what_it_approves(ledger: Ledger) -> None:
    ledger.record_plan(PLAN)
    some = ledger.approve(PLAN.id, approver="alice", change_ids=[ADD.id])
    every = ledger.approve(PLAN.id, approver="alice")

    assert some.digest == changes_digest(PLAN.id, [ADD])
    assert every.digest == changes_digest(PLAN.id, CHANGES)
    assert some.digest != every.digest
    edited = ADD.model_copy(update={"user_id": "PMALLORY"})
    assert changes_digest(PLAN.id, [edited]) != some.digest, "any field of a change is covered"


def test_every_attempt_of_a_change_is_kept_and_audited(ledger: Ledger) -> None:
    ledger.record_plan(PLAN)
    approval = ledger.approve(PLAN.id, approver="alice")
    ledger.mark_pending(PLAN.id, approval.id, [ADD.id], "run-1")
    ledger.record_outcome(
        PLAN.id, ADD.id, status="failed", approval_id=approval.id, run_id="run-1", error="HTTP 500"
    )
    retry = ledger.retry(PLAN.id, approver="alice")
    ledger.mark_pending(PLAN.id, retry.id, [ADD.id], "run-2")
    ledger.record_outcome(PLAN.id, ADD.id, status="applied", approval_id=retry.id, run_id="run-2")

    history = [(o.status, o.attempts, o.run_id, o.error) for o in ledger.audit()]

    assert history == [
        (ChangeStatus.APPLIED, 2, "run-2", None),
        (ChangeStatus.FAILED, 1, "run-1", "HTTP 500"),
    ]
    (current,) = ledger.outcomes(PLAN.id)
    assert (current.status, current.attempts) == (ChangeStatus.APPLIED, 2)
