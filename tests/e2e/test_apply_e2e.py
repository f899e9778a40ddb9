"""The approval gate end to end: dagster-webserver and dagster-daemon on Postgres, jobs launched through
GraphQL as the launchpad launches them, and the daemon's sensor launching every apply.

The example deployment (the example sandbox, examples/org) is shared by the tests that only add to its
history; the killed apply gets a deployment, a sandbox and a database of its own. That test comes first, so
its deployment has stopped before the shared one starts: two never compete for this machine's cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import URL
from starlette.requests import Request
from starlette.responses import JSONResponse

from nthlayer_pipelines.core.model import ChangeStatus
from nthlayer_pipelines.desired.git import load_definitions
from nthlayer_pipelines.resources.cortex.resource import CortexResource
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.ledger.schema import plan_sightings, plans
from nthlayer_pipelines.sandbox import (
    DEFAULT_CORTEX_TOKEN,
    DEFAULT_PAGERDUTY_TOKEN,
    DEFAULT_SLACK_TOKEN,
    RunningSandbox,
    org_from_seed,
    running_sandbox,
)
from tests.e2e.deployment import (
    DagsterUi,
    Deployment,
    DeploymentError,
    RunView,
    TickView,
    deployment_on_fresh_database,
    wait_until,
)
from tests.reliability import Reliability
from tests.support import (
    ARTIFACTS,
    EXAMPLE_DEFINITIONS,
    EXPECTED_EXAMPLE_CHANGES,
    change_row,
    pipeline_environment,
    slack_messages,
)

pytestmark = pytest.mark.postgres

GATE_SENSOR = "approved_plans_sensor"
SENSOR_INTERVAL_SECONDS = 5
# The schedules are not under test here: a refresh they start would race the ones the tests wait for.
NOT_DURING_THE_TESTS = "0 0 1 1 *"
TOKENS = {"pagerduty": DEFAULT_PAGERDUTY_TOKEN, "cortex": DEFAULT_CORTEX_TOKEN, "slack": DEFAULT_SLACK_TOKEN}
NTHLAYER = Path(sys.executable).parent / "nthlayer"  # the console script of the virtualenv under test

# The example plan's changes the policy approves: creations and additions, never one as manager.
POLICY_APPROVED = [
    ("create_team", "search", None),
    ("add_member", "data-platform", "heidi@example.com"),
    ("add_member", "payments", "carol@example.com"),
    ("add_member", "search", "ivan@example.com"),
]
# What waits for a person once those are applied: (kind, team, email, role, from_role).
LEFT_FOR_A_PERSON = [
    ("add_member", "search", "heidi@example.com", "manager", None),
    ("set_role", "payments", "bob@example.com", "responder", "observer"),
    ("remove_member", "payments", "mallory@example.com", None, "responder"),
]
# PagerDuty once both approvals are applied: examples/org, and the Cortex team data-platform.
CONVERGED_PAGERDUTY = {
    "Payments": {
        "alice@example.com": "manager",
        "bob@example.com": "responder",
        "carol@example.com": "responder",
        "dave@example.com": "observer",
    },
    # checkout does not prune: mallory, added by hand, stays.
    "Checkout": {
        "erin@example.com": "manager",
        "frank@example.com": "responder",
        "grace@example.com": "responder",
        "mallory@example.com": "observer",
    },
    "Platform": {"judy@example.com": "manager"},  # oscar has no PagerDuty account: a finding
    "Search": {"heidi@example.com": "manager", "ivan@example.com": "responder"},
    "Data Platform": {"grace@example.com": "manager", "heidi@example.com": "responder"},  # from Cortex
    "Legacy Ops": {"mallory@example.com": "manager"},  # no definition claims it: left alone
}
CHANGE_COUNT_KEYS = ("applied", "skipped", "stale", "blocked", "failed")


def apply_environment(sandbox: RunningSandbox, home: Path, **overrides: str) -> dict[str, str]:
    return pipeline_environment(
        sandbox,
        home,
        NTHLAYER_SENSOR_INTERVAL_SECONDS=str(SENSOR_INTERVAL_SECONDS),
        NTHLAYER_REFRESH_CRON=NOT_DURING_THE_TESTS,
        NTHLAYER_AUDIT_CRON=NOT_DURING_THE_TESTS,
        **overrides,
    )


@contextmanager
def started_deployment(server: URL, environ: dict[str, str], home: Path, logs: Path) -> Iterator[Deployment]:
    """The deployment on a new database of `server`; a start-up failure fails the test with its log."""
    failure = None
    try:
        with deployment_on_fresh_database(server, environ, home, logs) as deployment:
            yield deployment
    except DeploymentError as error:
        failure = str(error)  # reported outside the handler, so the message is shown once
    if failure:
        pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="module")
def example_deployment(
    e2e_sandbox: RunningSandbox, postgres_server_url: URL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The example sandbox, examples/org, and a deployment on a new database (the ledger's too)."""
    home = tmp_path_factory.mktemp("dagster_home")
    environ = apply_environment(e2e_sandbox, home)
    with started_deployment(postgres_server_url, environ, home, ARTIFACTS / "e2e" / "apply") as deployment:
        yield deployment


