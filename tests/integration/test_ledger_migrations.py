"""The ledger's migrations: a new ledger starts at the head revision, matching the schema the code writes; a
ledger written by the release before migrations (20173e0) upgrades in place with nothing lost, on SQLite and
Postgres; an outdated ledger is refused with the command that migrates it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from nthlayer_pipelines.core.model import Change, ChangeKind, Plan, Role
from nthlayer_pipelines.doctor import Status, check_ledger
from nthlayer_pipelines.resources.ledger import (
    Ledger,
    LedgerOutdatedError,
    head_revision,
    metadata,
    migrate,
    upgrade_ledger,
)
from nthlayer_pipelines.resources.ledger.migrate import BASELINE, VERSION_TABLE
from nthlayer_pipelines.resources.ledger.store import _change_columns
from tests.integration.test_ledger_envelope import SERVICE
from tests.old_release import UNVERSIONED_RELEASE, checkout, run_script
from tests.postgres import PostgresUnavailable, fresh_database, postgres_server, render

# What release 20173e0's own code writes into its ledger: a plan with three changes and a finding, a
# policy approval and a person's, an intent log with an applied, a blocked and a pending change, a refresh
# cursor and the snapshot it belongs to. It prints the counts it wrote.
OLD_RELEASE_WRITES = """
import json, os
from datetime import UTC, datetime
from nthlayer_pipelines.incremental import RefreshCursor
from nthlayer_pipelines.model import Change, ChangeKind, Finding, FindingKind, Plan, Role
from nthlayer_pipelines.reconcile.observed import ObservedState, memberships_frame, teams_frame, users_frame
from nthlayer_pipelines.reconcile.safety import BlastRadius
from nthlayer_pipelines.resources.ledger import Ledger

def change(kind, email, user_id, role, from_role=None):
    return Change(id=Change.make_id("pagerduty", kind, "payments", email, role), kind=kind, team="payments",
                  team_name="Payments", team_id="PT1", email=email, user_id=user_id, role=role,
                  from_role=from_role)

changes = (
    change(ChangeKind.ADD_MEMBER, "alice@example.com", "PU1", Role.RESPONDER),
    change(ChangeKind.SET_ROLE, "bob@example.com", "PU2", Role.MANAGER, Role.RESPONDER),
    change(ChangeKind.REMOVE_MEMBER, "carol@example.com", "PU3", None, Role.OBSERVER),
)
finding = Finding(kind=FindingKind.UNRESOLVED_USER, team="payments", email="oscar@example.com", detail="x")
plan = Plan(id=Plan.make_id(changes), changes=changes, findings=(finding,))
ledger = Ledger(os.environ["LEDGER_URL"])
ledger.record_plan(plan, run_id="run-1", blast_radius=BlastRadius(exceeded=False, removals=1))
policy = ledger.approve_by_policy(plan.id, change_ids=[changes[0].id], comment="pre-approved kinds")
person = ledger.approve(plan.id, approver="alice@example.com", comment="ok", allow_blast_radius=True)
for approval, c, status in ((policy, changes[0], "applied"), (person, changes[2], "blocked")):
    ledger.mark_pending(plan.id, approval.id, [c.id], "run-2")
    ledger.record_outcome(plan.id, c.id, status=status, approval_id=approval.id, run_id="run-2",
                          api_calls=2, retries=1, detail=f"{status} detail")
ledger.mark_pending(plan.id, person.id, [changes[1].id], "run-3")
now = datetime.now(UTC)
snapshot = ObservedState(
    users=users_frame([{"user_id": "PU1", "email": "alice@example.com", "name": "Alice"}]),
    teams=teams_frame([{"team_id": "PT1", "name": "Payments", "description": None}]),
    memberships=memberships_frame([{"team_id": "PT1", "user_id": "PU1", "role": "responder"}]),
)
cursor = RefreshCursor(provider="pagerduty", cursor_time=now, last_full_refresh_at=now,
                       last_record_id="rec-9", seen_record_ids=("rec-9",))
ledger.save_refresh(cursor, snapshot)
print(json.dumps({"plan_id": plan.id, "approvals": [policy.id, person.id],
                  "changes": [c.id for c in changes]}))
"""


def _sqlite(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'ledger.db'}"


def _postgres() -> Iterator[str]:
    try:
        with postgres_server() as server, fresh_database(server, prefix="nthlayer_migration") as database:
            yield render(database)
    except PostgresUnavailable as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind a ledger lives in."""
    yield from (_sqlite(tmp_path) if request.param == "sqlite" else _postgres())


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkout(UNVERSIONED_RELEASE, tmp_path_factory.mktemp("release"))


