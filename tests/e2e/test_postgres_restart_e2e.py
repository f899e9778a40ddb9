"""Postgres restarted (immediate: every connection dropped, then crash recovery) while an apply is writing.

The deployment's Dagster storage and the ledger share one private server the test restarts. Stated
outcome: the apply run rides the restart out (the ledger reconnects and tries the cut-off statement
again), it succeeds, every change is in the intent log as applied, and each was written to PagerDuty once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from nthlayer_pipelines.core.model import ChangeStatus
from nthlayer_pipelines.resources.ledger import Ledger
from tests.e2e.deployment import DagsterUi, wait_until
from tests.e2e.test_apply_e2e import (
    count_crash,
    every_addition,
    large_plan_deployment,
    membership_writes,
)
from tests.postgres import PrivateServer, restartable_postgres  # noqa: F401 (a fixture)
from tests.reliability import Reliability
from tests.support import ARTIFACTS

pytestmark = pytest.mark.postgres

TEAM_COUNT, RESPONDERS_PER_TEAM = 10, 6  # 60 additions
LATENCY_MS = 40


def serving(ui: DagsterUi) -> bool:
    """The webserver answers from its run storage (a bare version query never touches Postgres)."""
    try:
        ui.runs("apply_plan")
    except httpx.HTTPError:
        return False
    return True


def test_a_postgres_restart_mid_apply_converges_with_no_duplicate_write_and_no_lost_row(
    restartable_postgres: PrivateServer,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    reliability: Reliability,
) -> None:
    logs = ARTIFACTS / "e2e" / "postgres-restart"
    with large_plan_deployment(
        restartable_postgres.url, tmp_path, logs, TEAM_COUNT, RESPONDERS_PER_TEAM, LATENCY_MS
    ) as (deployment, sandbox):
        ui = deployment.ui
        ledger = Ledger(deployment.database_url)
        try:
            assert ui.wait_for_run(ui.launch_run("refresh")).status == "SUCCESS"
            plan = ledger.get_plan(ledger.latest_plan_id())
            assert len(plan.changes) == TEAM_COUNT * RESPONDERS_PER_TEAM
            approval = ledger.approve(plan.id, approver="alice")

            def applied() -> int:
                return sum(o.status is ChangeStatus.APPLIED for o in ledger.outcomes(plan.id))

            wait_until("a third of the plan applied", lambda: applied() >= len(plan.changes) // 3)
            restartable_postgres.restart("immediate")
            applied_at_restart = applied()
            # The webserver's pooled storage connection died with the server: the request that finds it
            # dead fails (500), the pool is replaced, and the next is served.
            wait_until("the webserver serving again", lambda: serving(ui), 60)

            run = ui.wait_for_tagged_run(
                "apply_plan", {"nthlayer/approval_id": approval.id}, timeout_seconds=180
            )
            outcomes = ledger.outcomes(plan.id)
        finally:
            ledger.dispose()

        assert applied_at_restart < len(plan.changes), "the apply finished before the restart"
        assert run.status == "SUCCESS"
        assert [o.change_id for o in outcomes] == [c.id for c in plan.changes]
        assert {o.status for o in outcomes} == {ChangeStatus.APPLIED}
        writes = membership_writes(sandbox)
        assert writes == Counter(
            dict.fromkeys(every_addition(sandbox, range(TEAM_COUNT), RESPONDERS_PER_TEAM), 1)
        )
        count_crash(
            reliability,
            "postgres_restart_mid_apply",
            "postgres_restart_immediate",
            len(plan.changes),
            writes,
            len(outcomes),
        )
