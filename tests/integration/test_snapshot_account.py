"""The stored snapshot is trusted only for the account it came from, over loopback through the assets.

Each scenario plants a stored snapshot that the audit records of the account the token reads now cannot
bring up to date: a sandbox started afresh from the same seed on the same URL, a token of another account,
another API URL, a user whose audit record was lost, a row lost from the stored snapshot, a snapshot saved
by a release from before snapshots named their account. Each refresh must read everything and say why,
and its snapshot (and plan) must be what a full read gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from nthlayer_pipelines.assets.pagerduty.snapshot import TABLES, pagerduty_snapshot, read_full
from nthlayer_pipelines.core.model import ChangeKind, Plan
from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.inprocess import plan_in_process
from nthlayer_pipelines.resources.ledger import LedgerResource, upgrade_ledger
from nthlayer_pipelines.resources.ledger.schema import observed_snapshots
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from nthlayer_pipelines.resources.pagerduty.incremental import PROVIDER
from nthlayer_pipelines.resources.pagerduty.observed import ObservedState
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.sandbox import (
    DEFAULT_PAGERDUTY_TOKEN,
    RunningSandbox,
    SandboxOrg,
    generate_org,
    load_seed,
    running_sandbox,
)
from tests.old_release import UNVERSIONED_RELEASE, checkout, run_script
from tests.reliability import Reliability
from tests.support import EXAMPLE_SEED, EXPECTED_EXAMPLE_CHANGES, pipeline_environment, plan_rows

SCENARIO = "snapshot_from_another_account"
TOKEN = "nthlayer-account-key-3f9c"
OTHER_TOKEN = "nthlayer-other-account-key-81d0"
PROBE = [("GET /teams", ["1"]), ("GET /users", ["1"])]  # the totals probe: limit=1 on each listing


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def org() -> SandboxOrg:
    """80 users and 20 teams; another seed gives other ids, names and memberships, but as many of each."""
    return generate_org(20, 4, seed=3)


def refresh(sandbox: RunningSandbox, ledger_url: str, token: str = TOKEN) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [pagerduty_snapshot],
        resources={
            "pagerduty": PagerDutyResource(api_url=sandbox.pagerduty_url, api_token=token),
            "ledger": LedgerResource(url=ledger_url),
        },
    )


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def outputs(result: dg.ExecuteInProcessResult) -> ObservedState:
    users, teams, memberships = (result.output_for_node("pagerduty_snapshot", table) for table in TABLES)
    return ObservedState(users=users, teams=teams, memberships=memberships)


def full_read(sandbox: RunningSandbox, token: str = TOKEN) -> ObservedState:
    with PagerDutyClient(sandbox.pagerduty_url, token) as client:
        return read_full(client)[0]


def same_snapshot(actual: ObservedState, expected: ObservedState) -> bool:
    for frame, keys in (
        ("users", ["user_id"]),
        ("teams", ["team_id"]),
        ("memberships", ["team_id", "user_id"]),
    ):
        got = getattr(actual, frame).sort_values(keys).reset_index(drop=True)
        want = getattr(expected, frame).sort_values(keys).reset_index(drop=True)
        if not got.equals(want):
            return False
    return True


def port_of(sandbox: RunningSandbox) -> int:
    return int(sandbox.url.rsplit(":", 1)[1])


def refresh_of(result: dg.ExecuteInProcessResult) -> tuple[str, str]:
    """The refresh's mode and reason, the same on every table."""
    tables = metadata(result)
    (seen,) = {(tables[t]["refresh"], tables[t]["refresh_reason"]) for t in TABLES}
    return seen


def count(
    reliability: Reliability, result: dg.ExecuteInProcessResult, expected: ObservedState, plans: int = 0
) -> None:
    """One planted mismatch: whether it was read in full, and whether the snapshot left was stale."""
    reliability.count(
        SCENARIO,
        mismatches_planted=1,
        full_reads=int(refresh_of(result)[0] == "full"),
        stale_snapshots=int(not same_snapshot(outputs(result), expected)),
        stale_plans=plans,
    )