@pytest.fixture
def ledger(example_deployment: Deployment) -> Iterator[Ledger]:
    opened = Ledger(example_deployment.database_url)
    try:
        yield opened
    finally:
        opened.dispose()


# ---- what the tests read ---------------------------------------------------------------------------------


def pagerduty_members(sandbox: RunningSandbox) -> dict[str, dict[str, str]]:
    """Team name -> {email: role}, from the sandbox's own state."""
    state = sandbox.state.to_dict()["pagerduty"]
    emails = {u["id"]: u["email"] for u in state["users"]}
    names = {t["id"]: t["name"] for t in state["teams"]}
    held: dict[str, dict[str, str]] = {name: {} for name in names.values()}
    for membership in state["memberships"]:
        held[names[membership["team_id"]]][emails[membership["user_id"]]] = membership["role"]
    return held


def pagerduty_ids(sandbox: RunningSandbox) -> tuple[dict[str, str], dict[str, str]]:
    """Team name -> id and email -> user id, from the sandbox's own state."""
    state = sandbox.state.to_dict()["pagerduty"]
    return {t["name"]: t["id"] for t in state["teams"]}, {u["email"]: u["id"] for u in state["users"]}


def pagerduty_writes(sandbox: RunningSandbox) -> Counter[tuple[str, str]]:
    """How often each PagerDuty entity was written: (method, path) -> requests."""
    return Counter((r["method"], r["path"]) for r in sandbox.requests("pagerduty") if r["method"] != "GET")


def membership_writes(sandbox: RunningSandbox) -> Counter[tuple[str, str]]:
    """PagerDuty writes that took effect, per (method, path), from the sandbox's request log."""
    return Counter(
        (r["method"], r["path"])
        for r in sandbox.requests("pagerduty")
        if r["method"] != "GET" and int(r["status"]) < 300
    )


def every_addition(sandbox: RunningSandbox, teams: range, responders: int) -> set[tuple[str, str]]:
    """The PUT of each responder of each team of a `large_plan_org`."""
    team_ids, user_ids = pagerduty_ids(sandbox)
    return {
        ("PUT", f"/pagerduty/teams/{team_ids[team_name(t)]}/users/{user_ids[responder(t, m)]}")
        for t in teams
        for m in range(responders)
    }


def count_crash(
    reliability: Reliability,
    scenario: str,
    fault: str,
    approved: int,
    writes: Counter[tuple[str, str]],
    logged: int,
    **figures: int,
) -> None:
    """One crash survived, for the reliability table: the approved changes, writes that took effect more
    than once, and approved changes missing from the intent log."""
    reliability.count_faults(scenario, {fault: 1})
    reliability.count(
        scenario,
        crashes_survived=1,
        changes_applied=approved,
        duplicate_writes=sum(n - 1 for n in writes.values()),
        lost_changes=approved - logged,
        **figures,
    )


def requests_during(sandbox: RunningSandbox, provider: str, run: RunView) -> list[dict[str, object]]:
    assert run.start_time is not None and run.end_time is not None
    return [
        r
        for r in sandbox.requests(provider)
        if run.start_time <= datetime.fromisoformat(str(r["time"])).timestamp() <= run.end_time
    ]


