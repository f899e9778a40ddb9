"""Checks of PagerDuty's plan: within the blast radius, and every team identified."""

from typing import TYPE_CHECKING

import dagster as dg

from nthlayer_pipelines.assets.tables import Table
from nthlayer_pipelines.assets.verdicts import verdict
from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import Plan
from nthlayer_pipelines.core.safety import assess_blast_radius, rosters_from_memberships
from nthlayer_pipelines.resources.settings import ReconcileSettings

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")


@dg.asset_check(
    asset="change_plan",
    additional_ins={"pagerduty_memberships": dg.AssetIn("pagerduty_memberships")},
    blocking=True,
    description=(
        "The plan removes no more than the blast-radius limits allow and leaves every team a manager and a "
        "member; a plan over them is never applied unless its approval says allow_blast_radius: true."
    ),
)
def change_plan_within_blast_radius(
    reconcile: ReconcileSettings, change_plan: Plan, pagerduty_memberships: Table
) -> dg.AssetCheckResult:
    radius = assess_blast_radius(
        change_plan, rosters_from_memberships(pagerduty_memberships), reconcile.blast_radius_limits()
    )
    return verdict(radius.reasons, "within limits", plan_id=change_plan.id, removals=radius.removals)


@dg.asset_check(
    asset="change_plan",
    blocking=True,
    description=(
        "Every team's PagerDuty team is known: a team whose name several PagerDuty teams carry gets no "
        "changes until a person pins it; the other teams' changes are planned as usual."
    ),
)
def change_plan_identifies_every_team(change_plan: Plan) -> dg.AssetCheckResult:
    blocked = change_plan.blocking_findings
    return verdict(
        [f"{f.team}: {f.detail}" for f in blocked],
        "every team identified",
        plan_id=change_plan.id,
        blocked_team_count=len(blocked),
        teams=", ".join(f.team or "" for f in blocked[:50]),
        blocked=dg.MetadataValue.md(
            "\n".join(f"- **{f.team}**: {f.detail}" for f in blocked[:50]) or "every team identified"
        ),
    )


BLAST_RADIUS_CHECK = "change_plan_within_blast_radius"  # `nthlayer plan` exits 3 when it alone fails
