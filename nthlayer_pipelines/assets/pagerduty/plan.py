"""PagerDuty's plan: every PagerDuty kind's changes in one plan, what one apply writes through one client
and one rate limit, recorded in the ledger with its blast-radius verdict and the policy's approval."""

from typing import TYPE_CHECKING

import dagster as dg

from nthlayer_pipelines.assets.pagerduty.services.compare import StandardsComparison
from nthlayer_pipelines.assets.tables import Table
from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import DesiredState, Plan
from nthlayer_pipelines.core.plan import build_plan, plan_summary, render_plan_markdown, with_changes
from nthlayer_pipelines.core.policy import over_volume_cap, pre_approved_changes
from nthlayer_pipelines.core.safety import (
    assess_blast_radius,
    rosters_as_json,
    rosters_from_memberships,
)
from nthlayer_pipelines.resources.ledger import LedgerResource
from nthlayer_pipelines.resources.settings import ReconcileSettings
from nthlayer_pipelines.ui_links import (
    DEFAULT_LOCATION,
    approval_config_yaml,
    approval_markdown,
    launchpad_link,
)

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")


@dg.asset(
    group_name="reconcile",
    kinds={"python"},
    description=(
        "The ordered, reviewable plan of changes, stored with its stable id and blast-radius verdict in the "
        "ledger. Pre-approved kinds (by default additions and team creations) are approved by policy here."
    ),
)
def change_plan(
    context: dg.AssetExecutionContext,
    ledger: LedgerResource,
    reconcile: ReconcileSettings,
    divergences: Table,
    desired_state: DesiredState,
    pagerduty_memberships: Table,
    service_standards: StandardsComparison,
) -> dg.Output[Plan]:
    membership = build_plan(divergences, desired_state)
    computed = with_changes(membership, service_standards.changes, service_standards.findings)
    rosters = rosters_from_memberships(pagerduty_memberships)
    verdict = assess_blast_radius(computed, rosters, reconcile.blast_radius_limits())
    policy = reconcile.approval_policy()
    held = over_volume_cap(computed, policy)
    with ledger.open() as store:
        if ledger.read_only:  # `nthlayer plan`: the instance a refresh would record, nothing recorded
            recorded = store.preview_plan(computed)
        else:
            recorded = store.record_plan(
                computed, run_id=context.run_id, blast_radius=verdict, basis=rosters_as_json(rosters)
            )
        plan = recorded.plan  # the instance: a drift seen again after it was applied or rejected is new
        pre_approved = pre_approved_changes(plan, policy)
        policy_approval = None
        if pre_approved and not verdict.exceeded and not ledger.read_only:
            # Once per plan, however many refreshes see it at once: checked in the approval's transaction.
            policy_approval = store.approve_by_policy(
                plan.id,
                change_ids=[c.id for c in pre_approved],
                limits=reconcile.blast_radius_limits(),
                comment=f"pre-approved kinds: {reconcile.pre_approved_kinds}",
            )
    context.log.info("plan %s: %d changes, %d findings", plan.id, len(plan.changes), len(plan.findings))
    for reason in verdict.reasons:
        context.log.warning("blast radius: %s", reason)
    if held:
        context.log.warning("pre-approval: %s", held)
    for finding in plan.blocking_findings:
        context.log.warning("blocked: %s: %s", finding.team, finding.detail)
    return dg.Output(
        plan,
        metadata={
            "plan_id": plan.id,
            "recorded": not ledger.read_only,
            "new_plan": recorded.new,
            "plan_generation": recorded.generation,
            "previous_plan_id": recorded.previous_id or "",
            "held_back_changes": len(recorded.held_back),
            **plan_summary(plan),
            "blast_radius_exceeded": verdict.exceeded,
            "blast_radius": dg.MetadataValue.md(
                "\n".join(f"- {r}" for r in verdict.reasons) or "within limits"
            ),
            "pre_approved_changes": len(policy_approval.change_ids) if policy_approval else 0,
            "policy_approval_id": policy_approval.id if policy_approval else "",
            "pre_approval_held": held or "within the volume cap",
            **_approval_metadata(context, plan, recorded=not ledger.read_only, exceeded=verdict.exceeded),
        },
    )


def _approval_metadata(
    context: dg.AssetExecutionContext, plan: Plan, *, recorded: bool, exceeded: bool
) -> dict[str, dg.MetadataValue]:
    """The plan's approval ready to launch: the preview with the approval at its foot, a link opening the
    launchpad holding the config, and the config itself. A plan not recorded (`nthlayer plan`) or without
    changes cannot be approved, and says so."""
    if not plan.changes or not recorded:
        nothing = "nothing to approve: " + ("no changes" if recorded else "the plan is not recorded")
        return {"plan": dg.MetadataValue.md(render_plan_markdown(plan)), "approve_config": nothing}
    config = approval_config_yaml(plan, blast_radius_exceeded=exceeded)
    origin = context.run.remote_job_origin  # None in a run executed in process, as tests do
    link = launchpad_link(config, location=origin.location_name if origin else DEFAULT_LOCATION)
    return {
        "plan": dg.MetadataValue.md(render_plan_markdown(plan, approval=approval_markdown(config, link))),
        "approve_in_launchpad": dg.MetadataValue.md(f"[Approve in the launchpad]({link})"),
        "approve_config": dg.MetadataValue.md(f"```yaml\n{config}```"),
    }
