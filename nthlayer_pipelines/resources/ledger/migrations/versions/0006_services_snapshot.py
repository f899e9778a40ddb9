"""`nthlayer_services_snapshot`: PagerDuty's services, escalation policies and schedules as the last refresh
read them, with the account they were read from and the cursor of the next incremental refresh, in one
row per provider (a refresh replaces it whole, so the snapshot and its cursor never disagree).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nthlayer_services_snapshot",
        sa.Column("provider", sa.String(40), primary_key=True),
        sa.Column("services", sa.JSON, nullable=False),
        sa.Column("escalation_policies", sa.JSON, nullable=False),
        sa.Column("schedules", sa.JSON, nullable=False),
        sa.Column("account", sa.JSON, nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cursor_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_record_id", sa.String(200)),
        sa.Column("seen_record_ids", sa.JSON, nullable=False),
        sa.Column("last_full_refresh_at", sa.DateTime(timezone=True), nullable=False),
    )