def step_output_metadata(database_url: str, run_id: str) -> dict[str, object]:
    """The metadata of the run's one step output, read from the event log table in Postgres."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text(
                    "SELECT event FROM event_logs WHERE run_id = :id AND dagster_event_type = 'STEP_OUTPUT'"
                ),
                {"id": run_id},
            ).scalars()
            (event,) = list(stored)
    finally:
        engine.dispose()
    entry = dg.deserialize_value(event, dg.EventLogEntry)
    assert entry.dagster_event is not None
    return {label: value.value for label, value in entry.dagster_event.event_specific_data.metadata.items()}


def ledger_plan_rows(database_url: str) -> tuple[int, int]:
    """How many plans the ledger holds, and how many times a refresh recorded one."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            count = sa.func.count()
            return (
                conn.execute(sa.select(count).select_from(plans)).scalar_one(),
                conn.execute(sa.select(count).select_from(plan_sightings)).scalar_one(),
            )
    finally:
        engine.dispose()


def assert_launched_by_the_gate(
    ui: DagsterUi, run: RunView, plan_id: str, approval_id: str, approver: str
) -> None:
    """The sensor launched the run for this approval, under the run key that makes it happen once."""
    run_key = f"apply:{plan_id}:{approval_id}"
    nthlayer_tags = ("nthlayer/plan_id", "nthlayer/approval_id", "nthlayer/approver")
    assert tuple(run.tags.get(tag) for tag in nthlayer_tags) == (plan_id, approval_id, approver)
    assert (run.tags.get("dagster/sensor_name"), run.tags.get("dagster/run_key")) == (GATE_SENSOR, run_key)
    (tick,) = [t for t in ui.sensor_ticks(GATE_SENSOR) if run.run_id in t.run_ids]
    assert (tick.status, tick.run_ids, tick.run_keys) == ("SUCCESS", (run.run_id,), (run_key,))


def ticks_after(ui: DagsterUi, moment: float, count: int) -> list[TickView]:
    """Wait until the gate sensor has finished `count` ticks after `moment`; those ticks."""

    def finished() -> list[TickView] | None:
        ticks = [t for t in ui.sensor_ticks(GATE_SENSOR, after=moment) if t.status != "STARTED"]
        return ticks if len(ticks) >= count else None

    return wait_until(f"{count} ticks of {GATE_SENSOR}", finished, count * SENSOR_INTERVAL_SECONDS * 4)


def approve_config(plan_id: str) -> dict[str, object]:
    return {"ops": {"approve": {"config": {"plan_id": plan_id, "approver": "alice"}}}}


# ---- an apply killed mid-run -------------------------------------------------------------------------------

TEAM_COUNT, RESPONDERS_PER_TEAM = 20, 10
SANDBOX_LATENCY_MS = 40  # two requests a change: the apply takes several seconds, time to kill it halfway


def responder(team: int, member: int) -> str:
    return f"responder-{team:02d}-{member:02d}@example.com"


def team_name(team: int) -> str:
    return f"Team {team:02d}"


