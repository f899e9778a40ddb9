"""Crashes and races on a live deployment (dagster-webserver and dagster-daemon on Postgres), each with one
stated outcome. The tests share one deployment and run in order, each adding to its history:

- Two refresh runs launched at once: both succeed and record the same plan (one plan, seen twice).
- The daemon killed -9 while the approval sensor is evaluating (held on the ledger's write lock), an
  approval committed while it is down, the daemon started again: exactly one run applies the approval,
  and every tick of the sensor while that apply runs launches nothing.
- The daemon killed -9 as soon as the sensor has launched an apply, and started again: still exactly one
  run for the approval (its run key), and every change of the plan written once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from nthlayer_pipelines.core.model import ChangeStatus
from nthlayer_pipelines.resources.ledger import WRITE_LOCK_KEY, Ledger
from nthlayer_pipelines.sandbox import RunningSandbox
from tests.e2e.deployment import Deployment, wait_until
from tests.e2e.test_apply_e2e import (
    GATE_SENSOR,
    count_crash,
    every_addition,
    large_plan_deployment,
    ledger_plan_rows,
    membership_writes,
    ticks_after,
)
from tests.reliability import Reliability
from tests.support import ARTIFACTS

pytestmark = pytest.mark.postgres

TEAM_COUNT, RESPONDERS_PER_TEAM = 8, 5  # 40 additions: each apply below takes longer than a sensor interval
LATENCY_MS = 250


@pytest.fixture(scope="module")
def crash_deployment(
    postgres_server_url: URL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, RunningSandbox]]:
    """A deployment of its own: 40 additions to plan, nothing approved by policy, a slow PagerDuty."""
    workdir, logs = tmp_path_factory.mktemp("crash"), ARTIFACTS / "e2e" / "crash"
    with large_plan_deployment(
        postgres_server_url, workdir, logs, TEAM_COUNT, RESPONDERS_PER_TEAM, LATENCY_MS
    ) as planned:
        yield planned


@pytest.fixture
def ledger(crash_deployment: tuple[Deployment, RunningSandbox]) -> Iterator[Ledger]:
    opened = Ledger(crash_deployment[0].database_url)
    try:
        yield opened
    finally:
        opened.dispose()


def advisory_lock_waiters(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        return conn.execute(sa.text(query)).scalar_one()


def test_two_refresh_runs_at_once_both_succeed_and_record_one_plan(
    crash_deployment: tuple[Deployment, RunningSandbox], ledger: Ledger
) -> None:
    deployment, _sandbox = crash_deployment
    ui = deployment.ui
    launched = [ui.launch_run("refresh"), ui.launch_run("refresh")]
    runs = [ui.wait_for_run(run_id, timeout_seconds=180) for run_id in launched]

    assert [run.status for run in runs] == ["SUCCESS", "SUCCESS"]
    plan_ids = {ui.materializations(run.run_id)["change_plan"]["plan_id"] for run in runs}
    assert plan_ids == {ledger.latest_plan_id()}
    assert ledger_plan_rows(deployment.database_url) == (1, 2)  # one plan, recorded by each refresh
    plan = ledger.get_plan(ledger.latest_plan_id())
    assert len(plan.changes) == TEAM_COUNT * RESPONDERS_PER_TEAM
    assert ledger.approvals_after(0) == []  # nothing pre-approved: the sensor has nothing to launch yet


def test_the_daemon_killed_mid_tick_and_restarted_applies_the_approval_once(
    crash_deployment: tuple[Deployment, RunningSandbox], ledger: Ledger, reliability: Reliability
) -> None:
    deployment, sandbox = crash_deployment
    ui, daemon = deployment.ui, deployment.daemon
    plan = ledger.get_plan(ledger.latest_plan_id())
    half = TEAM_COUNT // 2
    first_half = [c.id for c in plan.changes if int(c.team.removeprefix("team-")) < half]
    engine = sa.create_engine(deployment.database_url)
    try:
        # Hold the ledger's write lock: the sensor's next evaluation waits on it inside the tick.
        with engine.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": WRITE_LOCK_KEY})
            holder.commit()

            def sensor_held() -> bool:
                """A tick in progress, and a session waiting for the lock: the sensor, mid-evaluation."""
                in_progress = any(t.status == "STARTED" for t in ui.sensor_ticks(GATE_SENSOR))
                return in_progress and advisory_lock_waiters(engine) > 0

            wait_until("the approval sensor waiting on the ledger mid-tick", sensor_held, 60)
            daemon.kill()
            holder.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": WRITE_LOCK_KEY})
            holder.commit()
    finally:
        engine.dispose()
    approval = ledger.approve(plan.id, approver="alice", change_ids=first_half)  # while the daemon is down
    daemon.restart()

    run = ui.wait_for_tagged_run("apply_plan", {"nthlayer/approval_id": approval.id}, timeout_seconds=180)

    assert run.status == "SUCCESS"
    assert [r.run_id for r in ui.runs("apply_plan")] == [run.run_id]
    # The sensor kept ticking while the apply ran, and launched nothing more.
    during = [t for t in ui.sensor_ticks(GATE_SENSOR) if run.start_time <= t.timestamp <= run.end_time]
    assert during, "no tick of the sensor fell within the apply: make the apply longer"
    assert [t.run_ids for t in during] == [()] * len(during)
    outcomes = {o.change_id: o.status for o in ledger.outcomes(plan.id)}
    assert outcomes == dict.fromkeys(first_half, ChangeStatus.APPLIED)
    writes = membership_writes(sandbox)
    assert writes == Counter(dict.fromkeys(every_addition(sandbox, range(half), RESPONDERS_PER_TEAM), 1))
    count_crash(
        reliability,
        "daemon_kill_mid_tick",
        "daemon_kill_9",
        len(first_half),
        writes,
        len(outcomes),
        sensor_ticks_during_apply=len(during),
    )


def test_the_daemon_killed_just_after_launching_an_apply_leaves_one_run(
    crash_deployment: tuple[Deployment, RunningSandbox], ledger: Ledger, reliability: Reliability
) -> None:
    deployment, sandbox = crash_deployment
    ui, daemon = deployment.ui, deployment.daemon
    (first_apply,) = ui.runs("apply_plan")
    refreshed = ui.wait_for_tagged_run("refresh", {"dagster/run_key": f"refresh-after:{first_apply.run_id}"})
    assert refreshed.status == "SUCCESS"
    plan = ledger.get_plan(ledger.latest_plan_id())
    assert len(plan.changes) == TEAM_COUNT * RESPONDERS_PER_TEAM // 2  # what the first apply left
    approval = ledger.approve(plan.id, approver="alice")
    tags = {"nthlayer/approval_id": approval.id}

    # Killed once the launch is complete (the run worker started). Killed in the instant between the
    # queue's dequeue and the launch, Dagster leaves the run STARTING until run monitoring fails it
    # (`start_timeout_seconds`); nothing is written and `nthlayer retry` applies it: not this test.
    (launched,) = wait_until(
        "the sensor's apply to start",
        lambda: [r for r in ui.runs("apply_plan", tags) if r.status not in ("QUEUED", "STARTING")],
        60,
    )
    daemon.kill()
    restarted_at = time.time()
    daemon.restart()

    run = ui.wait_for_tagged_run("apply_plan", tags, timeout_seconds=180)
    assert (run.run_id, run.status) == (launched.run_id, "SUCCESS")
    ticks = ticks_after(ui, max(restarted_at, run.end_time), count=2)
    assert [t.run_ids for t in ticks] == [()] * len(ticks)
    assert [r.run_id for r in ui.runs("apply_plan", tags)] == [run.run_id]
    assert [o.status for o in ledger.outcomes(plan.id)] == [ChangeStatus.APPLIED] * len(plan.changes)
    writes = membership_writes(sandbox)
    assert writes == Counter(
        dict.fromkeys(every_addition(sandbox, range(TEAM_COUNT), RESPONDERS_PER_TEAM), 1)
    )
    ticks_during = [t for t in ui.sensor_ticks(GATE_SENSOR) if run.start_time <= t.timestamp <= run.end_time]
    outcomes = ledger.outcomes(plan.id)
    count_crash(
        reliability,
        "daemon_kill_after_launch",
        "daemon_kill_9",
        len(plan.changes),
        writes,
        len(outcomes),
        sensor_ticks_during_apply=len(ticks_during),
    )
