"""A concurrent apply killed with SIGKILL halfway, then retried: every change written exactly once in the
sandbox's request log, and none lost in the ledger (on the real Postgres)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.onboarding import onboarding_plan, onboarding_seed
from nthlayer_pipelines.apply import apply_approval
from nthlayer_pipelines.core.model import ChangeStatus
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from nthlayer_pipelines.sandbox import RunningSandbox, org_from_seed, running_sandbox
from tests.postgres import private_database
from tests.reliability import Reliability

ADDITIONS, TEAMS, CONCURRENCY = 400, 40, 8
LATENCY_MS = 60  # the apply takes a few seconds: time to kill it halfway
TOKEN = "killed-apply-token"
ROOT = Path(__file__).resolve().parents[2]

# The apply's own process: what `nthlayer apply` or the Dagster run worker runs, with nothing around it.
WORKER = """
import sys
from bench.onboarding import onboarding_plan
from nthlayer_pipelines.apply import apply_approval
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient

url, token, ledger_url, approval_id, additions, teams, concurrency = sys.argv[1:]
_, desired = onboarding_plan(int(additions), int(teams))
ledger = Ledger(ledger_url)
with PagerDutyClient(url, token, max_concurrency=int(concurrency)) as client:
    apply_approval(ledger=ledger, approval=ledger.get_approval(approval_id), client=client, desired=desired)
"""


@pytest.fixture
def ledger_url() -> Iterator[str]:
    with private_database("nthlayer_killed_apply") as url:
        yield url


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    org = org_from_seed(onboarding_seed(ADDITIONS, TEAMS))
    with running_sandbox(
        org, tokens={"pagerduty": TOKEN}, rate_limit=100_000, latency_ms=LATENCY_MS
    ) as running:
        yield running


def landed(sandbox: RunningSandbox) -> Counter[str]:
    """Membership writes the sandbox carried out, by path."""
    return Counter(
        e["path"]
        for e in sandbox.requests("pagerduty", "PUT")
        if "/users/" in e["path"] and e["status"] < 300
    )


@pytest.mark.postgres
def test_a_concurrent_apply_killed_halfway_is_retried_writing_each_change_once(
    sandbox: RunningSandbox, ledger_url: str, reliability: Reliability
) -> None:
    plan, desired = onboarding_plan(ADDITIONS, TEAMS)
    ledger = Ledger(ledger_url)
    ledger.record_plan(plan)
    approval = ledger.approve(plan.id, approver="alice")
    arguments = [sandbox.pagerduty_url, TOKEN, ledger_url, approval.id, str(ADDITIONS), str(TEAMS)]
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, *arguments, str(CONCURRENCY)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )

    def recorded() -> int:
        return sum(o.status.terminal for o in ledger.outcomes(plan.id))

    deadline = time.monotonic() + 120
    while recorded() < ADDITIONS // 3:
        assert worker.poll() is None, "the apply ended before it could be killed"
        assert time.monotonic() < deadline, "the apply did not get a third of the way in 2 minutes"
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(timeout=30) == -signal.SIGKILL
    time.sleep(2 * LATENCY_MS / 1000)  # a write the sandbox had received is carried out all the same

    first = {o.change_id: o.status for o in ledger.outcomes(plan.id)}
    applied_first = sum(status is ChangeStatus.APPLIED for status in first.values())
    assert set(first.values()) <= {ChangeStatus.APPLIED, ChangeStatus.PENDING}
    assert ADDITIONS // 3 <= applied_first < ADDITIONS
    landed_first = sum(landed(sandbox).values())
    # What landed and was not recorded yet is pending: the retry must find it done, not write it again.
    assert (
        applied_first
        <= landed_first
        <= applied_first + sum(s is ChangeStatus.PENDING for s in first.values())
    )

    retry = ledger.retry(plan.id, approver="alice")  # waits for no lock: the killed process's went with it
    assert len(retry.change_ids) == ADDITIONS - applied_first
    with PagerDutyClient(sandbox.pagerduty_url, TOKEN, max_concurrency=CONCURRENCY) as client:
        report = apply_approval(ledger=ledger, approval=retry, client=client, desired=desired)

    assert report.succeeded and report.already_done == 0
    assert report.counts["skipped"] == landed_first - applied_first  # landed before the kill: found done
    assert report.counts["applied"] == ADDITIONS - landed_first
    wanted = {f"/pagerduty/teams/{c.team_id}/users/{c.user_id}" for c in plan.changes}
    writes = landed(sandbox)
    assert set(writes) == wanted and set(writes.values()) == {1}  # each change written exactly once
    outcomes = ledger.outcomes(plan.id)
    assert len(outcomes) == ADDITIONS  # none lost
    assert Counter(o.status for o in outcomes) == Counter(
        {
            ChangeStatus.APPLIED: ADDITIONS - (landed_first - applied_first),
            ChangeStatus.SKIPPED: report.counts["skipped"],
        }
    )
    # A change the killed run had marked was attempted once more; one it never reached, once.
    assert {o.change_id for o in outcomes if o.attempts == 2} == {
        i for i, s in first.items() if s is ChangeStatus.PENDING
    }
    scenario = "concurrent_apply_kill"
    reliability.count_faults(scenario, {"apply_kill_9": 1})
    reliability.count(
        scenario,
        crashes_survived=1,
        changes_applied=ADDITIONS,
        duplicate_writes=sum(n - 1 for n in writes.values()),
        lost_changes=ADDITIONS - len(outcomes),
    )
    ledger.dispose()
