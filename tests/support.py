"""Values and helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from nthlayer_pipelines.core.model import Change, Plan
from nthlayer_pipelines.resources.pagerduty.observed import ObservedState
from nthlayer_pipelines.sandbox import (
    DEFAULT_CORTEX_TOKEN,
    DEFAULT_PAGERDUTY_TOKEN,
    DEFAULT_SLACK_TOKEN,
    RunningSandbox,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DEFINITIONS = REPO / "examples" / "org"
EXAMPLE_SEED = REPO / "examples" / "sandbox-seed.yaml"
ARTIFACTS = REPO / "test-artifacts"


def membership_definitions(tmp_path: Path) -> Path:
    """examples/org without its Services and Standards: team membership alone, the kind most tests are
    about (with no Service declared, PagerDuty's services are not even read). The full example is
    EXAMPLE_DEFINITIONS."""
    target = tmp_path / "membership-definitions"
    if not target.exists():
        shutil.copytree(
            EXAMPLE_DEFINITIONS, target, ignore=shutil.ignore_patterns("services", "standards.yaml")
        )
    return target


def pipeline_environment(sandbox, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """What a user exports to point the pipeline at the sandbox, with the example's membership alone unless
    `NTHLAYER_DEFINITIONS` says otherwise."""
    environ = {
        "PAGERDUTY_API_URL": sandbox.pagerduty_url,
        "PAGERDUTY_API_TOKEN": DEFAULT_PAGERDUTY_TOKEN,
        "CORTEX_API_URL": sandbox.cortex_url,
        "CORTEX_API_TOKEN": DEFAULT_CORTEX_TOKEN,
        "SLACK_API_URL": sandbox.slack_url,
        "SLACK_BOT_TOKEN": DEFAULT_SLACK_TOKEN,
        "NTHLAYER_SLACK_CHANNEL": "ops-changes",
        "NTHLAYER_DEFINITIONS": str(membership_definitions(tmp_path)),
        "NTHLAYER_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
    }
    environ.update(overrides)
    return environ


def change_row(change: Change) -> tuple[str, str, str | None, str | None, str | None]:
    """A change as (kind, team, email, role, from_role): the rows the expectations below are written in.
    An attribute change is (kind, team, the object's name, the fields it sets, None)."""
    if change.fields:
        return (
            change.kind.value,
            change.team,
            change.target_name,
            ",".join(f.name for f in change.fields),
            None,
        )
    role = change.role.value if change.role else None
    from_role = change.from_role.value if change.from_role else None
    return (change.kind.value, change.team, change.email, role, from_role)


def plan_rows(plan: Plan) -> list[tuple[str, str, str | None, str | None, str | None]]:
    return [change_row(change) for change in plan.changes]


# The plan the seeded drift calls for, in plan order: (kind, team, email, role, from_role) for membership,
# (kind, team, object, fields, None) for the services held to their tier's standard.
EXPECTED_EXAMPLE_CHANGES = [
    ("create_team", "search", None, None, None),
    ("add_member", "data-platform", "heidi@example.com", "responder", None),
    ("add_member", "payments", "carol@example.com", "responder", None),
    ("add_member", "search", "heidi@example.com", "manager", None),
    ("add_member", "search", "ivan@example.com", "responder", None),
    ("set_role", "payments", "bob@example.com", "responder", "observer"),
    ("remove_member", "payments", "mallory@example.com", None, "responder"),
]
EXPECTED_EXAMPLE_CHANGES_WITH_STANDARDS = [
    ("create_team", "search", None, None, None),
    ("create_escalation_policy", "checkout", "Checkout (high)", "num_loops,escalation_rules", None),
    ("create_escalation_policy", "payments", "Payments (critical)", "num_loops,escalation_rules", None),
    *EXPECTED_EXAMPLE_CHANGES[1:6],
    ("set_service_policy", "checkout", "Checkout Web", "escalation_policy", None),
    ("set_service_policy", "payments", "Payment API", "escalation_policy", None),
    ("set_service_policy", "payments", "Payment Webhooks", "escalation_policy", None),
    ("update_service", "checkout", "Checkout Web", "incident_urgency_rule,acknowledgement_timeout", None),
    ("update_service", "payments", "Payment API", "acknowledgement_timeout", None),
    ("update_service", "payments", "Payment Webhooks", "incident_urgency_rule,auto_resolve_timeout", None),
    EXPECTED_EXAMPLE_CHANGES[6],
]
EXPECTED_EXAMPLE_FINDINGS = [
    ("unmanaged_team", "Legacy Ops", None),
    ("unresolved_user", "platform", "oscar@example.com"),
]


def assert_same_snapshot(actual: ObservedState, expected: ObservedState) -> None:
    """The same users, teams and memberships, in whatever order they were read."""
    for frame, keys in (
        ("users", ["user_id"]),
        ("teams", ["team_id"]),
        ("memberships", ["team_id", "user_id"]),
    ):
        got = getattr(actual, frame).sort_values(keys).reset_index(drop=True)
        want = getattr(expected, frame).sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, obj=frame)


def drop_ledger(url: str) -> None:
    """Empty the database of every ledger table and the ledger's version table: the next open creates it."""
    import sqlalchemy as sa

    from nthlayer_pipelines.resources.ledger import metadata
    from nthlayer_pipelines.resources.ledger.migrate import VERSION_TABLE

    engine = sa.create_engine(url)
    try:
        metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {VERSION_TABLE}"))
    finally:
        engine.dispose()


def slack_messages(sandbox: RunningSandbox) -> list[str]:
    """The texts of the messages the sandbox's Slack received, oldest first."""
    return [m["text"] for m in sandbox.state.to_dict()["slack"]["messages"]]


PLAN_SCHEMA = REPO / "schemas" / "plan.schema.json"


def assert_plan_json_valid(payload: object) -> None:
    """`nthlayer plan --json`'s output holds to the schema in the repository, which readers code against."""
    import jsonschema

    schema = json.loads(PLAN_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(payload)
