"""The refresh cursor in the ledger, on SQLite and on Postgres: stored, replaced, forgotten, per provider;
the snapshot beside it with the account it was read from."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.ledger.schema import observed_snapshots
from nthlayer_pipelines.resources.pagerduty.incremental import RefreshCursor, SnapshotAccount
from nthlayer_pipelines.resources.pagerduty.observed import (
    ObservedState,
    memberships_frame,
    teams_frame,
    users_frame,
)

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