def assert_full_read_because(
    result: dg.ExecuteInProcessResult, reason: str, expected: ObservedState, audit_calls: int = 0
) -> None:
    """A full read, for `reason`, of what a full read gives; beside it only the probe's calls and the
    `audit_calls` of an incremental read that was read and then refused."""
    mode, said = refresh_of(result)
    assert mode == "full", said
    assert re.search(reason, said), said
    assert same_snapshot(outputs(result), expected), "the snapshot is what a full read gives"
    members = metadata(result)["pagerduty_memberships"]
    assert members["api_calls"] == members["api_calls_minimum"]
    spent = members["refresh_api_calls"] - sum(metadata(result)[t]["api_calls"] for t in TABLES)
    assert members["probe_api_calls"] == 2
    assert spent == members["probe_api_calls"] + audit_calls


# ---- (1) a sandbox started afresh from the same seed, on the same URL -----------------------------------


def refresh_job(environ: dict[str, str]) -> dg.ExecuteInProcessResult:
    job = build_definitions(environ).resolve_job_def("refresh")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success
    return result


def apply_memberships(plan: Plan, environ: dict[str, str]) -> int:
    """The plan's changes to existing teams' members, with nthlayer's token: users and teams stay as many,
    as in the demo's apply of its additions, role change and removal."""
    applied = 0
    with PagerDutyClient(environ["PAGERDUTY_API_URL"], environ["PAGERDUTY_API_TOKEN"]) as client:
        users = {u.email: u.id for u in client.list_users()}
        for change in plan.changes:
            if change.team_id is None or change.kind is ChangeKind.CREATE_TEAM:
                continue
            if change.kind is ChangeKind.REMOVE_MEMBER:
                client.remove_membership(change.team_id, change.user_id)
            else:
                client.set_membership(change.team_id, users[change.email], change.role.value)
            applied += 1
    return applied


def test_a_sandbox_started_afresh_from_the_same_seed_is_another_account_and_is_read_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    with running_sandbox(load_seed(EXAMPLE_SEED), tokens={"pagerduty": DEFAULT_PAGERDUTY_TOKEN}) as first:
        environ = pipeline_environment(first, tmp_path)
        for name, value in environ.items():  # as Dagster's EnvVar reads them
            monkeypatch.setenv(name, value)
        seeded = refresh_job(environ).output_for_node("change_plan")
        assert plan_rows(seeded) == EXPECTED_EXAMPLE_CHANGES
        assert apply_memberships(seeded, environ) == 4
        applied = refresh_job(environ)
        assert refresh_of(applied)[0] == "incremental"
        left = applied.output_for_node("change_plan")
        assert [c.team for c in left.changes] == ["search"] * 3, "only the team the apply did not create"
        port = port_of(first)
        before = first.state.pagerduty

    # `make demo` again: the same seed, the same port and URL; the ledger of the first start kept.
    with running_sandbox(
        load_seed(EXAMPLE_SEED), port=port, tokens={"pagerduty": DEFAULT_PAGERDUTY_TOKEN}
    ) as second:
        assert second.pagerduty_url == environ["PAGERDUTY_API_URL"]
        after = second.state.pagerduty
        assert (len(after.users), len(after.teams)) == (len(before.users), len(before.teams)), (
            "as many users and teams: the listing totals alone cannot tell the two starts apart"
        )
        result = refresh_job(environ)
        expected = full_read(second, DEFAULT_PAGERDUTY_TOKEN)
        plan = result.output_for_node("change_plan")
        full_plan = plan_in_process({k: v for k, v in environ.items() if k != "NTHLAYER_LEDGER_URL"})
        stale_plans = int(plan.changes != full_plan.changes)
        count(reliability, result, expected, plans=stale_plans)

    assert_full_read_because(
        result,
        rf"^the stored snapshot is from another account \({before.subdomain}\.pagerduty\.com\); the token "
        rf"now reads {after.subdomain}\.pagerduty\.com$",
        expected,
    )
    assert plan_rows(plan) == plan_rows(full_plan) == EXPECTED_EXAMPLE_CHANGES, (
        "the re-seeded drift is planned again, as `nthlayer plan` with an empty ledger plans it"
    )
    assert stale_plans == 0


