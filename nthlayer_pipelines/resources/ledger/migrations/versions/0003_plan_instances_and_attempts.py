"""Plan instances, approval digests and the append-only attempts log.

- `nthlayer_plans` gains `content_id`, `generation`, `previous_plan_id`, `held_back` and `basis`: a plan
  recorded before is the first instance of its content (its id is its content id).
- `nthlayer_approvals` gains `digest` (null for earlier approvals: the apply refuses them, asking for a new
  approval, since what they approved cannot be proven unchanged).
- `nthlayer_change_attempts` is new; each intent-log row becomes its first recorded attempt, so the audit
  still lists every change applied before.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nthlayer_plans") as table:
        table.add_column(sa.Column("content_id", sa.String(40), nullable=True))
        table.add_column(sa.Column("generation", sa.Integer, nullable=True))
        table.add_column(sa.Column("previous_plan_id", sa.String(40)))
        table.add_column(sa.Column("held_back", sa.JSON, nullable=True))
        table.add_column(sa.Column("basis", sa.JSON))
    op.execute("UPDATE nthlayer_plans SET content_id = plan_id, generation = 1, held_back = '[]'")
    with op.batch_alter_table("nthlayer_plans") as table:
        table.alter_column("content_id", existing_type=sa.String(40), nullable=False)
        table.alter_column("generation", existing_type=sa.Integer, nullable=False)
        table.alter_column("held_back", existing_type=sa.JSON, nullable=False)
        table.create_index("ix_nthlayer_plans_content_id", ["content_id"])

    with op.batch_alter_table("nthlayer_approvals") as table:
        table.add_column(sa.Column("digest", sa.String(64)))

    op.create_table(
        "nthlayer_change_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), nullable=False),
        sa.Column("change_id", sa.String(40), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("approval_id", sa.String(20)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("api_calls", sa.Integer, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_nthlayer_change_attempts_recorded_at", "nthlayer_change_attempts", ["recorded_at"])
    op.create_index(
        "ix_nthlayer_change_attempts_change", "nthlayer_change_attempts", ["plan_id", "change_id"]
    )
    op.execute(
        "INSERT INTO nthlayer_change_attempts (plan_id, change_id, attempt, status, approval_id, run_id, "
        "api_calls, retries, error, detail, recorded_at) "
        "SELECT plan_id, change_id, attempts, status, approval_id, run_id, api_calls, retries, error, "
        "detail, updated_at FROM nthlayer_change_outcomes"
    )
