"""The chaos run: a generated org of 300 teams and 3,000 memberships, drift on a tenth of them, refreshed,
approved and applied through the Dagster jobs while a fifth of every request to every provider meets a
transient fault (every 429 variant, 500, 502, 503, latency, timeouts, dropped connections, truncated
pages) and every write that meets none lags its reads.

It must converge within `MAX_ROUNDS` rounds of refresh, approval and apply; the sandbox's audit trail
(its write log) must show each change taking effect exactly once; every change the ledger reports
applied must be held by the provider; and every approved change must have its row in the ledger.
"""

import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from nthlayer_pipelines.assets.pagerduty.teams.decide import converged
from nthlayer_pipelines.core.model import ChangeKind, ChangeStatus, Plan, Role
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.sandbox import DEFAULT_PAGERDUTY_TOKEN, RunningSandbox, SandboxOrg, running_sandbox
from nthlayer_pipelines.sandbox.faults import transient_mix
from nthlayer_pipelines.sandbox.generate import generate_org
from tests.integration.test_apply_flow import approve_config, run_job, tick
from tests.postgres import fresh_database, postgres_server, render
from tests.reliability import Reliability
from tests.support import pipeline_environment

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

TEAMS, MEMBERS_PER_TEAM, NEW_TEAMS = 300, 10, 3
FAULT_RATE = 0.2
MAX_ROUNDS = 3  # a change failed for good in one round (its retries ran out) is planned again by the next
CLIENT_TIMEOUT_SECONDS = "1"  # the injected timeouts hang 3 s


def declare(org: SandboxOrg, folder: Path, rng: random.Random) -> dict[str, dict[str, str]]:
    """Write a definition per team that differs from `org` on one membership in each team (a role,
    an addition or a removal, in turn), plus `NEW_TEAMS` teams it lacks; return the declared state
    (team name -> email -> role)."""
    pagerduty = org.pagerduty
    targets = {u for p in pagerduty.escalation_policies.values() for r in p.rules for u in r.target_user_ids}
    emails = {user.id: user.email for user in pagerduty.users.values()}
    declared: dict[str, dict[str, str]] = {}
    for index, team in enumerate(pagerduty.teams_by_name):
        members = {emails[u]: role for u, role in pagerduty.memberships[team.id].items()}
        movable = sorted(emails[u] for u in pagerduty.memberships[team.id] if u not in targets)
        match index % 3:
            case 0:
                email = rng.choice(movable)
                members[email] = rng.choice([r.value for r in Role if r.value != members[email]])
            case 1:
                outsider = rng.choice(sorted(set(emails.values()) - set(members)))
                members[outsider] = Role.RESPONDER.value
            case 2:
                del members[rng.choice(movable)]
        declared[team.name] = members
        write_team(folder, f"team-{index:03d}", team.name, members, team.id)
    for number in range(NEW_TEAMS):
        manager, responder = rng.sample(sorted(emails.values()), 2)
        members = {manager: Role.MANAGER.value, responder: Role.RESPONDER.value}
        declared[f"Chaos New {number}"] = members
        write_team(folder, f"new-{number}", f"Chaos New {number}", members, None)
    return declared


