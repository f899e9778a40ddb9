"""An account past PagerDuty's 10,000 listing limit, over loopback: its users are read through the teams'
members (`include[]=users`), the desired emails on no team are looked up by email, and the incremental
refresh keeps to that read. A scripted server answers what the sandbox, like PagerDuty, never does (two
users with one email)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from nthlayer_pipelines.assets.pagerduty.snapshot import pagerduty_snapshot, read_full, refresh_pagerduty
from nthlayer_pipelines.assets.pagerduty.teams.compare import compute_divergences
from nthlayer_pipelines.assets.pagerduty.teams.lookups import looked_up_or_refused, with_looked_up_users
from nthlayer_pipelines.core.model import DesiredState, DivergenceKind, Member, Role, Team
from nthlayer_pipelines.resources.ledger import Ledger, LedgerResource
from nthlayer_pipelines.resources.pagerduty.client import (
    OFFSET_LIMIT,
    AmbiguousUserError,
    PagerDutyClient,
)
from nthlayer_pipelines.resources.pagerduty.incremental import PROVIDER, RefreshMode, RefreshPolicy
from nthlayer_pipelines.resources.pagerduty.observed import (
    USERS_LISTING,
    USERS_TEAM_MEMBERS,
    ObservedState,
    mark_users_read,
    memberships_frame,
    teams_frame,
    users_frame,
    users_read_of,
)
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.sandbox import RunningSandbox, SandboxOrg, generate_org, running_sandbox
from tests.scripted_server import Reply, ScriptedServer
from tests.support import assert_same_snapshot

TOKEN = "pd-large-secret-5e2c"
USERS = 20_500
TEAMS = 100
MEMBERS = 150  # 15,000 seats for 20,500 users: about half of them on some team, the rest on none


def large_org() -> SandboxOrg:
    return generate_org(TEAMS, MEMBERS, users=USERS, seed=3)


def open_client(sandbox: RunningSandbox, **options: Any) -> PagerDutyClient:
    options = {"backoff_base_seconds": 0.001, "max_backoff_seconds": 2.0, "max_concurrency": 8, **options}
    return PagerDutyClient(sandbox.pagerduty_url, TOKEN, **options)


def members_as_the_account_holds_them(org: SandboxOrg) -> ObservedState:
    """The account's teams, their members, and the users on at least one team, from the org itself."""
    pd_org = org.pagerduty
    on_teams = {u for members in pd_org.memberships.values() for u in members}
    users = [pd_org.users[u] for u in sorted(on_teams)]
    return ObservedState(
        users=users_frame([{"user_id": u.id, "email": u.email, "name": u.name} for u in users]),
        teams=teams_frame(
            [{"team_id": t.id, "name": t.name, "description": t.description} for t in pd_org.teams.values()]
        ),
        memberships=memberships_frame(
            [
                {"team_id": team_id, "user_id": user_id, "role": role}
                for team_id, members in pd_org.memberships.items()
                for user_id, role in members.items()
            ]
        ),
    )


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    """One large account for the tests that only read it."""
    with running_sandbox(large_org(), tokens={"pagerduty": TOKEN}) as running:
        yield running


def user_gets(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests("pagerduty") if r["endpoint"] == "GET /users"]


def test_a_20000_user_account_is_read_through_its_teams_and_holds_exactly_their_members(
    sandbox: RunningSandbox,
) -> None:
    sandbox.clear_requests()
    with open_client(sandbox) as client:
        state, calls, minimum, subdomains, users_read, account_users = read_full(client)
    expected = members_as_the_account_holds_them(sandbox.state)
    assert_same_snapshot(state, expected)
    # More users than any listing reaches, and not the account's users on no team.
    assert OFFSET_LIMIT < len(state.users) < USERS
    assert (users_read, account_users, users_read_of(state.users)) == (USERS_TEAM_MEMBERS, USERS, users_read)
    # The users listing is asked once, for its total; nothing past its first page, no 400 at the wall.
    listed = user_gets(sandbox)
    assert [(r["query"]["offset"], r["query"]["total"], r["status"]) for r in listed] == [
        (["0"], ["true"], 200)
    ]
    # Every members page asked for the users with it, and the read cost its minimum, table by table.
    members = [r for r in sandbox.requests("pagerduty") if r["endpoint"] == "GET /teams/{id}/members"]
    assert {tuple(r["query"]["include[]"]) for r in members} == {("users",)}
    assert (
        calls
        == minimum
        == {
            "pagerduty_users": 1,
            "pagerduty_teams": 1,
            "pagerduty_memberships": TEAMS * 2,  # 150 members: two pages of 100 each
        }
    )
    assert len(subdomains) == 1


