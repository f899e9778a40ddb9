"""Divergences between desired and observed state, and the change plan they call for."""

import dagster as dg
import pandas as pd

from nthlayer_pipelines.model import DesiredState, DivergenceKind, Plan
from nthlayer_pipelines.reconcile.diff import compute_divergences
from nthlayer_pipelines.reconcile.observed import ObservedState
from nthlayer_pipelines.reconcile.plan import build_plan, plan_summary, render_plan_markdown
from nthlayer_pipelines.resources.ledger import LedgerResource
from nthlayer_pipelines.resources.settings import ReconcileSettings


@dg.asset(
    group_name="reconcile",
    kinds={"pandas"},
    description="Every way PagerDuty differs from the desired state, one row each; a pure function.",
)
def divergences(
    context: dg.AssetExecutionContext,
    reconcile: ReconcileSettings,
    desired_state: DesiredState,
    pagerduty_users: pd.DataFrame,
    pagerduty_teams: pd.DataFrame,
    pagerduty_memberships: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    scope = set(reconcile.teams)
    unknown = sorted(scope - {t.name for t in desired_state.teams})
    if unknown:
        raise dg.Failure(f"team filter names teams that no source declares: {', '.join(unknown)}")
    observed = ObservedState(users=pagerduty_users, teams=pagerduty_teams, memberships=pagerduty_memberships)
    frame = compute_divergences(desired_state, observed, scope=scope)
    by_kind = frame["kind"].value_counts()
    if scope:
        context.log.info("scoped to teams: %s", ", ".join(sorted(scope)))
    return dg.Output(
        frame,
        metadata={
            "divergence_count": len(frame),
            **{f"{kind.value}_count": int(by_kind.get(kind.value, 0)) for kind in DivergenceKind},
            "scope": ", ".join(sorted(scope)) or "all teams",
            "preview": dg.MetadataValue.md(frame.head(50).fillna("").to_markdown(index=False))
            if len(frame)
            else dg.MetadataValue.md("No divergences."),
        },
    )


@dg.asset(
    group_name="reconcile",
    kinds={"python"},
    description="The ordered, reviewable plan of changes, stored with its stable id in the ledger.",
)
def change_plan(
    context: dg.AssetExecutionContext,
    ledger: LedgerResource,
    divergences: pd.DataFrame,
    desired_state: DesiredState,
) -> dg.Output[Plan]:
    plan = build_plan(divergences, desired_state)
    store = ledger.open()
    try:
        is_new = store.record_plan(plan, run_id=context.run_id)
    finally:
        store.dispose()
    context.log.info("plan %s: %d changes, %d findings", plan.id, len(plan.changes), len(plan.findings))
    return dg.Output(
        plan,
        metadata={
            "plan_id": plan.id,
            "new_plan": is_new,
            **plan_summary(plan),
            "plan": dg.MetadataValue.md(render_plan_markdown(plan)),
        },
    )
