"""The apply engine against the sandbox over loopback: approved plans written once, resumed, refused."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
from starlette.responses import JSONResponse, Response

from nthlayer_pipelines.apply import ApplyRefused, ApplyReport, apply_approval
from nthlayer_pipelines.assets.pagerduty.teams.compare import compute_divergences
from nthlayer_pipelines.core.model import ChangeStatus, DesiredState, Member, Plan, Role, Team
from nthlayer_pipelines.core.plan import build_plan
from nthlayer_pipelines.core.safety import (
    BlastRadius,
    assess_blast_radius,
    rosters_as_json,
    rosters_from_members,
    rosters_from_memberships,
)
from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.desired.git import load_definitions
from nthlayer_pipelines.resources.ledger import Ledger, LedgerError
from nthlayer_pipelines.resources.ledger.schema import plan_blast_radius, plan_changes, plans
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from nthlayer_pipelines.resources.pagerduty.observed import (
    ObservedState,
    memberships_frame,
    teams_frame,
    users_frame,
)
from nthlayer_pipelines.sandbox import DEFAULT_PAGERDUTY_TOKEN, RequestContext, RunningSandbox
from tests.reliability import Reliability
from tests.support import EXAMPLE_DEFINITIONS, EXPECTED_EXAMPLE_CHANGES, plan_rows

# The example drift as Git alone declares it (data-platform's member comes from Cortex).
GIT_ONLY_CHANGES = [c for c in EXPECTED_EXAMPLE_CHANGES if c[1] != "data-platform"]
# What the definitions want at apply time, unless a test changes them: the example org, Git alone.
GIT_DESIRED = load_definitions(EXAMPLE_DEFINITIONS)


@pytest.fixture
def client(example_sandbox: RunningSandbox) -> Iterator[PagerDutyClient]:
    with PagerDutyClient(
        example_sandbox.pagerduty_url, DEFAULT_PAGERDUTY_TOKEN, max_attempts=3, sleep=lambda _seconds: None
    ) as pagerduty:
        yield pagerduty


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    store = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield store
    store.dispose()


def observe(client: PagerDutyClient) -> ObservedState:
    teams = client.list_teams()
    return ObservedState(
        users=users_frame([{"user_id": u.id, "email": u.email, "name": u.name} for u in client.list_users()]),
        teams=teams_frame([{"team_id": t.id, "name": t.name, "description": t.description} for t in teams]),
        memberships=memberships_frame(
            [
                {"team_id": m.team_id, "user_id": m.user_id, "role": m.role.value}
                for t in teams
                for m in client.list_team_members(t.id)
            ]
        ),
    )


def plan_and_verdict(client: PagerDutyClient, desired: DesiredState) -> tuple[Plan, BlastRadius]:
    """What the refresh computes, through the same pure functions, read with the same client."""
    observed = observe(client)
    plan = build_plan(compute_divergences(desired, observed), desired)
    return plan, assess_blast_radius(plan, rosters_from_memberships(observed.memberships))


def rosters_now(client: PagerDutyClient) -> dict[str, dict[str, int]]:
    """The teams' rosters as a refresh records them beside its plan."""
    return rosters_as_json(rosters_from_memberships(observe(client).memberships))


def record_git_plan(client: PagerDutyClient, ledger: Ledger) -> Plan:
    plan, verdict = plan_and_verdict(client, load_definitions(EXAMPLE_DEFINITIONS))
    assert plan_rows(plan) == GIT_ONLY_CHANGES
    ledger.record_plan(plan, blast_radius=verdict, basis=rosters_now(client))
    return plan


def writes(sandbox: RunningSandbox) -> list[tuple[str, str, int]]:
    return [
        (r["method"], r["path"], r["status"])
        for r in sandbox.requests(provider="pagerduty")
        if r["method"] != "GET"
    ]


def landed_writes(sandbox: RunningSandbox) -> Counter[tuple[str, str]]:
    """Writes PagerDuty accepted, per (method, path)."""
    return Counter((method, path) for method, path, status in writes(sandbox) if status < 300)


def ids(sandbox: RunningSandbox) -> dict[str, str]:
    pd = sandbox.state.pagerduty
    named = {t: pd.team_by_name(t) for t in ("Payments", "Search", "Data Platform")}
    found = {name: team.id for name, team in named.items() if team is not None}
    for who in ("alice", "bob", "carol", "dave", "heidi", "ivan", "mallory"):
        found[who] = pd.user_by_email(f"{who}@example.com").id
    return found


