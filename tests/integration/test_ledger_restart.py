"""The ledger across a Postgres restart: the intent log keeps being written, and no row is lost.

The server is a private one (started from the local PostgreSQL binaries), so the test may restart it.
"""

from __future__ import annotations

import threading
import time

import pytest

from nthlayer_pipelines.core.model import Change, ChangeKind, ChangeStatus, Plan, Role
from nthlayer_pipelines.resources.ledger import Ledger
from tests.postgres import (
    PrivateServer,
    fresh_database,
    render,
    restartable_postgres,  # noqa: F401 (a fixture)
)
from tests.reliability import Reliability

pytestmark = pytest.mark.postgres

CHANGE_COUNT = 120
RESTARTS = 2


def additions(count: int) -> Plan:
    changes = tuple(
        Change.planned(
            "pagerduty",
            ChangeKind.ADD_MEMBER,
            team="payments",
            team_name="Payments",
            team_id="PPAY001",
            email=f"p{n}@example.com",
            user_id=f"PU{n:05d}",
            role=Role.RESPONDER,
        )
        for n in range(count)
    )
    return Plan(id=Plan.make_id(changes), changes=changes)


def test_the_intent_log_is_written_through_postgres_restarts_and_loses_no_row(
    restartable_postgres: PrivateServer,  # noqa: F811 (the fixture imported above)
    reliability: Reliability,
) -> None:
    server = restartable_postgres
    plan = additions(CHANGE_COUNT)
    with fresh_database(server.url, prefix="nthlayer_restart") as database:
        ledger = Ledger(render(database))
        ledger.record_plan(plan)
        approval = ledger.approve(plan.id, approver="alice")
        written: list[str] = []
        errors: list[BaseException] = []

        def apply_all() -> None:
            """What the apply engine asks of the ledger for each change, minus the provider."""
            try:
                for change in plan.changes:
                    ledger.mark_pending(plan.id, approval.id, [change.id], "run-1")
                    ledger.record_outcome(
                        plan.id, change.id, status="applied", approval_id=approval.id, run_id="run-1"
                    )
                    written.append(change.id)
            except BaseException as error:  # surfaced below
                errors.append(error)

        writer = threading.Thread(target=apply_all)
        writer.start()
        restarts = 0
        for _ in range(RESTARTS):
            # Restart while the writer is mid-log, each time further on.
            target = (restarts + 1) * CHANGE_COUNT // (RESTARTS + 2)
            deadline = time.monotonic() + 60
            while len(written) < target and writer.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not writer.is_alive():
                break
            server.restart("immediate")
            restarts += 1
        writer.join(timeout=120)

        assert errors == []
        assert restarts == RESTARTS, "the writer finished before every restart: make the plan larger"
        outcomes = ledger.outcomes(plan.id)
        assert [o.change_id for o in outcomes] == [c.id for c in plan.changes]
        assert {o.status for o in outcomes} == {ChangeStatus.APPLIED}
        # A statement cut off by the restart is tried again; at most one per restart counts twice.
        assert sum(o.attempts for o in outcomes) <= CHANGE_COUNT + restarts
        scenario = "postgres_restarts_under_the_intent_log"
        reliability.count_faults(scenario, {"postgres_restart_immediate": restarts})
        reliability.count(
            scenario,
            crashes_survived=restarts,
            ledger_rows_written=len(written),
            lost_ledger_rows=len(written) - len(outcomes),
        )
        ledger.dispose()
