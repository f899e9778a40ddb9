"""The stored snapshot names the account it was read from (API URL, subdomain, listing totals).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nthlayer_observed_snapshot") as table:
        table.add_column(sa.Column("account", sa.JSON, nullable=True))
