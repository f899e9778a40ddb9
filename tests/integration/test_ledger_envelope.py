"""The change envelope in the ledger: a membership plan is stored and digested exactly as before the envelope
grew, on SQLite and Postgres."""

from __future__ import annotations

import json

import sqlalchemy as sa

from nthlayer_pipelines.model import Change, ChangeKind, Plan, Role
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.ledger.schema import plan_changes
from nthlayer_pipelines.resources.ledger.store import changes_digest
from tests.integration.test_ledger import (  # noqa: F401 (fixtures)
    ledger,
    ledger_url,
    postgres_database,
)


def membership(kind: ChangeKind, **fields: object) -> Change:
    return Change.planned(
        "pagerduty", kind, team="payments", team_name="Payments", team_id="PPAY001", **fields
    )


# A fixed membership plan, and what the ledger made of it before the envelope gained its later fields
# (provider, target, attribute values): its ids, its stored bodies and the digest an approval of it holds.
MEMBERSHIP = (
    Change.planned("pagerduty", ChangeKind.CREATE_TEAM, team="search", team_name="Search"),
    membership(ChangeKind.ADD_MEMBER, email="carol@example.com", user_id="PCAROL@", role=Role.RESPONDER),
    membership(
        ChangeKind.SET_ROLE,
        email="bob@example.com",
        user_id="PBOB@EX",
        role=Role.RESPONDER,
        from_role=Role.OBSERVER,
    ),
    membership(
        ChangeKind.REMOVE_MEMBER, email="mallory@example.com", user_id="PMALLOR", from_role=Role.RESPONDER
    ),
)
MEMBERSHIP_PLAN = Plan(id=Plan.make_id(MEMBERSHIP), changes=MEMBERSHIP)
PINNED_PLAN_ID = "plan-3bdb6ee77b01"
PINNED_CHANGE_IDS = ["chg-29e24479f307", "chg-d1c76b0a1c33", "chg-914270773c59", "chg-6786dbeca594"]
PINNED_DIGEST = "2f8bfe2c3f5afae71e2b658d16d56042a8ab7e175fcc7465f585438f668b2da4"
PINNED_BODIES = [
    '{"id": "chg-29e24479f307", "kind": "create_team", "team": "search", "team_name": "Search", '
    '"team_id": null, "email": null, "user_id": null, "role": null, "from_role": null}',
    '{"id": "chg-d1c76b0a1c33", "kind": "add_member", "team": "payments", "team_name": "Payments", '
    '"team_id": "PPAY001", "email": "carol@example.com", "user_id": "PCAROL@", "role": "responder", '
    '"from_role": null}',
    '{"id": "chg-914270773c59", "kind": "set_role", "team": "payments", "team_name": "Payments", '
    '"team_id": "PPAY001", "email": "bob@example.com", "user_id": "PBOB@EX", "role": "responder", '
    '"from_role": "observer"}',
    '{"id": "chg-6786dbeca594", "kind": "remove_member", "team": "payments", "team_name": "Payments", '
    '"team_id": "PPAY001", "email": "mallory@example.com", "user_id": "PMALLOR", "role": null, '
    '"from_role": "responder"}',
]


def stored_bodies(store: Ledger, plan_id: str) -> list[str]:
    """The plan's change bodies as the database holds them, in plan order, as JSON text."""
    query = (
        sa.select(sa.cast(plan_changes.c.body, sa.Text))
        .where(plan_changes.c.plan_id == plan_id)
        .order_by(plan_changes.c.position)
    )
    with store.engine.connect() as conn:
        return list(conn.execute(query).scalars())


def test_a_membership_plan_is_stored_and_digested_byte_for_byte_as_before(
    ledger: Ledger,  # noqa: F811 (the fixture imported above)
) -> None:
    assert MEMBERSHIP_PLAN.id == PINNED_PLAN_ID
    assert [c.id for c in MEMBERSHIP] == PINNED_CHANGE_IDS
    assert [json.dumps(c.body()) for c in MEMBERSHIP] == PINNED_BODIES
    assert changes_digest(PINNED_PLAN_ID, MEMBERSHIP) == PINNED_DIGEST

    recorded = ledger.record_plan(MEMBERSHIP_PLAN)
    approval = ledger.approve(recorded.plan.id, approver="alice")

    assert recorded.plan.id == PINNED_PLAN_ID
    assert stored_bodies(ledger, PINNED_PLAN_ID) == PINNED_BODIES
    assert approval.digest == PINNED_DIGEST
    read_back = ledger.get_plan(PINNED_PLAN_ID)
    assert read_back is not None and read_back.changes == MEMBERSHIP
    assert changes_digest(read_back.id, read_back.changes) == PINNED_DIGEST