def _schema_differences(url: str) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return [d for d in compare_metadata(context, metadata) if not _is_version_table(d)]
    finally:
        engine.dispose()


def _is_version_table(difference: object) -> bool:
    return isinstance(difference, tuple) and "alembic_version" in repr(difference)


def _nthlayer(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nthlayer_pipelines.cli", *args],
        env={"NTHLAYER_LEDGER_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def _rows(url: str) -> dict[str, list[dict[str, object]]]:
    """Every row of every table the old release wrote, as JSON-comparable values."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = [t for t in sa.inspect(conn).get_table_names() if t.startswith("nthlayer_")]
            old = sa.MetaData()
            old.reflect(conn, only=[t for t in tables if t != VERSION_TABLE])
            return {
                name: sorted(
                    (
                        json.loads(json.dumps(dict(row), default=str))
                        for row in conn.execute(table.select()).mappings()
                    ),
                    key=json.dumps,
                )
                for name, table in old.tables.items()
            }
    finally:
        engine.dispose()


def test_a_new_ledger_starts_at_the_head_revision_with_the_schema_the_code_writes(
    empty_ledger_url: str,
) -> None:
    with Ledger(empty_ledger_url) as ledger:
        assert ledger.revision().current == head_revision()

    assert _schema_differences(empty_ledger_url) == []


def test_a_ledger_of_the_release_before_migrations_upgrades_in_place_with_nothing_lost(
    empty_ledger_url: str, old_release: Path
) -> None:
    written = json.loads(run_script(old_release, OLD_RELEASE_WRITES, LEDGER_URL=empty_ledger_url))
    before = _rows(empty_ledger_url)
    assert len(before["nthlayer_change_outcomes"]) == 3

    if head_revision() != BASELINE:
        with pytest.raises(LedgerOutdatedError, match="nthlayer db upgrade"):
            Ledger(empty_ledger_url)
        refused = _nthlayer("audit", url=empty_ledger_url)
        assert refused.returncode == 1
        assert "nthlayer db upgrade" in refused.stderr

    if head_revision() != BASELINE:
        doctor = check_ledger({"NTHLAYER_LEDGER_URL": empty_ledger_url})
        assert doctor.status is Status.FAIL and "nthlayer db upgrade" in doctor.message
        current = _nthlayer("db", "current", url=empty_ledger_url)
        assert current.returncode == 1 and f"revision {BASELINE}" in current.stdout

    upgraded = _nthlayer("db", "upgrade", url=empty_ledger_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"to {head_revision()}" in upgraded.stdout or "nothing to do" in upgraded.stdout

    assert _schema_differences(empty_ledger_url) == []
    after = _rows(empty_ledger_url)
    for table, rows in before.items():
        kept = (
            [{k: v for k, v in row.items() if k in rows[0]} for row in after.get(table, [])] if rows else []
        )
        assert all(row in kept for row in rows), f"{table} lost rows in the upgrade"

    audit = _nthlayer("audit", url=empty_ledger_url)
    assert audit.returncode == 0, audit.stderr
    assert "applied" in audit.stdout and "alice@example.com" in audit.stdout
    assert "blocked" in audit.stdout and "carol@example.com" in audit.stdout
    with Ledger(empty_ledger_url) as ledger:
        plan = ledger.get_plan(written["plan_id"])
        assert plan is not None and [c.id for c in plan.changes] == written["changes"]
        # Revision 0005: the old plan is PagerDuty's, still its latest; its outcomes name their subjects.
        assert plan.provider == "pagerduty" and ledger.latest_plan_id() == plan.id
        outcomes = ledger.outcomes(plan.id)
        assert [(o.provider, o.subject) for o in outcomes] == [
            ("pagerduty", "payments/alice@example.com"),
            ("pagerduty", "payments/bob@example.com"),
            ("pagerduty", "payments/carol@example.com"),
        ]
        assert [o.subject for o in outcomes] == [c.subject for c in plan.changes]
        assert [ledger.get_approval(a).approver for a in written["approvals"]] == [
            "policy",
            "alice@example.com",
        ]
        assert ledger.refresh_cursor("pagerduty").last_record_id == "rec-9"
        snapshot = ledger.observed_snapshot("pagerduty")
        assert snapshot is not None and list(snapshot.users["email"]) == ["alice@example.com"]

    doctor = check_ledger({"NTHLAYER_LEDGER_URL": empty_ledger_url})
    assert doctor.status is Status.OK and f"revision {head_revision()}" in doctor.message
    again = _nthlayer("db", "upgrade", url=empty_ledger_url)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def _write_at_revision_0004(url: str, plans: Sequence[Plan]) -> None:
    """A ledger at revision 0004 holding the plans, each seen once in order, every change with an applied
    outcome: the rows as that revision's store wrote them."""
    engine = sa.create_engine(url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            migrate.upgrade(conn, "0004")
            tables = sa.MetaData()
            tables.reflect(conn)
            for plan in plans:
                conn.execute(
                    tables.tables["nthlayer_plans"].insert(),
                    {
                        "plan_id": plan.id,
                        "first_seen_at": now,
                        "last_seen_at": now,
                        "change_count": len(plan.changes),
                        "finding_count": 0,
                        "findings": [],
                        "content_id": plan.content_id,
                        "generation": 1,
                        "held_back": [],
                    },
                )
                conn.execute(
                    tables.tables["nthlayer_plan_sightings"].insert(), {"plan_id": plan.id, "seen_at": now}
                )
                for position, change in enumerate(plan.changes):
                    conn.execute(
                        tables.tables["nthlayer_plan_changes"].insert(),
                        {
                            "plan_id": plan.id,
                            "change_id": change.id,
                            "position": position,
                            "body": change.body(),
                        },
                    )
                    # The intent log's row as the store writes it, of the columns revision 0004 had.
                    outcomes = tables.tables["nthlayer_change_outcomes"]
                    columns = _change_columns(plan.id, position, change)
                    conn.execute(
                        outcomes.insert(),
                        {
                            **{name: value for name, value in columns.items() if name in outcomes.c},
                            "status": "applied",
                            "attempts": 1,
                            "api_calls": 1,
                            "retries": 0,
                            "detail": "",
                            "updated_at": now,
                        },
                    )
    finally:
        engine.dispose()


def test_revision_0005_takes_each_plans_provider_and_each_outcomes_subject_from_its_changes(
    empty_ledger_url: str,
) -> None:
    by_id = Change.planned(
        "pagerduty", ChangeKind.REMOVE_MEMBER, team="payments", team_name="Payments", user_id="PGONE01"
    )
    slack = Change(
        id="chg-5a1c00000001",
        kind=ChangeKind.ADD_MEMBER,
        team="payments",
        team_name="Payments",
        email="alice@example.com",
        user_id="U0ALICE",
        role=Role.RESPONDER,
        provider="slack",
    )
    pagerduty_plan = Plan(id=Plan.make_id((SERVICE, by_id)), changes=(SERVICE, by_id))
    slack_plan = Plan(id=Plan.make_id((slack,)), changes=(slack,))
    _write_at_revision_0004(empty_ledger_url, [pagerduty_plan, slack_plan])

    before, after = upgrade_ledger(empty_ledger_url)

    assert (before.current, after.current) == ("0004", head_revision())
    assert _schema_differences(empty_ledger_url) == []
    with Ledger(empty_ledger_url) as ledger:
        assert ledger.get_plan(pagerduty_plan.id) == pagerduty_plan
        assert ledger.get_plan(slack_plan.id) == slack_plan.model_copy(update={"provider": "slack"})
        assert ledger.latest_plan_id() == pagerduty_plan.id, "a later plan of Slack's supersedes nothing"
        assert ledger.latest_plan_id("slack") == slack_plan.id
        outcomes = [*ledger.outcomes(pagerduty_plan.id), *ledger.outcomes(slack_plan.id)]
    assert [(o.provider, o.subject) for o in outcomes] == [
        ("pagerduty", "payments/Payment API"),
        ("pagerduty", "payments/PGONE01"),
        ("slack", "payments/alice@example.com"),
    ]
    assert [o.subject for o in outcomes] == [SERVICE.subject, by_id.subject, slack.subject]


def test_revision_0006_adds_an_empty_services_snapshot_and_keeps_the_membership_cursor(
    empty_ledger_url: str,
) -> None:
    engine = sa.create_engine(empty_ledger_url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            migrate.upgrade(conn, "0005")
            cursors = sa.Table("nthlayer_refresh_cursor", sa.MetaData(), autoload_with=conn)
            conn.execute(
                cursors.insert(),
                {
                    "provider": "pagerduty",
                    "cursor_time": now,
                    "seen_record_ids": [],
                    "last_full_refresh_at": now,
                    "updated_at": now,
                },
            )
    finally:
        engine.dispose()

    before, after = upgrade_ledger(empty_ledger_url)

    assert (before.current, after.current) == ("0005", head_revision())
    assert _schema_differences(empty_ledger_url) == []
    with Ledger(empty_ledger_url) as ledger:
        assert ledger.refresh_cursor("pagerduty") is not None, "membership's cursor is kept"
        assert ledger.stored_services("pagerduty") is None, "the first services refresh reads everything"