def test_the_snapshot_assets_say_how_their_users_were_read_at_the_calls_minimum(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    pagerduty = PagerDutyResource(
        api_url=sandbox.pagerduty_url, api_token=TOKEN, max_concurrency=8, rate_limit=60_000
    )
    ledger = LedgerResource(url=f"sqlite:///{tmp_path / 'ledger.db'}")
    result = dg.materialize([pagerduty_snapshot], resources={"pagerduty": pagerduty, "ledger": ledger})
    assert result.success
    metadata = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    for name in ("pagerduty_users", "pagerduty_teams", "pagerduty_memberships"):
        assert metadata[name]["users_read"].value == USERS_TEAM_MEMBERS
        assert metadata[name]["account_users"].value == USERS
        assert metadata[name]["api_calls"].value == metadata[name]["api_calls_minimum"].value
    users = result.output_for_node("pagerduty_snapshot", "pagerduty_users")
    assert users_read_of(users) == USERS_TEAM_MEMBERS
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert all(checks.values())


def test_an_email_on_no_team_is_found_by_lookup_and_one_nobody_has_stays_unresolved(
    sandbox: RunningSandbox,
) -> None:
    org = sandbox.state.pagerduty
    with open_client(sandbox) as client:
        snapshot = read_full(client).state
    on_teams = set(snapshot.users["user_id"])
    outsider = next(u for u in org.users_by_name if u.id not in on_teams)
    team_id = sorted(org.teams)[0]
    manager = next(u for u, role in org.memberships[team_id].items() if role == "manager")
    desired = DesiredState(
        teams=(
            Team(
                name="payments",
                display_name=org.teams[team_id].name,
                members=(
                    Member(email=org.users[manager].email, role=Role.MANAGER),
                    Member(email=outsider.email.upper(), role=Role.RESPONDER),
                    Member(email="nobody.at.all@example.com", role=Role.RESPONDER),
                ),
            ),
        )
    )
    sandbox.clear_requests()
    lookups = with_looked_up_users(lambda: open_client(sandbox), desired, snapshot.users)
    assert (lookups.looked_up, lookups.found, lookups.api_calls) == (2, 1, 2)
    assert lookups.users_read == f"{USERS_TEAM_MEMBERS} + 2 lookups"
    assert sorted(r["query"]["query"][0] for r in user_gets(sandbox)) == [
        outsider.email,
        "nobody.at.all@example.com",
    ]
    observed = ObservedState(users=lookups.users, teams=snapshot.teams, memberships=snapshot.memberships)
    found = compute_divergences(desired, observed)
    kinds = sorted((str(row.kind), str(row.email)) for row in found.itertuples() if row.email is not pd.NA)
    assert kinds == [
        (DivergenceKind.MISSING_MEMBER.value, outsider.email),  # found, so to be added
        (DivergenceKind.UNRESOLVED_USER.value, "nobody.at.all@example.com"),  # the finding as before
    ]


def test_a_listing_snapshot_looks_nothing_up() -> None:
    org = generate_org(3, 2, users=30, seed=4)
    with running_sandbox(org, tokens={"pagerduty": TOKEN}) as sandbox:
        with open_client(sandbox) as client:
            snapshot = read_full(client).state
        desired = DesiredState(
            teams=(
                Team(
                    name="x", display_name="X", members=(Member(email="ghost@example.com", role="responder"),)
                ),
            )
        )
        sandbox.clear_requests()
        lookups = with_looked_up_users(lambda: open_client(sandbox), desired, snapshot.users)
        assert sandbox.requests("pagerduty") == []
    assert users_read_of(snapshot.users) == USERS_LISTING == lookups.users_read
    assert lookups.looked_up == 0


def test_a_query_that_matches_only_part_of_an_email_is_not_taken_for_the_user() -> None:
    org = SandboxOrg(seed=2)
    joann = org.pagerduty.add_user("Jo Ann", "joann@example.com").id
    annie = org.pagerduty.add_user("Ann Example", "ann@example.com.au").id
    with running_sandbox(org, tokens={"pagerduty": TOKEN}) as sandbox, open_client(sandbox) as client:
        # PagerDuty's query finds both for "ann@example.com": neither is that address.
        assert client.find_user_by_email("ann@example.com") is None
        assert client.find_user_by_email("JoAnn@Example.com").id == joann  # type: ignore[union-attr]
        assert client.find_user_by_email("ann@example.com.au").id == annie  # type: ignore[union-attr]
        queried = [r["query"]["query"] for r in user_gets(sandbox)]
    assert queried == [["ann@example.com"], ["joann@example.com"], ["ann@example.com.au"]]


def user(user_id: str, name: str, email: str) -> dict[str, Any]:
    return {"id": user_id, "type": "user", "name": name, "email": email}


def test_two_users_with_one_email_are_refused_with_both_named() -> None:
    body = {
        "users": [
            user("PU1", "Ann One", "ann@example.com"),
            user("PU2", "Ann Two", "ANN@example.com"),
            user("PU3", "Joann", "joann@example.com"),
        ],
        "limit": 100,
        "offset": 0,
        "more": False,
        "total": None,
    }
    with (
        ScriptedServer(Reply(200, body)) as server,
        PagerDutyClient(server.url, TOKEN, backoff_base_seconds=0.001) as client,
        pytest.raises(AmbiguousUserError) as refused,
    ):
        client.find_users_by_email(["ann@example.com"])
    assert str(refused.value) == (
        "PagerDuty GET /users: 2 users have the email 'ann@example.com': PU1 (Ann One), PU2 (Ann Two)"
    )
    # The compare's assets refuse to plan from it, and say why.
    ann = Member(email="ann@example.com", role=Role.MANAGER)
    desired = DesiredState(teams=(Team(name="x", display_name="X", members=(ann,)),))
    seen = mark_users_read(users_frame(), USERS_TEAM_MEMBERS, 20_000)
    with ScriptedServer(Reply(200, body)) as server, pytest.raises(dg.Failure) as failed:
        looked_up_or_refused(PagerDutyResource(api_url=server.url, api_token=TOKEN), desired, seen)
    assert failed.value.description == (
        "desired emails that name more than one PagerDuty user: PagerDuty GET /users: 2 users have the "
        "email 'ann@example.com': PU1 (Ann One), PU2 (Ann Two)"
    )


def test_the_incremental_refresh_of_a_large_account_reads_only_what_changed(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    policy = RefreshPolicy()
    with running_sandbox(large_org(), tokens={"pagerduty": TOKEN}) as sandbox, open_client(sandbox) as client:
        first = refresh_pagerduty(client, ledger, api_token=TOKEN, policy=policy)
        assert first.decision.mode is RefreshMode.FULL and first.users_read == USERS_TEAM_MEMBERS
        stored = ledger.stored_snapshot(PROVIDER)
        assert stored is not None and stored.account is not None
        assert (stored.account.users_read, stored.account.users) == (USERS_TEAM_MEMBERS, USERS)

        org = sandbox.state.pagerduty
        snapshot_ids = set(first.state.users["user_id"])
        team_id = sorted(org.teams)[1]
        newcomer = next(u.id for u in org.users_by_name if u.id not in snapshot_ids)
        renamed = next(u for u in org.memberships[team_id] if u in snapshot_ids)
        org.set_membership(team_id, newcomer, "responder")  # a person, in the web UI
        org.update_user(renamed, name="Renamed Person")
        sandbox.clear_requests()
        second = refresh_pagerduty(client, ledger, api_token=TOKEN, policy=policy)
        calls = [(r["endpoint"], r["query"].get("offset")) for r in sandbox.requests("pagerduty")]
        assert second.decision.mode is RefreshMode.INCREMENTAL, second.decision.reason
        assert second.users_read == USERS_TEAM_MEMBERS
        # No users listing past the probe's one row: the wall is never reached.
        assert [offset for endpoint, offset in calls if endpoint == "GET /users"] == [["0"]]
        assert len(calls) < 10, calls
        expected = members_as_the_account_holds_them(sandbox.state)
    assert_same_snapshot(second.state, expected)
    users = second.state.users.set_index("user_id")
    assert users.loc[renamed, "name"] == "Renamed Person"
    assert newcomer in users.index
    assert isinstance(users, pd.DataFrame)


def test_more_user_changes_than_are_read_one_by_one_read_everything_through_the_teams(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    policy = RefreshPolicy(max_user_reads=1)  # two renamed users are more than are read one by one
    with running_sandbox(large_org(), tokens={"pagerduty": TOKEN}) as sandbox, open_client(sandbox) as client:
        first = refresh_pagerduty(client, ledger, api_token=TOKEN, policy=policy)
        org = sandbox.state.pagerduty
        renamed = sorted(first.state.users["user_id"])[:2]
        for user_id in renamed:
            org.update_user(user_id, name=f"Renamed {user_id}")
        sandbox.clear_requests()
        second = refresh_pagerduty(client, ledger, api_token=TOKEN, policy=policy)
        offsets = [r["query"].get("offset") for r in user_gets(sandbox)]
        expected = members_as_the_account_holds_them(sandbox.state)
    assert second.decision.mode is RefreshMode.FULL
    assert "cannot be listed in full" in second.decision.reason
    assert second.users_read == USERS_TEAM_MEMBERS
    # The probe's row and the full read's first page: never the listing's later pages, never its wall.
    assert offsets == [["0"], ["0"]]
    assert_same_snapshot(second.state, expected)