def git_only_write_paths(sandbox: RunningSandbox) -> set[tuple[str, str]]:
    i = ids(sandbox)
    base = "/pagerduty/teams"
    return {
        ("POST", base),
        ("PUT", f"{base}/{i['Payments']}/users/{i['carol']}"),
        ("PUT", f"{base}/{i['Search']}/users/{i['heidi']}"),
        ("PUT", f"{base}/{i['Search']}/users/{i['ivan']}"),
        ("PUT", f"{base}/{i['Payments']}/users/{i['bob']}"),
        ("DELETE", f"{base}/{i['Payments']}/users/{i['mallory']}"),
    }


def members(sandbox: RunningSandbox, team: str) -> dict[str, str]:
    pd = sandbox.state.pagerduty
    team_id = pd.team_by_name(team).id
    return {pd.users[user_id].email: role for user_id, role in pd.memberships[team_id].items()}


def statuses(report: ApplyReport) -> list[tuple[str, str | None, str]]:
    return [(row.change.kind.value, row.change.email, row.status.value) for row in report.rows]


def no_counts(**counts: int) -> dict[str, int]:
    return {"applied": 0, "skipped": 0, "stale": 0, "blocked": 0, "superseded": 0, "failed": 0, **counts}


# ---- the whole example, planned by the pipeline ----------------------------------------------------


def test_an_approved_plan_is_applied_once_and_converges(pipeline_env, example_sandbox, client) -> None:
    refresh = build_definitions(pipeline_env).resolve_job_def("refresh")
    result = refresh.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    plan: Plan = result.output_for_node("change_plan")
    desired: DesiredState = result.output_for_node("desired_state")  # Git and Cortex
    assert plan_rows(plan) == EXPECTED_EXAMPLE_CHANGES
    ledger = Ledger(pipeline_env["NTHLAYER_LEDGER_URL"])
    approval = ledger.approve(plan.id, approver="alice@example.com", comment="apply the example drift")
    example_sandbox.clear_requests()

    report = apply_approval(desired=desired, ledger=ledger, approval=approval, client=client, run_id="run-1")

    assert report.counts == no_counts(applied=7)
    assert report.succeeded and report.unconverged == ()
    i = ids(example_sandbox)
    expected = git_only_write_paths(example_sandbox) | {
        ("PUT", f"/pagerduty/teams/{i['Data Platform']}/users/{i['heidi']}")
    }
    assert landed_writes(example_sandbox) == Counter(dict.fromkeys(expected, 1))
    assert len(writes(example_sandbox)) == 7, "no write was refused or retried"
    assert report.touched_team_ids == tuple(sorted([i["Payments"], i["Search"], i["Data Platform"]]))
    assert members(example_sandbox, "Payments") == {
        "alice@example.com": "manager",
        "bob@example.com": "responder",
        "carol@example.com": "responder",
        "dave@example.com": "observer",
    }
    assert members(example_sandbox, "Search") == {
        "heidi@example.com": "manager",
        "ivan@example.com": "responder",
    }
    assert report.api_calls == len(example_sandbox.requests(provider="pagerduty"))
    assert sum(row.api_calls for row in report.rows) < report.api_calls, "verification reads come on top"

    outcomes = ledger.outcomes(plan.id)
    assert [(o.change_id, o.status, o.approval_id, o.run_id) for o in outcomes] == [
        (c.id, ChangeStatus.APPLIED, approval.id, "run-1") for c in plan.changes
    ]
    assert all(o.attempts == 1 and o.api_calls >= 1 for o in outcomes)
    table = report.markdown()
    payments = f"payments (Payments, {ids(example_sandbox)['Payments']})"
    assert f"| applied | - {payments}: mallory@example.com (was responder) | remove (responder) |" in table
    assert (
        f"| applied | ~ {payments}: bob@example.com observer -> responder | observer -> responder |" in table
    )

    # A second apply of the same approval writes nothing: the intent log says it is done.
    example_sandbox.clear_requests()
    again = apply_approval(desired=desired, ledger=ledger, approval=approval, client=client, run_id="run-2")
    assert (again.rows, again.already_done, writes(example_sandbox)) == ((), 7, [])

    second = refresh.execute_in_process(instance=dg.DagsterInstance.ephemeral()).output_for_node(
        "change_plan"
    )
    assert second.changes == ()
    ledger.dispose()


