"""The refresh cursor in the ledger, on SQLite and on Postgres: stored, replaced, forgotten, per provider;
the snapshot beside it with the account it was read from; the services kind's snapshot with its own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from nthlayer_pipelines.resources.ledger import Ledger, StoredServices
from nthlayer_pipelines.resources.ledger.schema import observed_snapshots, services_snapshots
from nthlayer_pipelines.resources.pagerduty.incremental import RefreshCursor, SnapshotAccount
from nthlayer_pipelines.resources.pagerduty.models import (
    ObservedServices,
    PagerDutyEscalationPolicy,
    PagerDutySchedule,
    PagerDutyService,
    PagerDutyUrgencyRule,
)
from nthlayer_pipelines.resources.pagerduty.observed import (
    ObservedState,
    memberships_frame,
    teams_frame,
    users_frame,
)
from nthlayer_pipelines.resources.pagerduty.services_incremental import ServicesAccount

STARTED = datetime(2026, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = Ledger(url)
    for provider in ("pagerduty", "cortex"):
        store.clear_refresh_cursor(provider)
        store.clear_services_snapshot(provider)
    yield store
    store.dispose()


def test_a_cursor_is_stored_replaced_and_forgotten_per_provider(ledger: Ledger) -> None:
    assert ledger.refresh_cursor("pagerduty") is None

    first = RefreshCursor("pagerduty", STARTED - timedelta(minutes=5), STARTED, updated_at=STARTED)
    ledger.save_refresh_cursor(first)
    assert ledger.refresh_cursor("pagerduty") == first

    paris = timezone(timedelta(hours=1))
    later = RefreshCursor(
        "pagerduty",
        cursor_time=datetime(2026, 3, 10, 14, 55, tzinfo=paris),
        last_full_refresh_at=STARTED,
        last_record_id="PDRECORD9",
        seen_record_ids=("PDRECORD8", "PDRECORD9"),
        updated_at=datetime(2026, 3, 10, 14, 0, tzinfo=UTC),
    )
    ledger.save_refresh_cursor(later)
    stored = ledger.refresh_cursor("pagerduty")
    assert stored == later
    assert stored is not None and stored.cursor_time.tzinfo == UTC, "read back in UTC"
    assert stored.cursor_time == datetime(2026, 3, 10, 13, 55, tzinfo=UTC)

    other = RefreshCursor("cortex", STARTED, STARTED, updated_at=STARTED)
    ledger.save_refresh_cursor(other)
    ledger.clear_refresh_cursor("pagerduty")
    assert ledger.refresh_cursor("pagerduty") is None
    assert ledger.refresh_cursor("cortex") == other


def test_a_cursor_saved_without_a_time_of_update_gets_one(ledger: Ledger) -> None:
    before = datetime.now(UTC)
    ledger.save_refresh_cursor(RefreshCursor("pagerduty", STARTED, STARTED))
    stored = ledger.refresh_cursor("pagerduty")
    assert stored is not None and stored.updated_at is not None
    assert before <= stored.updated_at <= datetime.now(UTC)


def test_a_snapshot_is_stored_with_the_account_it_was_read_from(ledger: Ledger) -> None:
    snapshot = ObservedState(
        users=users_frame([{"user_id": "PU1", "email": "alice@example.com", "name": "Alice"}]),
        teams=teams_frame([{"team_id": "PT1", "name": "Payments", "description": None}]),
        memberships=memberships_frame([{"team_id": "PT1", "user_id": "PU1", "role": "manager"}]),
    )
    cursor = RefreshCursor("pagerduty", STARTED, STARTED, updated_at=STARTED)
    account = SnapshotAccount("https://api.pagerduty.com", "acme", users=1, teams=1)
    ledger.save_refresh(cursor, snapshot, account=account)
    stored = ledger.stored_snapshot("pagerduty")
    assert stored is not None
    assert (stored.account, stored.taken_at) == (account, STARTED)
    assert list(stored.state.users["email"]) == ["alice@example.com"]

    ledger.save_refresh(cursor, snapshot, account=None)
    stored = ledger.stored_snapshot("pagerduty")
    assert stored is not None and stored.account is None, "no account is stored as none, never kept"
    with ledger.engine.connect() as conn:
        column = conn.execute(sa.select(observed_snapshots.c.account)).scalar_one()
    assert column is None, "SQL NULL, as revision 0002 leaves the snapshots saved before it"


def test_a_services_snapshot_is_stored_with_its_account_and_cursor_and_replaced_whole(ledger: Ledger) -> None:
    assert ledger.stored_services("pagerduty") is None
    snapshot = ObservedServices(
        services=(
            PagerDutyService(
                id="PS1",
                name="Payment API",
                escalation_policy_id="PE1",
                team_ids=("PT1",),
                acknowledgement_timeout=None,
                urgency_rule=PagerDutyUrgencyRule(type="constant", urgency="high"),
                html_url="https://acme.pagerduty.com/service-directory/PS1",
            ),
        ),
        policies=(
            PagerDutyEscalationPolicy.from_api(
                {
                    "id": "PE1",
                    "name": "Payments (critical)",
                    "num_loops": 2,
                    "escalation_rules": [
                        {"escalation_delay_in_minutes": 5, "targets": [{"id": "PU1", "type": "user"}]}
                    ],
                    "services": [{"id": "PS1"}],
                    "teams": [{"id": "PT1"}],
                }
            ),
        ),
        schedules=(PagerDutySchedule(id="PC1", name="Payments primary", team_ids=("PT1",)),),
    )
    cursor = RefreshCursor(
        "pagerduty", STARTED - timedelta(minutes=5), STARTED, "PDR2", ("PDR1", "PDR2"), STARTED
    )
    account = ServicesAccount("https://api.pagerduty.com", "acme")
    ledger.save_services_refresh(cursor, snapshot, account=account)
    assert ledger.stored_services("pagerduty") == StoredServices(snapshot, account, cursor, STARTED)
    assert ledger.refresh_cursor("pagerduty") is None, "membership's cursor is its own"

    later = RefreshCursor("pagerduty", STARTED, STARTED, updated_at=STARTED + timedelta(minutes=10))
    ledger.save_services_refresh(later, ObservedServices(), account=ServicesAccount(account.api_url, None))
    stored = ledger.stored_services("pagerduty")
    assert stored == StoredServices(
        ObservedServices(), ServicesAccount(account.api_url, None), later, later.updated_at
    )

    with ledger.engine.begin() as conn:  # objects a later release wrote in a shape this one cannot read
        conn.execute(services_snapshots.update().values(services=[{"id": "PS1"}]))
    stored = ledger.stored_services("pagerduty")
    assert stored is not None and stored.state is None and stored.cursor == later
    ledger.clear_services_snapshot("pagerduty")
    assert ledger.stored_services("pagerduty") is None