# ---- (2) a token or an API URL of another account ------------------------------------------------------


def test_a_token_of_another_account_on_the_same_url_is_read_in_full(
    ledger_url: str, reliability: Reliability
) -> None:
    with running_sandbox(org(), tokens={"pagerduty": TOKEN}) as first:
        refresh(first, ledger_url)
        port, subdomain = port_of(first), first.state.pagerduty.subdomain
    other = generate_org(20, 4, seed=4)  # another account of the same size
    with running_sandbox(other, port=port, tokens={"pagerduty": OTHER_TOKEN}) as second:
        other.pagerduty.remove_membership(*next(iter(member_of(other))))  # a change it records
        result = refresh(second, ledger_url, token=OTHER_TOKEN)
        expected = full_read(second, OTHER_TOKEN)
    count(reliability, result, expected)
    assert_full_read_because(
        result,
        rf"^the stored snapshot is from another account \({subdomain}\.pagerduty\.com\); the token now "
        rf"reads {other.pagerduty.subdomain}\.pagerduty\.com$",
        expected,
    )


def member_of(sandbox_org: SandboxOrg) -> Iterator[tuple[str, str]]:
    """(team, user) of members no escalation policy targets."""
    pagerduty = sandbox_org.pagerduty
    for team_id in sorted(pagerduty.teams):
        for user_id in pagerduty.memberships[team_id]:
            if not pagerduty.policies_targeting(user_id):
                yield team_id, user_id


def test_another_api_url_is_read_in_full(ledger_url: str, reliability: Reliability) -> None:
    with (
        running_sandbox(org(), tokens={"pagerduty": TOKEN}) as first,
        running_sandbox(generate_org(20, 4, seed=4), tokens={"pagerduty": TOKEN}) as second,
    ):
        refresh(first, ledger_url)
        result = refresh(second, ledger_url)
        expected = full_read(second)
    count(reliability, result, expected)
    assert_full_read_because(
        result,
        rf"^the stored snapshot was read from another API URL \({re.escape(first.pagerduty_url)}\), not "
        rf"{re.escape(second.pagerduty_url)}$",
        expected,
    )


# ---- (3) totals that do not add up ---------------------------------------------------------------------


def test_a_user_whose_audit_record_was_lost_is_caught_by_the_totals(
    ledger_url: str, reliability: Reliability
) -> None:
    sandbox_org = org()
    with running_sandbox(sandbox_org, tokens={"pagerduty": TOKEN}) as sandbox:
        refresh(sandbox, ledger_url)
        trail = sandbox_org.pagerduty.audit
        trail.recording = False  # PagerDuty lost the record (or shows it late): the records say nothing
        sandbox_org.pagerduty.add_user("Lost Record", "lost.record@example.com")
        trail.recording = True
        result = refresh(sandbox, ledger_url)
        expected = full_read(sandbox)
    count(reliability, result, expected)
    assert_full_read_because(
        result,
        r"^the listing totals do not add up: PagerDuty lists 81 users and 20 teams, the snapshot patched "
        r"from the audit records holds 80 and 20$",
        expected,
        audit_calls=1,
    )


def lose_a_team_from_the_stored_snapshot(ledger_url: str) -> None:
    """A team's row and its members' rows gone from the stored snapshot, the rest of the row as it was."""
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:
        where = observed_snapshots.c.provider == PROVIDER
        teams, members = conn.execute(
            sa.select(observed_snapshots.c.teams, observed_snapshots.c.memberships).where(where)
        ).one()
        lost = teams[0]["team_id"]
        conn.execute(
            observed_snapshots.update()
            .where(where)
            .values(
                teams=[t for t in teams if t["team_id"] != lost],
                memberships=[m for m in members if m["team_id"] != lost],
            )
        )
    engine.dispose()