def large_plan_org(
    definitions: Path, team_count: int = TEAM_COUNT, responders_per_team: int = RESPONDERS_PER_TEAM
) -> dict[str, object]:
    """A seed whose PagerDuty teams have only their manager, and definitions adding responders to each
    (by default ten to each of 20 teams: 200 additions), no removal (so no blast radius)."""
    definitions.mkdir()
    users, teams = [], []
    for team in range(team_count):
        manager = {"email": f"manager-{team:02d}@example.com", "role": "manager"}
        responders = [{"email": responder(team, m), "role": "responder"} for m in range(responders_per_team)]
        users += [
            {"name": f"Person {m['email'].split('@')[0]}", "email": m["email"]}
            for m in [manager, *responders]
        ]
        teams.append({"name": team_name(team), "members": [manager]})
        document = {
            "apiVersion": "nthlayer/v1",
            "kind": "Team",
            "metadata": {"name": f"team-{team:02d}"},
            "spec": {"displayName": team_name(team), "prune": False, "members": [manager, *responders]},
        }
        (definitions / f"team-{team:02d}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return {"pagerduty": {"users": users, "teams": teams}, "slack": {"channels": ["ops-changes"]}}


@contextmanager
def large_plan_deployment(
    server: URL,
    workdir: Path,
    logs: Path,
    team_count: int = TEAM_COUNT,
    responders_per_team: int = RESPONDERS_PER_TEAM,
    latency_ms: float = SANDBOX_LATENCY_MS,
    max_concurrency: int = 1,
) -> Iterator[tuple[Deployment, RunningSandbox]]:
    """A deployment of its own on a new database of `server`: additions to plan (see `large_plan_org`),
    nothing approved by policy, Git the only source, a slow PagerDuty. Its apply writes one change at a
    time unless `max_concurrency` says otherwise: the tests that kill it count at most one change in
    flight (a concurrent apply killed mid-way: tests/integration/test_concurrent_apply_killed.py)."""
    seed = large_plan_org(workdir / "definitions", team_count, responders_per_team)
    with running_sandbox(org_from_seed(seed), tokens=TOKENS, latency_ms=latency_ms) as sandbox:
        environ = apply_environment(
            sandbox,
            workdir,
            NTHLAYER_DEFINITIONS=str(workdir / "definitions"),
            NTHLAYER_PRE_APPROVED_KINDS="",
            CORTEX_API_URL="",
            NTHLAYER_PAGERDUTY_MAX_CONCURRENCY=str(max_concurrency),
        )
        with started_deployment(server, environ, workdir / "dagster_home", logs) as deployment:
            yield deployment, sandbox


@pytest.fixture
def large_plan(postgres_server_url: URL, tmp_path: Path) -> Iterator[tuple[Deployment, RunningSandbox]]:
    """200 additions to plan (see `large_plan_deployment`)."""
    with large_plan_deployment(postgres_server_url, tmp_path, ARTIFACTS / "e2e" / "apply-killed") as planned:
        yield planned


def test_an_apply_killed_mid_run_resumes_on_retry_and_writes_each_change_once(
    large_plan: tuple[Deployment, RunningSandbox], reliability: Reliability
) -> None:
    deployment, sandbox = large_plan
    ui = deployment.ui
    ledger = Ledger(deployment.database_url)
    try:
        refresh = ui.wait_for_run(ui.launch_run("refresh"))
        assert refresh.status == "SUCCESS"
        plan_id = ledger.latest_plan_id()
        plan = ledger.get_plan(plan_id)
        assert [change_row(c) for c in plan.changes] == [
            ("add_member", f"team-{t:02d}", responder(t, m), "responder", None)
            for t in range(TEAM_COUNT)
            for m in range(RESPONDERS_PER_TEAM)
        ]
        assert ledger.latest_approval(plan_id) is None  # NTHLAYER_PRE_APPROVED_KINDS="": nothing by policy

        approve = ui.wait_for_run(ui.launch_run("approve_plan", approve_config(plan_id)))
        assert approve.status == "SUCCESS"
        approval = ledger.latest_approval(plan_id)
        assert (approval.approver, len(approval.change_ids)) == ("alice", len(plan.changes))

        def applied() -> int:
            return sum(o.status is ChangeStatus.APPLIED for o in ledger.outcomes(plan_id))

        wait_until("half of the plan applied", lambda: applied() >= len(plan.changes) // 2)
        (killed,) = ui.runs("apply_plan", {"nthlayer/approval_id": approval.id})
        os.kill(ui.run_worker_pid(killed.run_id), signal.SIGKILL)

        # The code server that launched the run sees its worker die and fails the run.
        killed = ui.wait_for_run(killed.run_id, timeout_seconds=30)
        assert killed.status == "FAILURE"
        messages = [e.get("message") or "" for e in ui.run_events(killed.run_id)]
        assert any("was terminated by signal 9 (SIGKILL)" in m for m in messages)
        done = [o for o in ledger.outcomes(plan_id) if o.status.terminal]
        assert len(plan.changes) // 2 <= len(done) < len(plan.changes)
        assert {o.status for o in done} == {ChangeStatus.APPLIED}

        retried = subprocess.run(
            [str(NTHLAYER), "retry", plan_id, "--approver", "alice"],
            env=deployment.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert retried.returncode == 0, retried.stderr
        retry = ledger.latest_approval(plan_id)
        left = len(plan.changes) - len(done)
        assert retried.stdout.strip() == f"approved {plan_id} as {retry.id} by alice ({left} change(s))"

        # A new approval, so a new run key: the sensor launches the rest once the dead run's slot is freed.
        resumed = ui.wait_for_tagged_run(
            "apply_plan", {"nthlayer/approval_id": retry.id}, timeout_seconds=150
        )
        assert resumed.status == "SUCCESS"
        assert_launched_by_the_gate(ui, resumed, plan_id, retry.id, "alice")
        metadata = step_output_metadata(deployment.database_url, resumed.run_id)
        assert metadata["changes_applied"] + metadata["changes_skipped"] == left
        assert (metadata["changes_failed"], metadata["unconverged"]) == (0, 0)

        outcomes = Counter(o.status for o in ledger.outcomes(plan_id))
        assert sum(outcomes.values()) == len(plan.changes)
        assert set(outcomes) <= {ChangeStatus.APPLIED, ChangeStatus.SKIPPED}
        # Only the change in flight when the worker died can have landed unrecorded: found done, skipped.
        assert outcomes[ChangeStatus.SKIPPED] <= 1
    finally:
        ledger.dispose()

    # The sandbox's request log: every membership written once, none twice, across the kill and the retry.
    writes = pagerduty_writes(sandbox)
    assert writes == Counter(
        dict.fromkeys(every_addition(sandbox, range(TEAM_COUNT), RESPONDERS_PER_TEAM), 1)
    )
    count_crash(
        reliability,
        "worker_kill_mid_apply",
        "run_worker_kill_9",
        len(plan.changes),
        writes,
        sum(outcomes.values()),
    )
    held = pagerduty_members(sandbox)
    for team in range(TEAM_COUNT):
        responders = {responder(team, m): "responder" for m in range(RESPONDERS_PER_TEAM)}
        assert held[team_name(team)] == {f"manager-{team:02d}@example.com": "manager", **responders}


# ---- the happy path ----------------------------------------------------------------------------------------


def test_policy_and_person_approvals_are_each_applied_once_by_the_daemon(
    example_deployment: Deployment, e2e_sandbox: RunningSandbox, ledger: Ledger
) -> None:
    ui = example_deployment.ui
    refresh = ui.wait_for_run(ui.launch_run("refresh"))
    assert refresh.status == "SUCCESS"
    first_plan_id = ledger.latest_plan_id()
    first_plan = ledger.get_plan(first_plan_id)
    assert [change_row(c) for c in first_plan.changes] == EXPECTED_EXAMPLE_CHANGES
    policy = ledger.latest_approval(first_plan_id)
    assert (policy.source, policy.approver, policy.decision) == ("policy", "policy", "approved")
    by_id = {c.id: change_row(c)[:3] for c in first_plan.changes}
    assert [by_id[change_id] for change_id in policy.change_ids] == POLICY_APPROVED

    # The policy's approval: the sensor launches the apply, then a refresh follows it.
    policy_apply = ui.wait_for_tagged_run("apply_plan", {"nthlayer/approval_id": policy.id})
    assert policy_apply.status == "SUCCESS"
    assert_launched_by_the_gate(ui, policy_apply, first_plan_id, policy.id, "policy")
    after_policy = ui.wait_for_tagged_run(
        "refresh", {"dagster/run_key": f"refresh-after:{policy_apply.run_id}"}
    )
    assert after_policy.status == "SUCCESS"

    # What is left needs a person: alice approves the latest plan from the launchpad of approve_plan.
    plan_id = ledger.latest_plan_id()
    plan = ledger.get_plan(plan_id)
    assert plan_id != first_plan_id
    assert [change_row(c) for c in plan.changes] == LEFT_FOR_A_PERSON
    assert ledger.latest_approval(plan_id) is None  # nothing of it is pre-approved
    approve = ui.wait_for_run(ui.launch_run("approve_plan", approve_config(plan_id)))
    assert approve.status == "SUCCESS"
    approval = ledger.latest_approval(plan_id)
    assert (approval.approver, approval.source, approval.decision) == ("alice", "person", "approved")
    assert approval.change_ids == tuple(c.id for c in plan.changes)

    person_apply = ui.wait_for_tagged_run("apply_plan", {"nthlayer/approval_id": approval.id})
    assert person_apply.status == "SUCCESS"
    assert_launched_by_the_gate(ui, person_apply, plan_id, approval.id, "alice")

    # The run's metadata is in Postgres's event log, and its API calls are the sandbox's count.
    metadata = step_output_metadata(example_deployment.database_url, person_apply.run_id)
    assert {key: metadata[f"changes_{key}"] for key in CHANGE_COUNT_KEYS} == {
        "applied": 3,
        "skipped": 0,
        "stale": 0,
        "blocked": 0,
        "failed": 0,
    }
    assert (metadata["plan_id"], metadata["approval_id"], metadata["unconverged"]) == (
        plan_id,
        approval.id,
        0,
    )
    assert metadata["api_calls"] == len(requests_during(e2e_sandbox, "pagerduty", person_apply))

    final = ui.wait_for_tagged_run("refresh", {"dagster/run_key": f"refresh-after:{person_apply.run_id}"})
    assert final.status == "SUCCESS"
    assert ui.materializations(final.run_id)["change_plan"]["changes_total"] == 0

    # PagerDuty holds the desired state, and each entity was written exactly once.
    held = pagerduty_members(e2e_sandbox)
    assert held == CONVERGED_PAGERDUTY
    for team in load_definitions(EXAMPLE_DEFINITIONS).teams:
        declared = {m.email: m.role.value for m in team.members if m.email != "oscar@example.com"}
        assert declared.items() <= held[team.display_name].items(), team.name
    team_ids, user_ids = pagerduty_ids(e2e_sandbox)

    def membership(team: str, email: str) -> str:
        return f"/pagerduty/teams/{team_ids[team]}/users/{user_ids[email]}"

    assert pagerduty_writes(e2e_sandbox) == Counter(
        {
            ("POST", "/pagerduty/teams"): 1,
            ("PUT", membership("Data Platform", "heidi@example.com")): 1,
            ("PUT", membership("Payments", "carol@example.com")): 1,
            ("PUT", membership("Search", "ivan@example.com")): 1,
            ("PUT", membership("Search", "heidi@example.com")): 1,
            ("PUT", membership("Payments", "bob@example.com")): 1,
            ("DELETE", membership("Payments", "mallory@example.com")): 1,
        }
    )

    # The gate keeps looking and finds nothing more to launch.
    ticks = ticks_after(ui, time.time(), count=2)
    assert [(t.status, t.run_ids) for t in ticks] == [("SKIPPED", ())] * len(ticks)
    assert [r.run_id for r in ui.runs("apply_plan")] == [person_apply.run_id, policy_apply.run_id]


# ---- a source outage ---------------------------------------------------------------------------------------


def test_a_cortex_outage_fails_the_refresh_and_nothing_is_planned_or_written(
    example_deployment: Deployment, e2e_sandbox: RunningSandbox
) -> None:
    ui = example_deployment.ui
    plans_before = ledger_plan_rows(example_deployment.database_url)
    applies_before = [r.run_id for r in ui.runs("apply_plan")]
    seen_before = len(e2e_sandbox.requests())

    async def cortex_is_down(_request: Request) -> JSONResponse:
        return JSONResponse({"type": "INTERNAL_ERROR", "message": "unavailable", "httpStatus": 500}, 500)

    e2e_sandbox.hooks.add_before(cortex_is_down, provider="cortex", endpoint="GET /api/v1/teams")
    try:
        refresh = ui.wait_for_run(ui.launch_run("refresh"))
        ticks = ticks_after(ui, refresh.end_time, count=2)
    finally:
        e2e_sandbox.hooks.clear()

    assert refresh.status == "FAILURE"
    steps = ui.step_statuses(refresh.run_id)
    assert steps["cortex_teams"] == "FAILURE"
    assert {steps.get(s) for s in ("desired_state", "divergences", "change_plan")} <= {None, "SKIPPED"}
    assert "change_plan" not in ui.materializations(refresh.run_id)
    # The client tried every attempt it has, and then the source failed: never an empty desired state.
    during = e2e_sandbox.requests()[seen_before:]
    cortex = [(r["method"], r["path"], r["status"]) for r in during if r["provider"] == "cortex"]
    assert cortex == [("GET", "/cortex/api/v1/teams", 500)] * CortexResource().max_attempts

    assert ledger_plan_rows(example_deployment.database_url) == plans_before
    assert [(t.status, t.run_ids) for t in ticks] == [("SKIPPED", ())] * len(ticks)
    assert [r.run_id for r in ui.runs("apply_plan")] == applies_before
    # Nothing written anywhere; the one message is the failure sensor's, telling Slack the refresh failed.
    writes = [(r["provider"], r["method"], r["path"]) for r in e2e_sandbox.requests()[seen_before:]]
    assert [w for w in writes if w[1] != "GET" and w[0] != "slack"] == []
    announced = wait_until(
        "Slack to hear of the failed refresh",
        lambda: [m for m in slack_messages(e2e_sandbox) if "the refresh failed" in m],
    )
    assert len(announced) == 1, announced
    assert "cortex_teams" in announced[0], announced[0]
