"""The ledger's tables as this version of nthlayer writes them: the head of its migrations.

A change here comes with a migration under `migrations/versions/` that takes a ledger from the previous
revision to this shape (`nthlayer db upgrade`); `tests/integration/test_ledger_migrations.py` checks that the
two agree, on SQLite and Postgres.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

SUBJECT_LENGTH = 500  # of an outcome's subject: what the audit shows, cut to this when longer

plans = sa.Table(
    "nthlayer_plans",
    metadata,
    sa.Column("plan_id", sa.String(40), primary_key=True),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_run_id", sa.String(64)),
    sa.Column("change_count", sa.Integer, nullable=False),
    sa.Column("finding_count", sa.Integer, nullable=False),
    sa.Column("findings", sa.JSON, nullable=False),
    # A plan is an instance: the same changes seen again after an instance was applied, rejected or
    # superseded make a new one (`generation` + 1, `previous_plan_id` its predecessor). `content_id` is
    # what the instances of the same drift share.
    sa.Column("content_id", sa.String(40), nullable=False, index=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("previous_plan_id", sa.String(40)),
    # Changes the policy does not pre-approve: a person rejected the same drift and it has not gone away.
    sa.Column("held_back", sa.JSON, nullable=False),
    # The teams' rosters the plan was computed against, which its blast radius is judged on at approval.
    sa.Column("basis", sa.JSON),
    # Whose plan it is: one apply writes it through one client. The latest plan is the latest of its
    # provider, so another provider's plan never supersedes it (revision 0005).
    sa.Column("provider", sa.String(40), nullable=False),
)

plan_changes = sa.Table(
    "nthlayer_plan_changes",
    metadata,
    sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), primary_key=True),
    sa.Column("change_id", sa.String(40), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
)

plan_sightings = sa.Table(
    "nthlayer_plan_sightings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), nullable=False),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64)),
)

plan_blast_radius = sa.Table(
    "nthlayer_plan_blast_radius",
    metadata,
    sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), primary_key=True),
    sa.Column("exceeded", sa.Boolean, nullable=False),
    sa.Column("removals", sa.Integer, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("assessed_at", sa.DateTime(timezone=True), nullable=False),
)

approvals = sa.Table(
    "nthlayer_approvals",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("approval_id", sa.String(20), nullable=False, unique=True),
    sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), nullable=False, index=True),
    sa.Column("approver", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("change_ids", sa.JSON, nullable=False),
    sa.Column("allow_blast_radius", sa.Boolean, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # sha256 of the approved changes as recorded (`store.changes_digest`); the apply recomputes it and
    # refuses a plan whose rows changed since. Null for approvals recorded before revision 0003.
    sa.Column("digest", sa.String(64)),
)

change_outcomes = sa.Table(
    "nthlayer_change_outcomes",
    metadata,
    sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), primary_key=True),
    sa.Column("change_id", sa.String(40), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("team", sa.String(200), nullable=False, index=True),
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
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, index=True),
    # The change's provider, and what it is about (`Change.subject`: `payments/alice@example.com`,
    # `payments/Payment API`), for the audit (revision 0005).
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("subject", sa.String(SUBJECT_LENGTH)),
)

refresh_cursors = sa.Table(
    "nthlayer_refresh_cursor",
    metadata,
    sa.Column("provider", sa.String(40), primary_key=True),
    sa.Column("cursor_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_record_id", sa.String(200)),
    sa.Column("seen_record_ids", sa.JSON, nullable=False),
    sa.Column("last_full_refresh_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# The observed snapshot an incremental refresh patches: one row per provider, replaced with its cursor.
observed_snapshots = sa.Table(
    "nthlayer_observed_snapshot",
    metadata,
    sa.Column("provider", sa.String(40), primary_key=True),
    sa.Column("users", sa.JSON, nullable=False),
    sa.Column("teams", sa.JSON, nullable=False),
    sa.Column("memberships", sa.JSON, nullable=False),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
    # The account the snapshot was read from and its listing totals then (null before revision 0002):
    # an incremental refresh trusts the snapshot only for the same account, still holding as many.
    sa.Column("account", sa.JSON),
)

# The services kind's snapshot (services, escalation policies, schedules, as their models dump them), the
# account it was read from, and the cursor its next incremental refresh reads audit records from: one row
# per provider, replaced whole (revision 0006).
services_snapshots = sa.Table(
    "nthlayer_services_snapshot",
    metadata,
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

# Every attempt at every approved change, append-only: a row when an attempt starts (pending) and one
# with its outcome. `nthlayer_change_outcomes` holds where each change stands now; this, how it got there.
change_attempts = sa.Table(
    "nthlayer_change_attempts",
    metadata,
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
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Index("ix_nthlayer_change_attempts_change", "plan_id", "change_id"),
)

# What the deployment's IO manager stores (`resources/io_manager.py`): each asset's latest output, pickled,
# so a run in a pod of its own reads what a run in another pod wrote. One row per asset and partition
# ("" when unpartitioned), replaced whole; an op's output is keyed by its run, step and output name.
asset_outputs = sa.Table(
    "nthlayer_asset_outputs",
    metadata,
    sa.Column("asset_key", sa.String(500), primary_key=True),
    sa.Column("partition_key", sa.String(255), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("python_type", sa.String(200), nullable=False),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
)