def test_a_team_lost_from_the_stored_snapshot_is_caught_by_the_totals(
    ledger_url: str, reliability: Reliability
) -> None:
    with running_sandbox(org(), tokens={"pagerduty": TOKEN}) as sandbox:
        refresh(sandbox, ledger_url)
        lose_a_team_from_the_stored_snapshot(ledger_url)
        result = refresh(sandbox, ledger_url)
        expected = full_read(sandbox)
    count(reliability, result, expected)
    assert_full_read_because(
        result,
        r"^the listing totals do not add up: PagerDuty lists 80 users and 20 teams, the snapshot patched "
        r"from the audit records holds 80 and 19$",
        expected,
        audit_calls=1,
    )


# ---- (4) a snapshot saved before snapshots named their account ------------------------------------------

OLD_RELEASE_REFRESHES = """
import os
from nthlayer_pipelines.assets.observed import refresh_pagerduty
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.pagerduty import PagerDutyClient  # where release 20173e0 keeps it
ledger = Ledger(os.environ["LEDGER_URL"])
with PagerDutyClient(os.environ["API_URL"], os.environ["TOKEN"]) as client:
    print(refresh_pagerduty(client, ledger, api_token=os.environ["TOKEN"]).decision.mode.value)
ledger.dispose()
"""


def test_a_snapshot_saved_by_a_release_before_the_binding_is_read_in_full_once(
    ledger_url: str, tmp_path: Path, reliability: Reliability
) -> None:
    release = checkout(UNVERSIONED_RELEASE, tmp_path / "release")
    with running_sandbox(org(), tokens={"pagerduty": TOKEN}) as sandbox:
        mode = run_script(
            release, OLD_RELEASE_REFRESHES, LEDGER_URL=ledger_url, API_URL=sandbox.pagerduty_url, TOKEN=TOKEN
        )
        assert mode.strip() == "full"
        upgrade_ledger(ledger_url)  # `nthlayer db upgrade`: the snapshot is kept, its account unknown
        engine = sa.create_engine(ledger_url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(observed_snapshots.c.account)).scalar_one() is None
        engine.dispose()

        result = refresh(sandbox, ledger_url)
        expected = full_read(sandbox)
        count(reliability, result, expected)
        assert_full_read_because(
            result, r"^the stored snapshot names no account \(it was saved before snapshots", expected
        )
        again = refresh(sandbox, ledger_url)
    assert refresh_of(again)[0] == "incremental", "the snapshot now names its account"


# ---- (5) the same account: incremental, the probe's calls counted ---------------------------------------


def test_the_same_account_stays_incremental_and_the_probe_costs_two_calls(ledger_url: str) -> None:
    sandbox_org = org()
    with running_sandbox(sandbox_org, tokens={"pagerduty": TOKEN}) as sandbox:
        first = refresh(sandbox, ledger_url)
        assert metadata(first)["pagerduty_users"]["probe_api_calls"] == 0, "a first refresh needs no probe"
        sandbox_org.pagerduty.remove_membership(*next(iter(member_of(sandbox_org))))
        sandbox.clear_requests()
        result = refresh(sandbox, ledger_url)
        served = sorted((r["endpoint"], r["query"].get("limit")) for r in sandbox.requests("pagerduty"))
        expected = full_read(sandbox)
    assert served == sorted([("GET /audit/records", ["100"]), *PROBE])
    assert refresh_of(result)[0] == "incremental"
    for table in TABLES:
        figures = metadata(result)[table]
        assert (figures["api_calls"], figures["refresh_api_calls"], figures["probe_api_calls"]) == (3, 3, 2)
        account = f"{sandbox_org.pagerduty.subdomain}.pagerduty.com via {sandbox.pagerduty_url}"
        assert figures["account"] == account
    assert same_snapshot(outputs(result), expected)