def write_team(folder: Path, slug: str, name: str, members: dict[str, str], team_id: str | None) -> None:
    spec: dict[str, Any] = {
        "displayName": name,
        "prune": True,
        "members": [{"email": email, "role": role} for email, role in sorted(members.items())],
    }
    if team_id:
        spec["pagerduty"] = {"teamId": team_id}
    document = {"apiVersion": "nthlayer/v1", "kind": "Team", "metadata": {"name": slug}, "spec": spec}
    (folder / f"{slug}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def held(org: SandboxOrg) -> dict[str, dict[str, str]]:
    pagerduty = org.pagerduty
    with org.lock:
        return {
            team.name: {pagerduty.users[u].email: role for u, role in pagerduty.memberships[team.id].items()}
            for team in pagerduty.teams.values()
        }


def effective_writes(org: SandboxOrg) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """From the audit trail: how many writes took effect per (team id, user id), and creations per team
    name. Records of one write share a request id."""
    memberships: dict[tuple[str, str], set[str]] = defaultdict(set)
    created: Counter[str] = Counter()
    for record in org.pagerduty.audit.records():
        if record.action == "create" and record.root.type == "team_reference":
            created[record.root.summary] += 1
        users = [record.resource.id] if record.resource.type == "user_reference" else []
        users += [u.id for ref in record.references for u in (*ref.added, *ref.removed)]
        for user_id in users:
            memberships[(record.root.id, user_id)].add(record.request_id)
    return Counter({pair: len(ids) for pair, ids in memberships.items()}), created


def test_a_drifted_org_converges_under_a_fifth_of_requests_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    org = generate_org(TEAMS, members_per_team=MEMBERS_PER_TEAM, seed=11)
    assert sum(len(m) for m in org.pagerduty.memberships.values()) == TEAMS * MEMBERS_PER_TEAM
    folder = tmp_path / "definitions"
    folder.mkdir()
    declared = declare(org, folder, random.Random(11))

    with (
        postgres_server() as server,
        fresh_database(server, "nthlayer_chaos") as database,
        running_sandbox(org, faults=transient_mix(FAULT_RATE, seed=11, hang_seconds=3.0)) as sandbox,
    ):
        environ = pipeline_environment(
            sandbox,
            tmp_path,
            NTHLAYER_DEFINITIONS=str(folder),
            NTHLAYER_LEDGER_URL=render(database),
            CORTEX_API_URL="",
            CORTEX_API_TOKEN="",
            NTHLAYER_PRE_APPROVED_KINDS="",
            # A hundred removals, one a team: this deployment's blast radius allows them.
            NTHLAYER_MAX_TOTAL_REMOVALS=str(TEAMS),
            NTHLAYER_PAGERDUTY_TIMEOUT_SECONDS=CLIENT_TIMEOUT_SECONDS,
        )
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        plans, results, rounds = run_rounds(environ, sandbox)
        ledger = Ledger(environ["NTHLAYER_LEDGER_URL"])
        try:
            check_outcome(sandbox, ledger, plans, results, declared, rounds, reliability)
        finally:
            ledger.dispose()


def run_rounds(
    environ: dict[str, str], sandbox: RunningSandbox
) -> tuple[list[Plan], list[dg.ExecuteInProcessResult], int]:
    """Refresh; while the plan has changes, approve it all and apply it; at most MAX_ROUNDS applies."""
    plans: list[Plan] = []
    results: list[dg.ExecuteInProcessResult] = []
    cursor = None
    for rounds in range(MAX_ROUNDS + 1):
        refresh = run_job(environ, "refresh")
        results.append(refresh)
        assert refresh.success, f"refresh {rounds + 1} failed under faults"
        plan: Plan = refresh.output_for_node("change_plan")
        if not plan.changes:
            return plans, results, rounds
        assert rounds < MAX_ROUNDS, f"{len(plan.changes)} changes left after {MAX_ROUNDS} rounds"
        plans.append(plan)
        approval = run_job(environ, "approve_plan", approve_config(plan.id))
        assert approval.success
        ticked = tick(environ, cursor)
        cursor = ticked.cursor
        (request,) = ticked.run_requests
        results.append(run_job(environ, "apply_plan", request.run_config))
    raise AssertionError("unreachable")  # pragma: no cover


def check_outcome(
    sandbox: RunningSandbox,
    ledger: Ledger,
    plans: list[Plan],
    results: list[dg.ExecuteInProcessResult],
    declared: dict[str, dict[str, str]],
    rounds: int,
    reliability: Reliability,
) -> None:
    org = sandbox.state
    first = plans[0]
    kinds = Counter(c.kind for c in first.changes)
    assert kinds == {
        ChangeKind.SET_ROLE: TEAMS // 3,
        ChangeKind.ADD_MEMBER: TEAMS // 3 + 2 * NEW_TEAMS,
        ChangeKind.REMOVE_MEMBER: TEAMS // 3,
        ChangeKind.CREATE_TEAM: NEW_TEAMS,
    }

    # Converged: the provider holds exactly what is declared.
    assert held(org) == declared

    # The write log: each membership change took effect once, nothing else was written, each new team
    # was created once.
    writes, created = effective_writes(org)
    wanted = {
        (c.team_id, c.user_id) for c in first.changes if c.team_id and c.kind is not ChangeKind.CREATE_TEAM
    }
    new_team_ids = {t.id for t in org.pagerduty.teams.values() if t.name.startswith("Chaos New")}
    duplicates = sum(count - 1 for count in writes.values() if count > 1) + sum(
        n - 1 for n in created.values()
    )
    unplanned = [pair for pair in writes if pair not in wanted and pair[0] not in new_team_ids]
    assert duplicates == 0, [pair for pair, count in writes.items() if count > 1]
    assert unplanned == []
    assert created == Counter({f"Chaos New {n}": 1 for n in range(NEW_TEAMS)})
    assert sum(writes.values()) == len(first.changes) - NEW_TEAMS

    # Every change the ledger reports applied is held; every approved change has its terminal row.
    reported_applied = 0
    lost = 0
    current = {team_id: dict(members) for team_id, members in org.pagerduty.memberships.items()}
    team_ids = {team.name: team.id for team in org.pagerduty.teams.values()}
    for plan in plans:
        outcomes = {o.change_id: o for o in ledger.outcomes(plan.id)}
        lost += sum(1 for c in plan.changes if c.id not in outcomes or not outcomes[c.id].status.terminal)
        for change in plan.changes:
            outcome = outcomes.get(change.id)
            if outcome is None or outcome.status is not ChangeStatus.APPLIED:
                continue
            reported_applied += 1
            team_id = change.team_id or team_ids.get(change.team_name)
            members = current.get(team_id or "")
            role = members.get(change.user_id or "") if members is not None else None
            assert converged(
                change, team_exists=members is not None, current_role=Role(role) if role else None
            )
    assert lost == 0
    assert reported_applied == len(first.changes)

    # A fifth of the requests met a fault; the token never reached a log.
    requests = sandbox.requests()
    faulted = sum(1 for r in requests if r["fault"] not in (None, "lag"))
    assert faulted / len(requests) >= FAULT_RATE * 0.8, (faulted, len(requests))
    logged = json.dumps(requests) + "".join(str(e) for result in results for e in result.all_events)
    token_leaks = logged.count(DEFAULT_PAGERDUTY_TOKEN)
    assert token_leaks == 0

    # PUT and DELETE name what they write in their path; three POSTs to /teams create three teams.
    resent = Counter(
        (r["method"], r["path"]) for r in requests if r["method"] in ("PUT", "DELETE") and r["status"] < 300
    )
    reliability.count_faults("chaos", sandbox.faults.injected())
    reliability.count(
        "chaos",
        requests=len(requests),
        changes_planned=len(first.changes),
        changes_applied=reported_applied,
        writes_taking_effect=sum(writes.values()) + sum(created.values()),
        idempotent_writes_sent_again=sum(n - 1 for n in resent.values() if n > 1),
        duplicate_writes=duplicates,
        lost_changes=lost,
        rounds=rounds,
        token_leaks=token_leaks,
    )