# ---- resuming ----------------------------------------------------------------------------------------------


def test_a_failed_write_does_not_stop_the_others_and_a_retry_finishes_it(
    example_sandbox, client, ledger
) -> None:
    plan = record_git_plan(client, ledger)
    failing: dict[str, object] = {"writes": 0, "path": None, "on": True}

    async def third_write_fails(ctx: RequestContext) -> Response | None:
        if ctx.request.method == "GET" or not failing["on"]:
            return None
        if failing["path"] is None:
            failing["writes"] = int(failing["writes"]) + 1
            if failing["writes"] == 3:
                failing["path"] = ctx.request.url.path
        if ctx.request.url.path == failing["path"]:
            return JSONResponse({"error": {"message": "Internal Server Error", "code": 2000}}, 500)
        return None

    example_sandbox.hooks.add_before(third_write_fails, provider="pagerduty")
    approval = ledger.approve(plan.id, approver="alice")
    first = apply_approval(
        desired=GIT_DESIRED, ledger=ledger, approval=approval, client=client, run_id="run-1"
    )

    assert statuses(first) == [
        ("create_team", None, "applied"),
        ("add_member", "carol@example.com", "applied"),
        ("add_member", "heidi@example.com", "failed"),
        ("add_member", "ivan@example.com", "applied"),
        ("set_role", "bob@example.com", "applied"),
        ("remove_member", "mallory@example.com", "applied"),
    ]
    failed = first.rows[2]
    assert "Internal Server Error (after 3 attempts) (HTTP 500, code 2000)" in (failed.error or "")
    assert failed.retries == 2
    assert not first.succeeded and first.counts == no_counts(applied=5, failed=1)

    failing["on"] = False
    retry = ledger.retry(plan.id, approver="alice")
    assert retry.change_ids == (plan.changes[2].id,)
    second = apply_approval(desired=GIT_DESIRED, ledger=ledger, approval=retry, client=client, run_id="run-2")

    assert statuses(second) == [("add_member", "heidi@example.com", "applied")]
    assert second.succeeded and second.already_done == 0
    assert landed_writes(example_sandbox) == Counter(dict.fromkeys(git_only_write_paths(example_sandbox), 1))
    heidi = ledger.outcomes(plan.id)[2]
    assert (heidi.status, heidi.attempts, heidi.approval_id, heidi.error) == ("applied", 2, retry.id, None)
    assert members(example_sandbox, "Search") == {
        "heidi@example.com": "manager",
        "ivan@example.com": "responder",
    }


class DiesAfterWriting(Ledger):
    """A ledger whose process dies right after its `fatal`-th change was written, before logging it."""

    def __init__(self, url: str, fatal: int) -> None:
        super().__init__(url)
        self.fatal, self.seen = fatal, 0

    def record_outcome(self, plan_id: str, change_id: str, **kwargs):
        self.seen += 1
        if self.seen == self.fatal:
            raise SystemExit("killed")
        return super().record_outcome(plan_id, change_id, **kwargs)


