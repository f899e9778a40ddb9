"""`nthlayer_asset_outputs`: the outputs of assets, pickled, for the deployment's IO manager
(`NTHLAYER_IO_MANAGER=ledger`), so that runs in pods of their own hand values to each other.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nthlayer_asset_outputs",
        sa.Column("asset_key", sa.String(500), primary_key=True),
        sa.Column("partition_key", sa.String(255), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("python_type", sa.String(200), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    )
