"""Plans per provider, and outcomes that name what they changed.

- `nthlayer_plans` gains `provider`: a plan is what one apply writes through one client, and the latest
  plan is the latest of its provider. A plan recorded before is its changes' provider (PagerDuty, unless a
  change's body names another).
- `nthlayer_change_outcomes` gains `provider` (its change's) and `subject` (what the change is about, as
  `Change.subject` says it): `team/email` (or `team/user_id`) for a membership change, `team/name` of the
  service or policy an attribute change writes.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DEFAULT_PROVIDER = "pagerduty"
MEMBERSHIP_KINDS = ("create_team", "add_member", "set_role", "remove_member")
SUBJECT_LENGTH = 500

# The columns this migration reads and writes, as they stand at this revision.
_plans = sa.table("nthlayer_plans", sa.column("plan_id"), sa.column("provider"))
_changes = sa.table(
    "nthlayer_plan_changes", sa.column("plan_id"), sa.column("change_id"), sa.column("body", sa.JSON)
)
_outcomes = sa.table(
    "nthlayer_change_outcomes",
    sa.column("plan_id"),
    sa.column("change_id"),
    sa.column("kind"),
    sa.column("team"),
    sa.column("provider"),
    sa.column("subject"),
)


def upgrade() -> None:
    with op.batch_alter_table("nthlayer_plans") as table:
        table.add_column(sa.Column("provider", sa.String(40), nullable=True))
    with op.batch_alter_table("nthlayer_change_outcomes") as table:
        table.add_column(sa.Column("provider", sa.String(40), nullable=True))
        table.add_column(sa.Column("subject", sa.String(SUBJECT_LENGTH), nullable=True))

    # Every change recorded so far is a membership change or an attribute change, PagerDuty's unless its
    # body names another provider (a body leaves the provider out at its default).
    op.execute(f"UPDATE nthlayer_plans SET provider = '{DEFAULT_PROVIDER}'")
    op.execute(
        f"UPDATE nthlayer_change_outcomes SET provider = '{DEFAULT_PROVIDER}', subject = SUBSTR("
        "CASE WHEN COALESCE(email, user_id) IS NULL THEN team ELSE team || '/' || COALESCE(email, user_id) "
        f"END, 1, {SUBJECT_LENGTH})"
    )
    connection = op.get_bind()
    _providers_named_in_bodies(connection)
    _subjects_of_attribute_changes(connection)

    with op.batch_alter_table("nthlayer_plans") as table:
        table.alter_column("provider", existing_type=sa.String(40), nullable=False)
    with op.batch_alter_table("nthlayer_change_outcomes") as table:
        table.alter_column("provider", existing_type=sa.String(40), nullable=False)


def _providers_named_in_bodies(connection: sa.Connection) -> None:
    """A change whose body names a provider other than the default: its plan and its outcome are that
    provider's. The text match only narrows the rows read; each body is parsed to decide."""
    named = sa.select(_changes.c.plan_id, _changes.c.change_id, _changes.c.body).where(
        sa.cast(_changes.c.body, sa.Text).like('%"provider"%')
    )
    for plan_id, change_id, body in connection.execute(named).all():
        provider = _body(body).get("provider")
        if not isinstance(provider, str) or provider == DEFAULT_PROVIDER:
            continue
        connection.execute(_plans.update().where(_plans.c.plan_id == plan_id).values(provider=provider))
        connection.execute(
            _outcomes.update()
            .where(_outcomes.c.plan_id == plan_id, _outcomes.c.change_id == change_id)
            .values(provider=provider)
        )


def _subjects_of_attribute_changes(connection: sa.Connection) -> None:
    """An outcome of a change that is not a membership change is about the object it writes: its name, or
    its id when the body has no name."""
    attribute = (
        sa.select(_outcomes.c.plan_id, _outcomes.c.change_id, _outcomes.c.team, _changes.c.body)
        .join(
            _changes,
            sa.and_(_changes.c.plan_id == _outcomes.c.plan_id, _changes.c.change_id == _outcomes.c.change_id),
        )
        .where(_outcomes.c.kind.not_in(MEMBERSHIP_KINDS))
    )
    for plan_id, change_id, team, body in connection.execute(attribute).all():
        stored = _body(body)
        target = stored.get("target_name") or stored.get("target_id")
        subject = f"{team}/{target}" if target else team
        connection.execute(
            _outcomes.update()
            .where(_outcomes.c.plan_id == plan_id, _outcomes.c.change_id == change_id)
            .values(subject=subject[:SUBJECT_LENGTH])
        )


def _body(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
