"""The observed assets over loopback: a full refresh first, then incremental ones that read the audit
records and what they name, and a full one again whenever an incremental read cannot be trusted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from nthlayer_pipelines.assets.pagerduty.snapshot import TABLES, pagerduty_snapshot, read_full
from nthlayer_pipelines.core.model import Role
from nthlayer_pipelines.resources.ledger import Ledger, LedgerResource
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from nthlayer_pipelines.resources.pagerduty.incremental import PROVIDER, cursor_after_full
from nthlayer_pipelines.resources.pagerduty.observed import ObservedState
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.sandbox import RunningSandbox, SandboxOrg, generate_org, running_sandbox
from tests.support import assert_same_snapshot

TOKEN = "nthlayer-assets-key-7e2a"
TEAMS = 150


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(generate_org(TEAMS, 8, seed=21), tokens={"pagerduty": TOKEN}) as running:
        yield running


def refresh(
    sandbox: RunningSandbox, ledger_url: str, tags: dict[str, str] | None = None, **config: Any
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [pagerduty_snapshot],
        resources={
            "pagerduty": PagerDutyResource(api_url=sandbox.pagerduty_url, api_token=TOKEN, **config),
            "ledger": LedgerResource(url=ledger_url),
        },
        tags=tags,
    )


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def outputs(result: dg.ExecuteInProcessResult) -> ObservedState:
    users, teams, memberships = (result.output_for_node("pagerduty_snapshot", table) for table in TABLES)
    return ObservedState(users=users, teams=teams, memberships=memberships)


def removable_member(org: SandboxOrg, team_id: str) -> str:
    """A member of the team that none of its escalation policies targets (PagerDuty refuses those)."""
    pd_org = org.pagerduty
    targets = {
        u for p in pd_org.policies_of_team(team_id) for u in pd_org.escalation_policies[p].target_user_ids
    }
    return next(u for u in pd_org.memberships[team_id] if u not in targets)


def fresh_full_snapshot(sandbox: RunningSandbox) -> ObservedState:
    with PagerDutyClient(sandbox.pagerduty_url, TOKEN) as client:
        return read_full(client)[0]


def test_a_change_after_a_full_refresh_shows_up_after_an_incremental_one_for_a_few_calls(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    first = refresh(sandbox, ledger_url)
    full = metadata(first)["pagerduty_memberships"]
    assert (full["refresh"], full["refresh_reason"]) == (
        "full",
        "no refresh cursor yet: the first refresh reads everything",
    )
    assert full["api_calls"] == full["api_calls_minimum"] == TEAMS
    full_calls = sum(m["api_calls"] for m in metadata(first).values())

    org = sandbox.state.pagerduty
    teams = sorted(org.teams)
    outsider = next(u for u in sorted(org.users) if u not in org.memberships[teams[0]])
    with PagerDutyClient(sandbox.pagerduty_url, TOKEN) as client:  # nthlayer's own token: not drift
        client.set_membership(teams[0], outsider, Role.RESPONDER)
    leaver = removable_member(sandbox.state, teams[1])
    org.remove_membership(teams[1], leaver)  # a person, in the web UI: drift

    sandbox.clear_requests()
    second = refresh(sandbox, ledger_url)
    served = sorted((r["endpoint"], r["query"]["limit"]) for r in sandbox.requests("pagerduty"))
    assert served == [
        ("GET /audit/records", ["100"]),  # the records state both outcomes
        ("GET /teams", ["1"]),  # the totals probe: the account and its listing totals
        ("GET /users", ["1"]),
    ]
    incremental = metadata(second)
    for table in TABLES:
        assert incremental[table]["refresh"] == "incremental"
        assert incremental[table]["api_calls"] == len(served)
        assert incremental[table]["probe_api_calls"] == 2
        assert "api_calls_minimum" not in incremental[table]
    members = incremental["pagerduty_memberships"]
    assert members["teams_reread"] == 0
    assert members["drift_records"] == 1
    assert members["own_write_records"] == 2, "adding a member leaves a members and a team_role record"
    assert members["audit_records_read"] == 3
    assert len(served) <= 0.02 * full_calls

    state = outputs(second)
    rows = state.memberships.set_index(["team_id", "user_id"])["role"]
    assert rows[(teams[0], outsider)] == "responder"
    assert (teams[1], leaver) not in rows.index
    assert_same_snapshot(state, fresh_full_snapshot(sandbox))


def test_a_user_created_and_added_in_the_ui_shows_up_without_a_full_listing(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    refresh(sandbox, ledger_url)
    org = sandbox.state.pagerduty
    team = sorted(org.teams)[3]
    created = org.add_user("Nadia New", "nadia.new@example.com")  # a user created in the UI
    org.set_membership(team, created.id, "observer")
    sandbox.clear_requests()
    result = refresh(sandbox, ledger_url)
    listings = [r for r in sandbox.requests("pagerduty") if r["endpoint"] in ("GET /teams", "GET /users")]
    assert [r["query"]["limit"] for r in listings] == [["1"], ["1"]], "no full listing, only the probe"
    assert metadata(result)["pagerduty_users"]["refresh"] == "incremental"
    assert_same_snapshot(outputs(result), fresh_full_snapshot(sandbox))


def test_the_nightly_audit_reads_everything(sandbox: RunningSandbox, ledger_url: str) -> None:
    refresh(sandbox, ledger_url)
    result = refresh(sandbox, ledger_url, tags={"nthlayer/mode": "audit"})
    teams = metadata(result)["pagerduty_teams"]
    assert (teams["refresh"], teams["refresh_reason"]) == (
        "full",
        "the nightly audit always reads everything",
    )


@pytest.mark.parametrize(
    ("audit_records", "reason"),
    [
        ("payment_required", "PagerDuty answered 402: the account's plan lacks Audit Trail"),
        ("forbidden", "PagerDuty answered 403: only an admin's or a global API token may list audit records"),
    ],
)
def test_refused_audit_records_fall_back_to_a_full_snapshot(
    ledger_url: str, audit_records: str, reason: str
) -> None:
    org = generate_org(20, 4, seed=3)
    with running_sandbox(org, tokens={"pagerduty": TOKEN}, audit_records=audit_records) as sandbox:
        refresh(sandbox, ledger_url)
        team = sorted(org.pagerduty.teams)[0]
        org.pagerduty.remove_membership(team, removable_member(org, team))
        result = refresh(sandbox, ledger_url)
        assert_same_snapshot(outputs(result), fresh_full_snapshot(sandbox))
    members = metadata(result)["pagerduty_memberships"]
    assert (members["refresh"], members["refresh_reason"]) == ("full", reason)
    assert members["api_calls"] == members["api_calls_minimum"] == 20
    assert members["probe_api_calls"] == 2, "the totals probe comes before the refused audit records"
    assert members["refresh_api_calls"] == sum(metadata(result)[t]["api_calls"] for t in TABLES) + 2 + 1


def shift_cursor(ledger_url: str, **changes: datetime) -> None:
    ledger = Ledger(ledger_url)
    cursor = ledger.refresh_cursor(PROVIDER)
    assert cursor is not None
    ledger.save_refresh_cursor(replace(cursor, **changes))
    ledger.dispose()


def test_a_cursor_older_than_allowed_falls_back_to_a_full_snapshot(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    refresh(sandbox, ledger_url)
    shift_cursor(ledger_url, cursor_time=datetime.now(UTC) - timedelta(days=8))
    teams = metadata(refresh(sandbox, ledger_url))["pagerduty_teams"]
    assert teams["refresh"] == "full"
    assert teams["refresh_reason"].endswith("old, more than the 7 days allowed")


def test_a_full_refresh_is_due_after_the_configured_period(sandbox: RunningSandbox, ledger_url: str) -> None:
    refresh(sandbox, ledger_url)
    shift_cursor(ledger_url, last_full_refresh_at=datetime.now(UTC) - timedelta(hours=2))
    within_a_day = metadata(refresh(sandbox, ledger_url))["pagerduty_teams"]
    assert within_a_day["refresh"] == "incremental"
    hourly = metadata(refresh(sandbox, ledger_url, full_refresh_every_hours=1.0))["pagerduty_teams"]
    assert hourly["refresh"] == "full"
    assert hourly["refresh_reason"] == "the last full refresh was 2 h ago; one is due every 1 h"


def test_a_cursor_without_a_stored_snapshot_falls_back_to_a_full_snapshot(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    ledger = Ledger(ledger_url)
    ledger.save_refresh_cursor(cursor_after_full(PROVIDER, datetime.now(UTC)))
    ledger.dispose()
    result = refresh(sandbox, ledger_url)
    users = metadata(result)["pagerduty_users"]
    assert (users["refresh"], users["refresh_reason"]) == ("full", "no stored snapshot to read changes into")
    assert_same_snapshot(outputs(result), fresh_full_snapshot(sandbox))
