"""The ledger as release 20173e0 wrote it, before it had migrations: plans, their changes and sightings,
blast-radius verdicts, approvals, the intent log, refresh cursors and the stored snapshot.

A ledger that release created has these tables and no version table: `migrate` stamps it at this revision
before upgrading it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nthlayer_plans",
        sa.Column("plan_id", sa.String(40), primary_key=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_id", sa.String(64)),
        sa.Column("change_count", sa.Integer, nullable=False),
        sa.Column("finding_count", sa.Integer, nullable=False),
        sa.Column("findings", sa.JSON, nullable=False),
    )
    op.create_table(
        "nthlayer_plan_changes",
        sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), primary_key=True),
        sa.Column("change_id", sa.String(40), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_table(
        "nthlayer_plan_sightings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(64)),
    )
    op.create_table(
        "nthlayer_plan_blast_radius",
        sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), primary_key=True),
        sa.Column("exceeded", sa.Boolean, nullable=False),
        sa.Column("removals", sa.Integer, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("assessed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "nthlayer_approvals",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("approval_id", sa.String(20), nullable=False, unique=True),
        sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), nullable=False),
        sa.Column("approver", sa.String(200), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("change_ids", sa.JSON, nullable=False),
        sa.Column("allow_blast_radius", sa.Boolean, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_nthlayer_approvals_plan_id", "nthlayer_approvals", ["plan_id"])
    op.create_table(
        "nthlayer_change_outcomes",
        sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), primary_key=True),
        sa.Column("change_id", sa.String(40), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("team_name", sa.String(200), nullable=False),
        sa.Column("team_id", sa.String(40)),
        sa.Column("email", sa.String(320)),
        sa.Column("user_id", sa.String(40)),
        sa.Column("role", sa.String(16)),
        sa.Column("from_role", sa.String(16)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("approval_id", sa.String(20)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("api_calls", sa.Integer, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_nthlayer_change_outcomes_team", "nthlayer_change_outcomes", ["team"])
    op.create_index("ix_nthlayer_change_outcomes_updated_at", "nthlayer_change_outcomes", ["updated_at"])
    op.create_table(
        "nthlayer_refresh_cursor",
        sa.Column("provider", sa.String(40), primary_key=True),
        sa.Column("cursor_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_record_id", sa.String(200)),
        sa.Column("seen_record_ids", sa.JSON, nullable=False),
        sa.Column("last_full_refresh_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "nthlayer_observed_snapshot",
        sa.Column("provider", sa.String(40), primary_key=True),
        sa.Column("users", sa.JSON, nullable=False),
        sa.Column("teams", sa.JSON, nullable=False),
        sa.Column("memberships", sa.JSON, nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
    )