def test_a_run_killed_between_write_and_log_resumes_without_writing_twice(
    example_sandbox, client, tmp_path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    dying = DiesAfterWriting(url, fatal=3)
    plan = record_git_plan(client, dying)
    approval = dying.approve(plan.id, approver="alice")
    with pytest.raises(SystemExit):
        apply_approval(desired=GIT_DESIRED, ledger=dying, approval=approval, client=client, run_id="run-1")
    dying.dispose()
    assert len(landed_writes(example_sandbox)) == 3  # search, carol and heidi were written...
    ledger = Ledger(url)
    assert [o.status for o in ledger.outcomes(plan.id)] == [
        "applied",
        "applied",
        "pending",
    ]  # ...heidi's unlogged

    retry = ledger.retry(plan.id, approver="alice")
    assert retry.change_ids == tuple(c.id for c in plan.changes[2:])
    report = apply_approval(desired=GIT_DESIRED, ledger=ledger, approval=retry, client=client, run_id="run-2")

    assert statuses(report) == [
        ("add_member", "heidi@example.com", "skipped"),
        ("add_member", "ivan@example.com", "applied"),
        ("set_role", "bob@example.com", "applied"),
        ("remove_member", "mallory@example.com", "applied"),
    ]
    assert report.rows[0].detail == "already a member as manager"
    assert landed_writes(example_sandbox) == Counter(dict.fromkeys(git_only_write_paths(example_sandbox), 1))
    assert ledger.outcomes(plan.id)[2].attempts == 2
    ledger.dispose()


def test_a_change_written_before_its_log_entry_is_skipped_as_converged(
    example_sandbox, client, ledger
) -> None:
    plan = record_git_plan(client, ledger)
    approval = ledger.approve(plan.id, approver="alice")
    carol = next(c for c in plan.changes if c.email == "carol@example.com")
    ledger.mark_pending(plan.id, approval.id, [carol.id], "run-1")
    client.set_membership(carol.team_id, carol.user_id, Role.RESPONDER)  # the run died here
    example_sandbox.clear_requests()

    report = apply_approval(
        desired=GIT_DESIRED, ledger=ledger, approval=approval, client=client, run_id="run-2"
    )

    assert report.counts == no_counts(applied=5, skipped=1)
    skipped = next(row for row in report.rows if row.change.id == carol.id)
    assert (skipped.status, skipped.detail) == (ChangeStatus.SKIPPED, "already a member as responder")
    i = ids(example_sandbox)
    assert ("PUT", f"/pagerduty/teams/{i['Payments']}/users/{i['carol']}") not in landed_writes(
        example_sandbox
    )
    assert len(writes(example_sandbox)) == 5


# ---- what moved, what is blocked, what was lost ---------------------------------------------------------


def test_a_change_made_under_the_plan_is_stale_and_left_alone(example_sandbox, client, ledger) -> None:
    plan = record_git_plan(client, ledger)
    i = ids(example_sandbox)
    example_sandbox.state.pagerduty.set_membership(i["Payments"], i["bob"], "manager")
    approval = ledger.approve(plan.id, approver="alice")

    report = apply_approval(desired=GIT_DESIRED, ledger=ledger, approval=approval, client=client)

    bob = next(row for row in report.rows if row.change.email == "bob@example.com")
    assert (bob.status, bob.detail) == (
        ChangeStatus.STALE,
        "now a member as manager; the plan expected observer",
    )
    assert report.counts == no_counts(applied=5, stale=1)
    assert report.succeeded
    assert members(example_sandbox, "Payments")["bob@example.com"] == "manager"
    assert ("PUT", f"/pagerduty/teams/{i['Payments']}/users/{i['bob']}") not in landed_writes(example_sandbox)
    assert ledger.outcomes(plan.id)[4].status == ChangeStatus.STALE


def test_a_removal_refused_for_an_escalation_policy_is_blocked_naming_it(
    example_sandbox, client, ledger
) -> None:
    i = ids(example_sandbox)
    policy = example_sandbox.state.pagerduty.add_escalation_policy(
        "Payments Weekend", [i["Payments"]], [i["mallory"]]
    )
    plan = record_git_plan(client, ledger)
    approval = ledger.approve(plan.id, approver="alice")

    report = apply_approval(desired=GIT_DESIRED, ledger=ledger, approval=approval, client=client)

    mallory = report.rows[-1]
    assert mallory.status is ChangeStatus.BLOCKED
    assert mallory.detail == (
        f"mallory@example.com is a target of escalation policy Payments Weekend ({policy.id}): "
        "change the policy by hand, then plan again"
    )
    assert report.counts == no_counts(applied=5, blocked=1)
    assert "mallory@example.com" in members(example_sandbox, "Payments")
    assert example_sandbox.state.pagerduty.escalation_policies[policy.id].target_user_ids == {i["mallory"]}
    assert not [w for w in writes(example_sandbox) if "escalation_policies" in w[1]]
    assert ledger.outcomes(plan.id)[-1].detail == mallory.detail
    with pytest.raises(LedgerError, match="nothing left to retry"):
        ledger.retry(plan.id, approver="alice")  # blocked is for a person, not for a retry


def test_a_create_whose_answer_is_lost_is_found_by_name_not_created_twice(
    example_sandbox, tmp_path, ledger
) -> None:
    async def slow_answer(ctx: RequestContext, response: Response) -> Response:
        await asyncio.sleep(0.6)  # the team is created; its answer comes after the client gave up
        return response

    posts: list[str] = []

    async def count_post(ctx: RequestContext) -> None:
        posts.append(ctx.request.url.path)

    example_sandbox.hooks.add_before(count_post, provider="pagerduty", endpoint="POST /teams")
    example_sandbox.hooks.add_after(slow_answer, provider="pagerduty", endpoint="POST /teams")
    with PagerDutyClient(example_sandbox.pagerduty_url, DEFAULT_PAGERDUTY_TOKEN, timeout=0.3) as client:
        plan = record_git_plan(client, ledger)
        approval = ledger.approve(plan.id, approver="alice")
        report = apply_approval(desired=GIT_DESIRED, ledger=ledger, approval=approval, client=client)

    create = report.rows[0]
    search_id = example_sandbox.state.pagerduty.team_by_name("Search").id
    assert (create.status, create.detail) == (
        ChangeStatus.APPLIED,
        f"created {search_id} (the answer was lost; found by name)",
    )
    assert report.counts == no_counts(applied=6)
    assert posts == ["/pagerduty/teams"], "one POST, never a second after the lost answer"
    assert [t.name for t in example_sandbox.state.pagerduty.teams_by_name].count("Search") == 1


# ---- verification after apply --------------------------------------------------------------------------


def lagging_reads(sandbox: RunningSandbox, stale_reads: int) -> None:
    """After each write, the next `stale_reads` member listings answer as if nobody were on the team."""
    lag = {"left": 0}

    async def arm(ctx: RequestContext) -> Response | None:
        if ctx.request.method != "GET":
            lag["left"] = stale_reads
        return None

    async def stale(ctx: RequestContext) -> Response | None:
        if lag["left"] <= 0:
            return None
        lag["left"] -= 1
        return JSONResponse({"members": [], "limit": 100, "offset": 0, "more": False, "total": None})

    sandbox.hooks.add_before(arm, provider="pagerduty")
    sandbox.hooks.add_before(stale, provider="pagerduty", endpoint="GET /teams/{id}/members")


def only_carol(client: PagerDutyClient, ledger: Ledger) -> Plan:
    current = Team(
        name="payments",
        display_name="Payments",
        prune=False,
        members=(
            Member(email="alice@example.com", role=Role.MANAGER),
            Member(email="bob@example.com", role=Role.OBSERVER),
            Member(email="carol@example.com", role=Role.RESPONDER),
            Member(email="dave@example.com", role=Role.OBSERVER),
        ),
    )
    plan, verdict = plan_and_verdict(client, DesiredState(teams=(current,)))
    assert plan_rows(plan) == [("add_member", "payments", "carol@example.com", "responder", None)]
    ledger.record_plan(plan, blast_radius=verdict)
    return plan


def test_verification_waits_out_read_after_write_lag(example_sandbox, client, ledger) -> None:
    plan = only_carol(client, ledger)
    lagging_reads(example_sandbox, stale_reads=2)
    slept: list[float] = []
    approval = ledger.approve(plan.id, approver="alice")

    report = apply_approval(
        desired=GIT_DESIRED,
        ledger=ledger,
        approval=approval,
        client=client,
        verify_delay_seconds=0.25,
        sleep=slept.append,
    )

    assert report.counts == no_counts(applied=1)
    assert (report.unconverged, report.succeeded, slept) == ((), True, [0.25, 0.25])


def test_what_never_shows_after_apply_is_reported_unconverged(example_sandbox, client, ledger) -> None:
    plan = only_carol(client, ledger)
    lagging_reads(example_sandbox, stale_reads=10)
    approval = ledger.approve(plan.id, approver="alice")

    report = apply_approval(
        desired=GIT_DESIRED,
        ledger=ledger,
        approval=approval,
        client=client,
        verify_attempts=3,
        sleep=lambda _seconds: None,
    )

    carol = plan.changes[0]
    assert report.unconverged == (
        f"{carol.id} + payments (Payments, {carol.team_id}): carol@example.com as responder: "
        "found no membership",
    )
    assert not report.succeeded
    assert "Not converged after apply:" in report.markdown()


# ---- refusals ------------------------------------------------------------------------------------------


# Payments declared with alice alone: most of the team would go.
ALICE_ONLY = DesiredState(
    teams=(
        Team(
            name="payments",
            display_name="Payments",
            prune=True,
            members=(Member(email="alice@example.com", role=Role.MANAGER),),
        ),
    )
)


def removes_most_of_payments(client: PagerDutyClient) -> tuple[Plan, BlastRadius]:
    return plan_and_verdict(client, ALICE_ONLY)


def test_a_mass_removal_needs_allow_blast_radius_to_be_approved(example_sandbox, client, ledger) -> None:
    plan, verdict = removes_most_of_payments(client)
    payments = plan.changes[0].team_id
    assert verdict == BlastRadius(True, (f"payments ({payments}): 3 of 4 members removed (75 % > 20 %)",), 3)
    ledger.record_plan(plan, blast_radius=verdict, basis=rosters_now(client))
    with pytest.raises(LedgerError, match="allow_blast_radius: true"):
        ledger.approve(plan.id, approver="alice")
    approval = ledger.approve(plan.id, approver="alice", allow_blast_radius=True, comment="team disbanded")

    report = apply_approval(desired=ALICE_ONLY, ledger=ledger, approval=approval, client=client)

    # Dave is a target of "Payments On-Call": PagerDuty keeps him, and so do we.
    assert statuses(report) == [
        ("remove_member", "bob@example.com", "applied"),
        ("remove_member", "dave@example.com", "blocked"),
        ("remove_member", "mallory@example.com", "applied"),
    ]
    assert "Payments On-Call" in report.rows[1].detail
    assert members(example_sandbox, "Payments") == {
        "alice@example.com": "manager",
        "dave@example.com": "observer",
    }


def test_apply_refuses_an_approval_that_does_not_allow_a_blast_radius_exceeded_since(
    example_sandbox, client, ledger
) -> None:
    plan, verdict = removes_most_of_payments(client)
    ledger.record_plan(plan, blast_radius=BlastRadius(False, (), 3))  # judged before the team shrank
    approval = ledger.approve(plan.id, approver="alice")
    ledger.record_plan(plan, blast_radius=verdict)
    example_sandbox.clear_requests()

    with pytest.raises(ApplyRefused) as refused:
        apply_approval(desired=ALICE_ONLY, ledger=ledger, approval=approval, client=client)

    assert str(refused.value) == (
        f"plan {plan.id} exceeds the blast radius "
        f"(payments ({plan.changes[0].team_id}): 3 of 4 members removed (75 % > 20 %)) and "
        f"approval {approval.id} does not say `allow_blast_radius: true`: nothing was written"
    )
    # Judged on the team as PagerDuty holds it: one read of its members, and no write.
    assert [(r["method"], r["endpoint"]) for r in example_sandbox.requests(provider="pagerduty")] == [
        ("GET", "GET /teams/{id}/members")
    ]
    assert ledger.outcomes(plan.id) == []


def test_apply_judges_the_blast_radius_itself_when_the_ledger_rows_behind_it_are_gone(
    example_sandbox, client, ledger, reliability: Reliability
) -> None:
    plan, verdict = removes_most_of_payments(client)
    rosters = rosters_from_members({plan.changes[0].team_id: {"a": Role.MANAGER, "b": Role.OBSERVER}})
    ledger.record_plan(plan, blast_radius=verdict, basis=rosters_as_json(rosters))
    with pytest.raises(LedgerError, match="allow_blast_radius: true"):
        ledger.approve(plan.id, approver="alice")
    # Someone with the database's password deletes the verdict and the rosters it was judged on...
    with ledger.engine.begin() as conn:
        conn.execute(plan_blast_radius.delete())
        conn.execute(plans.update().values(basis=None))
    approval = ledger.approve(plan.id, approver="alice")  # ... so the approval no longer knows
    example_sandbox.clear_requests()

    with pytest.raises(ApplyRefused, match="3 of 4 members removed"):
        apply_approval(desired=ALICE_ONLY, ledger=ledger, approval=approval, client=client)

    written = [r for r in example_sandbox.requests(provider="pagerduty") if r["method"] != "GET"]
    assert written == []
    assert len(members(example_sandbox, "Payments")) == 4
    reliability.count("approval bound to what was reviewed", verdict_rows_deleted=1, writes=len(written))


def test_apply_refuses_a_rejected_plan_and_an_approval_the_ledger_does_not_know(
    example_sandbox, client, ledger
) -> None:
    plan = record_git_plan(client, ledger)
    approval = ledger.approve(plan.id, approver="alice")
    rejection = ledger.reject(plan.id, approver="bob")
    with pytest.raises(ApplyRefused, match=f"plan {plan.id} was rejected by bob \\({rejection.id}\\)"):
        apply_approval(desired=GIT_DESIRED, ledger=ledger, approval=approval, client=client)
    with pytest.raises(ApplyRefused, match="is a rejected decision, not an approval"):
        apply_approval(desired=GIT_DESIRED, ledger=ledger, approval=rejection, client=client)
    # An approval is what the ledger recorded, not an object someone built.
    with pytest.raises(ApplyRefused, match="apr-forged00000 is not in the ledger"):
        apply_approval(
            desired=GIT_DESIRED,
            ledger=ledger,
            approval=replace(approval, id="apr-forged00000"),
            client=client,
        )
    assert writes(example_sandbox) == []


# ---- what is still wanted, and what was approved -----------------------------------------------------


def test_an_approved_change_the_definitions_no_longer_want_is_superseded_and_written_nowhere(
    example_sandbox, client, ledger, reliability: Reliability
) -> None:
    plan = record_git_plan(client, ledger)
    approval = ledger.approve(plan.id, approver="alice", comment="all of it")
    # Then Git is reverted: mallory is declared again and bob's role change is withdrawn.
    payments = GIT_DESIRED.team("payments")
    assert payments is not None
    reverted = payments.model_copy(
        update={
            "members": (
                *(m for m in payments.members if m.email != "bob@example.com"),
                Member(email="bob@example.com", role=Role.OBSERVER),
                Member(email="mallory@example.com", role=Role.RESPONDER),
            )
        }
    )
    now = DesiredState(teams=tuple(reverted if t.name == "payments" else t for t in GIT_DESIRED.teams))
    example_sandbox.clear_requests()

    report = apply_approval(desired=now, ledger=ledger, approval=approval, client=client)

    by_email = {row.change.email: row for row in report.rows}
    assert by_email["mallory@example.com"].status is ChangeStatus.SUPERSEDED
    assert by_email["mallory@example.com"].detail == (
        "the definitions now declare mallory@example.com as responder: not written"
    )
    assert by_email["bob@example.com"].status is ChangeStatus.SUPERSEDED
    assert report.counts == no_counts(applied=4, superseded=2)
    i = ids(example_sandbox)
    assert ("DELETE", f"/pagerduty/teams/{i['Payments']}/users/{i['mallory']}") not in landed_writes(
        example_sandbox
    )
    assert members(example_sandbox, "Payments")["mallory@example.com"] == "responder"
    assert members(example_sandbox, "Payments")["bob@example.com"] == "observer"
    audited = {(o.email, o.status) for o in ledger.audit(team="payments")}
    assert ("mallory@example.com", ChangeStatus.SUPERSEDED) in audited
    assert "2 superseded" in report.markdown()
    reliability.count("stale approval", approved_after_revert=2, written=0)


def test_apply_refuses_an_approval_whose_changes_were_edited_in_the_ledger_since(
    example_sandbox, client, ledger, reliability: Reliability
) -> None:
    plan = record_git_plan(client, ledger)
    approval = ledger.approve(plan.id, approver="alice")
    (add_carol,) = [c for c in plan.changes if c.email == "carol@example.com"]
    # Someone with the database's password points the approved addition at another person.
    mallory = ids(example_sandbox)["mallory"]
    with ledger.engine.begin() as conn:
        conn.execute(
            plan_changes.update()
            .where(plan_changes.c.plan_id == plan.id, plan_changes.c.change_id == add_carol.id)
            .values(body={**add_carol.model_dump(mode="json"), "user_id": mallory, "role": "manager"})
        )
    example_sandbox.clear_requests()

    with pytest.raises(ApplyRefused, match="digest differs") as refused:
        apply_approval(desired=GIT_DESIRED, ledger=ledger, approval=approval, client=client)

    assert "nothing was written" in str(refused.value)
    assert writes(example_sandbox) == []
    assert ledger.outcomes(plan.id) == []
    reliability.count(
        "approval bound to what was reviewed", rows_edited=1, writes=len(writes(example_sandbox))
    )
