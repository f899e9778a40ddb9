"""A concurrent apply against the sandbox over loopback: teams at once, each team's changes in plan order,
one members read per team before its writes, every change written once and its cost its own."""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.onboarding import onboarding_plan, onboarding_seed, team_id
from nthlayer_pipelines.apply import apply_approval
from nthlayer_pipelines.core.model import Change, ChangeKind, ChangeStatus, DesiredState, Member, Role, Team
from nthlayer_pipelines.core.plan import ordered_plan
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from nthlayer_pipelines.sandbox import RunningSandbox, org_from_seed, running_sandbox

ADDITIONS, TEAMS, PRUNED, CREATED = 300, 40, 10, 4
TOKEN = "concurrent-apply-token"
MEMBER_PATH = re.compile(r"^/pagerduty/teams/(\w+)/(members|users/(\w+))$")


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    org = org_from_seed(onboarding_seed(ADDITIONS, TEAMS))
    with running_sandbox(org, tokens={"pagerduty": TOKEN}, rate_limit=100_000) as running:
        yield running


def mixed_plan() -> tuple[list[Change], DesiredState]:
    """The onboarding, plus: the first PRUNED teams lose their manager (they prune and no longer declare
    them), and CREATED new teams are made, each with two of the onboarded users."""
    plan, desired = onboarding_plan(ADDITIONS, TEAMS)
    changes = list(plan.changes)
    teams: list[Team] = []
    for index, team in enumerate(desired.teams):
        if index < PRUNED:
            lead, *kept = team.members
            changes.append(
                Change.planned(
                    "pagerduty",
                    ChangeKind.REMOVE_MEMBER,
                    team=team.name,
                    team_name=team.display_name,
                    team_id=team_id(index),
                    email=lead.email,
                    user_id=f"PL{index:05d}",
                    from_role=Role.MANAGER,
                )
            )
            team = team.model_copy(update={"members": tuple(kept), "prune": True})
        teams.append(team)
    for index in range(CREATED):
        slug, name = f"fresh-{index}", f"Fresh {index}"
        joining = plan.changes[index * 2 : index * 2 + 2]
        changes.append(Change.planned("pagerduty", ChangeKind.CREATE_TEAM, team=slug, team_name=name))
        changes += [
            Change.planned(
                "pagerduty",
                ChangeKind.ADD_MEMBER,
                team=slug,
                team_name=name,
                email=c.email,
                user_id=c.user_id,
                role=Role.OBSERVER,
            )
            for c in joining
        ]
        members = tuple(Member(email=c.email or "", role=Role.OBSERVER) for c in joining)
        teams.append(Team(name=slug, display_name=name, members=members))
    return changes, desired.model_copy(update={"teams": tuple(teams)})


def test_a_concurrent_apply_reads_each_team_once_keeps_its_order_and_writes_each_change_once(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    changes, desired = mixed_plan()
    plan = ordered_plan(changes, [])
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record_plan(plan)
    approval = ledger.approve(plan.id, approver="alice", allow_blast_radius=True)
    sandbox.clear_requests()
    with PagerDutyClient(sandbox.pagerduty_url, TOKEN, max_concurrency=8) as client:
        report = apply_approval(ledger=ledger, approval=approval, client=client, desired=desired)

    assert report.counts["applied"] == len(plan.changes) and report.succeeded
    assert [row.change.id for row in report.rows] == [c.id for c in plan.changes]  # rows in plan order
    assert all(o.status is ChangeStatus.APPLIED and o.attempts == 1 for o in ledger.outcomes(plan.id))

    log = sandbox.requests(provider="pagerduty")
    created = {team.name: team.id for team in sandbox.state.pagerduty.teams.values()}
    # Each team's requests in the order the sandbox got them: reads of its members, writes to them.
    per_team: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    creates: Counter[str] = Counter()
    for entry in log:
        if entry["method"] == "POST" and entry["path"] == "/pagerduty/teams":
            creates[entry["status"]] += 1
        found = MEMBER_PATH.match(entry["path"])
        if found and entry["status"] < 300:
            per_team[found[1]].append((entry["method"], found[3]))
    assert creates == Counter({201: CREATED})

    writes = Counter((team, user) for team, requests in per_team.items() for method, user in requests if user)
    wanted = {(c.team_id or created[c.team_name], c.user_id) for c in plan.changes if c.user_id}
    assert set(writes) == wanted and set(writes.values()) == {1}  # each change written once

    for team, requests in per_team.items():
        methods = [method for method, _ in requests]
        last_write = max(i for i, (_, user) in enumerate(requests) if user)
        reads_before = [m for m in methods[:last_write] if m == "GET"]
        assert reads_before == ["GET"] and methods[0] == "GET", team  # one read, before its writes
        if "DELETE" in methods:  # removals last
            assert methods.index("DELETE") > max(i for i, m in enumerate(methods) if m == "PUT"), team

    # A created team's members were written to the id its create answered: after it, in its lane.
    assert all(created[f"Fresh {index}"] in per_team for index in range(CREATED))
    # Teams at once: the writes of teams interleaved. In plan order a team's additions are contiguous, so
    # one at a time would switch teams one time fewer than there are teams.
    written = [MEMBER_PATH.match(e["path"])[1] for e in log if e["method"] == "PUT"]  # type: ignore[index]
    switches = sum(1 for before, after in itertools.pairwise(written) if before != after)
    assert switches > TEAMS + CREATED

    # Each change's cost is its own, whatever the other lanes sent meanwhile: its team's one read on
    # the first, and its write.
    first_of_team = {c.id for c in plan.changes if c.kind is ChangeKind.ADD_MEMBER} & {
        next(c.id for c in plan.changes if c.team == team and c.kind is not ChangeKind.CREATE_TEAM)
        for team in {c.team for c in plan.changes}
    }
    costs = {row.change.id: row.api_calls for row in report.rows}
    for change in plan.changes:
        if change.kind is ChangeKind.CREATE_TEAM:
            assert costs[change.id] == 2  # looked for by name, then created
        else:
            assert costs[change.id] == (2 if change.id in first_of_team else 1), change.id
    ledger.dispose()
