"""Incremental refresh over loopback: a 200-team org, a full snapshot, changes through the API and the UI,
then a read of the audit records and of what they name, against a fresh full snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nthlayer_pipelines.core.model import Role
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.pagerduty.audit import AuditRecordsUnavailableError, incremental_snapshot
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from nthlayer_pipelines.resources.pagerduty.incremental import (
    PROVIDER,
    RefreshMode,
    choose_refresh,
    cursor_after_full,
    token_suffix,
)
from nthlayer_pipelines.resources.pagerduty.observed import (
    ObservedState,
    memberships_frame,
    teams_frame,
    users_frame,
)
from nthlayer_pipelines.sandbox import RunningSandbox, generate_org, running_sandbox
from tests.support import assert_same_snapshot

TOKEN = "nthlayer-sandbox-key-4b1d"
TEAMS = 200


def full_snapshot(client: PagerDutyClient) -> ObservedState:
    """Every user, every team, each team's members once: what the observed assets read."""
    users = client.list_users()
    teams = client.list_teams()
    members = [
        {"team_id": m.team_id, "user_id": m.user_id, "role": m.role.value}
        for team in teams
        for m in client.list_team_members(team.id)
    ]
    return ObservedState(
        users=users_frame([{"user_id": u.id, "email": u.email, "name": u.name} for u in users]),
        teams=teams_frame([{"team_id": t.id, "name": t.name, "description": t.description} for t in teams]),
        memberships=memberships_frame(members),
    )


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(generate_org(TEAMS, 10, seed=5), tokens={"pagerduty": TOKEN}) as running:
        yield running


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[PagerDutyClient]:
    with PagerDutyClient(sandbox.pagerduty_url, TOKEN, backoff_base_seconds=0.001) as pagerduty:
        yield pagerduty


def make_ten_changes(sandbox: RunningSandbox, client: PagerDutyClient) -> None:
    """Five members added, three roles changed and two members removed, with our token."""
    org = sandbox.state.pagerduty
    teams = sorted(org.teams)
    outsiders = iter(sorted(set(org.users) - {u for t in teams[:5] for u in org.memberships[t]}))
    for team in teams[:5]:
        client.set_membership(team, next(outsiders), Role.RESPONDER)
    for team in teams[4:7]:
        responder = next(u for u, role in org.memberships[team].items() if role == "responder")
        client.set_membership(team, responder, Role.MANAGER)
    for team in teams[7:9]:
        targets = {
            u
            for policy in org.policies_of_team(team)
            for u in org.escalation_policies[policy].target_user_ids
        }
        client.remove_membership(team, next(u for u in org.memberships[team] if u not in targets))


def test_an_incremental_read_costs_under_2_percent_of_a_full_one_and_ends_in_the_same_snapshot(
    sandbox: RunningSandbox, client: PagerDutyClient, tmp_path: Path
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    started = datetime.now(UTC)
    sandbox.clear_requests()
    previous = full_snapshot(client)
    full_calls = len(sandbox.requests("pagerduty"))
    assert full_calls == 8 + 2 + TEAMS  # 800 users and 200 teams in pages of 100, a request per team
    ledger.save_refresh_cursor(cursor_after_full(PROVIDER, started))

    make_ten_changes(sandbox, client)
    org = sandbox.state.pagerduty
    ui_team = sorted(org.teams)[20]
    observer = next(u for u, role in org.memberships[ui_team].items() if role == "observer")
    org.set_membership(ui_team, observer, "responder")  # a person, in the web UI

    cursor = ledger.refresh_cursor(PROVIDER)
    assert cursor is not None
    decision = choose_refresh(cursor, now=datetime.now(UTC))
    assert decision.mode is RefreshMode.INCREMENTAL
    sandbox.clear_requests()
    result = incremental_snapshot(client, previous, cursor, own_token_suffixes=[token_suffix(TOKEN)])
    incremental_calls = [(r["method"], r["endpoint"]) for r in sandbox.requests("pagerduty")]

    assert incremental_calls == [("GET", "GET /audit/records")], "the records state every outcome"
    assert len(incremental_calls) <= 0.02 * full_calls
    assert result.api_calls == len(incremental_calls)
    plan = result.plan
    assert len(plan.membership_changes) == 11, "ten members changed through the API and one in the UI"
    assert len(plan.foreign_record_ids) == 1, "only the UI change is drift"
    assert plan.foreign_team_ids == {ui_team}
    assert len(plan.own_record_ids) == 2 * 5 + 3 + 2
    assert (plan.relist_teams, plan.team_member_reads, plan.user_reads) == (False, frozenset(), frozenset())

    sandbox.clear_requests()
    assert_same_snapshot(result.state, full_snapshot(client))

    ledger.save_refresh_cursor(result.cursor)
    again = ledger.refresh_cursor(PROVIDER)
    assert again == result.cursor
    sandbox.clear_requests()
    quiet = incremental_snapshot(client, result.state, again, own_token_suffixes=[token_suffix(TOKEN)])
    assert quiet.records == result.records, "the records near the cursor are read again ..."
    assert quiet.plan.changes_nothing is True, "... and skipped, because they were applied"
    assert len(sandbox.requests("pagerduty")) == 1
    assert_same_snapshot(quiet.state, result.state)
    ledger.dispose()


def test_created_renamed_and_deleted_teams_and_users_are_read_again(
    sandbox: RunningSandbox, client: PagerDutyClient
) -> None:
    started = datetime.now(UTC)
    previous = full_snapshot(client)
    org = sandbox.state.pagerduty
    teams = sorted(org.teams)
    created = client.create_team("Incident Review", "created by nthlayer")
    newcomer = org.add_user("Nina Newcomer", "nina@example.com")  # in the web UI
    client.set_membership(created.id, newcomer.id, Role.MANAGER)
    org.update_team(teams[0], name="Renamed In The UI")
    org.remove_team(teams[1])
    leaver = next(u for u in org.memberships[teams[2]] if not org.policies_targeting(u))
    org.update_user(leaver, name="Lee Leaver")
    sandbox.clear_requests()

    result = incremental_snapshot(client, previous, cursor_after_full(PROVIDER, started))
    assert [(r["endpoint"], r["path"].rsplit("/", 1)[-1]) for r in sandbox.requests("pagerduty")] == [
        ("GET /audit/records", "records"),
        ("GET /teams", "teams"),  # 200 teams again: one created, one deleted
        ("GET /teams", "teams"),
        *(("GET /users/{id}", user) for user in sorted([leaver, newcomer.id])),
        ("GET /teams/{id}/members", "members"),
    ]
    assert result.plan.team_member_reads == {created.id}
    assert result.plan.deleted_team_ids == {teams[1]}
    assert_same_snapshot(result.state, full_snapshot(client))


def test_a_plan_without_audit_trail_falls_back_to_a_full_snapshot() -> None:
    with (
        running_sandbox(
            generate_org(3, 4, seed=2), tokens={"pagerduty": TOKEN}, audit_records="payment_required"
        ) as sandbox,
        PagerDutyClient(sandbox.pagerduty_url, TOKEN) as client,
    ):
        started = datetime.now(UTC)
        previous = full_snapshot(client)
        cursor = cursor_after_full(PROVIDER, started)
        with pytest.raises(AuditRecordsUnavailableError) as refused:
            incremental_snapshot(client, previous, cursor)
        assert refused.value.status == 402
        decision = choose_refresh(cursor, now=datetime.now(UTC), audit_refused=refused.value.status)
        assert (decision.mode, decision.reason) == (
            RefreshMode.FULL,
            "PagerDuty answered 402: the account's plan lacks Audit Trail",
        )
