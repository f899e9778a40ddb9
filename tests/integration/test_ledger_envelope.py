"""The change envelope in the ledger, on SQLite and Postgres: a membership plan is stored and digested
exactly as before the envelope grew; attribute changes (a service's settings, a policy's rules) are stored
and read back whole, their approvals' digests cover every value written, and the audit names what each
change wrote."""

from __future__ import annotations

import json

import sqlalchemy as sa
from click.testing import CliRunner

from nthlayer_pipelines.cli import main
from nthlayer_pipelines.model import Change, ChangeKind, FieldChange, Plan, Role
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


def rule(minutes: int, *targets: tuple[str, str]) -> dict[str, object]:
    return {
        "escalation_delay_in_minutes": minutes,
        "targets": [{"type": kind, "id": target_id} for kind, target_id in targets],
    }


def attributes(kind: ChangeKind, target_id: str, target_name: str, *fields: FieldChange) -> Change:
    """A change of payments' service or policy, setting the fields."""
    return Change.of_fields(
        "pagerduty",
        kind,
        team="payments",
        team_name="Payments",
        team_id="PPAY001",
        target_id=target_id,
        target_name=target_name,
        fields=fields,
    )


# Attribute changes: a policy's rules (a list of dicts of lists), a service's timeouts turned on and off
# (null before or after), its urgency rule (nested dicts), as the provider's API speaks them.
POLICY = attributes(
    ChangeKind.UPDATE_ESCALATION_POLICY,
    "PEP0001",
    "Payments (critical)",
    FieldChange(
        name="escalation_rules",
        before=[rule(30, ("schedule_reference", "PSCHED1"))],
        after=[
            rule(15, ("schedule_reference", "PSCHED1")),
            rule(30, ("user_reference", "PALICE1"), ("user_reference", "PBOB001")),
        ],
    ),
    FieldChange(name="num_loops", before=0, after=2),
)
SERVICE = attributes(
    ChangeKind.UPDATE_SERVICE,
    "PSVC001",
    "Payment API",
    FieldChange(name="acknowledgement_timeout", before=None, after=1800),
    FieldChange(name="auto_resolve_timeout", before=14400, after=None),
    FieldChange(
        name="incident_urgency_rule",
        before={"type": "constant", "urgency": "high"},
        after={
            "type": "use_support_hours",
            "during_support_hours": {"type": "constant", "urgency": "high"},
            "outside_support_hours": {"type": "constant", "urgency": "low"},
            "days": [{"day": 1, "hours": [9, 17]}, {"day": 2, "hours": None}],
        },
    ),
)
ATTRIBUTES = (POLICY, SERVICE)
ATTRIBUTE_PLAN = Plan(id=Plan.make_id(ATTRIBUTES), changes=ATTRIBUTES)


def test_attribute_changes_round_trip_and_their_approval_digest_is_what_the_apply_checks(
    ledger: Ledger,  # noqa: F811 (the fixture imported above)
) -> None:
    recorded = ledger.record_plan(ATTRIBUTE_PLAN)
    read_back = ledger.get_plan(ATTRIBUTE_PLAN.id)

    assert recorded.plan == read_back == ATTRIBUTE_PLAN
    assert [json.loads(body) for body in stored_bodies(ledger, ATTRIBUTE_PLAN.id)] == [
        c.body() for c in ATTRIBUTES
    ]
    assert read_back.changes[1].field("auto_resolve_timeout") == FieldChange(
        name="auto_resolve_timeout", before=14400, after=None
    )
    approval = ledger.approve(ATTRIBUTE_PLAN.id, approver="alice")
    some = ledger.approve(ATTRIBUTE_PLAN.id, approver="alice", change_ids=[SERVICE.id])
    # What the apply recomputes from the ledger's rows before it writes anything.
    assert approval.digest == changes_digest(read_back.id, read_back.changes)
    assert some.digest == changes_digest(
        read_back.id, [c for c in read_back.changes if c.id in some.change_ids]
    )
    edited = SERVICE.model_copy(
        update={"fields": (*SERVICE.fields[:2], SERVICE.fields[2].model_copy(update={"after": None}))}
    )
    assert changes_digest(read_back.id, [edited]) != some.digest, "every value written is covered"


def test_the_audit_names_what_each_change_wrote_and_reads_membership_changes_as_before(
    ledger: Ledger,  # noqa: F811 (the fixture imported above)
) -> None:
    attribute = ledger.approve(ledger.record_plan(ATTRIBUTE_PLAN).plan.id, approver="alice")
    for change, status in ((POLICY, "applied"), (SERVICE, "blocked")):
        ledger.mark_pending(ATTRIBUTE_PLAN.id, attribute.id, [change.id], "run-1")
        ledger.record_outcome(
            ATTRIBUTE_PLAN.id, change.id, status=status, approval_id=attribute.id, run_id="run-1"
        )
    membership = ledger.approve(ledger.record_plan(MEMBERSHIP_PLAN).plan.id, approver="alice")
    ledger.mark_pending(MEMBERSHIP_PLAN.id, membership.id, PINNED_CHANGE_IDS[1:3], "run-2")
    for change_id in PINNED_CHANGE_IDS[1:3]:
        ledger.record_outcome(
            MEMBERSHIP_PLAN.id, change_id, status="applied", approval_id=membership.id, run_id="run-2"
        )

    assert [(o.kind, o.subject) for o in ledger.outcomes(ATTRIBUTE_PLAN.id)] == [
        (ChangeKind.UPDATE_ESCALATION_POLICY, "payments/Payments (critical)"),
        (ChangeKind.UPDATE_SERVICE, "payments/Payment API"),
    ]
    result = CliRunner().invoke(main, ["audit"], env={"NTHLAYER_LEDGER_URL": ledger.url})

    assert result.exit_code == 0, result.output
    lines = [line.split("  ", 1)[1] for line in result.output.splitlines()]  # without the time
    by_membership = f"[{MEMBERSHIP_PLAN.id} {membership.id}]"
    by_attribute = f"[{ATTRIBUTE_PLAN.id} {attribute.id}]"
    assert lines == [
        f"applied  set_role       payments bob@example.com responder  {by_membership}",
        f"applied  add_member     payments carol@example.com responder  {by_membership}",
        f"blocked  update_service payments/Payment API  {by_attribute}",
        f"applied  update_escalation_policy payments/Payments (critical)  {by_attribute}",
    ]
