"""Jobs: the refresh (snapshots, divergences, plan; read-only) and the nightly audit."""

from __future__ import annotations

import dagster as dg

READ_ONLY_ASSETS = dg.AssetSelection.groups("desired", "observed", "reconcile")

refresh_job = dg.define_asset_job(
    "refresh",
    selection=READ_ONLY_ASSETS,
    description=(
        "Snapshot every source and provider, compute divergences and the change plan. Read-only: "
        "nothing is written to any provider. Scope it to some teams with resources.reconcile.config.teams."
    ),
    tags={"nthlayer/mode": "refresh"},
)

nightly_audit_job = dg.define_asset_job(
    "nightly_audit",
    selection=READ_ONLY_ASSETS,
    description="A full read-only pass over the whole account with every check, for the audit trail.",
    tags={"nthlayer/mode": "audit"},
)
