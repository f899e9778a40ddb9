"""Membership in the UI: every way PagerDuty's teams differ from the desired ones."""

from typing import TYPE_CHECKING

import dagster as dg

from nthlayer_pipelines.assets.pagerduty.teams.compare import TeamIdentityConflict, compute_divergences
from nthlayer_pipelines.assets.pagerduty.teams.lookups import looked_up_or_refused
from nthlayer_pipelines.assets.tables import Table
from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import DesiredState, DivergenceKind
from nthlayer_pipelines.resources.pagerduty.observed import USERS_READ, ObservedState
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.resources.settings import ReconcileSettings

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")


@dg.asset(
    group_name="reconcile",
    kinds={"pandas"},
    description=(
        "Every way PagerDuty differs from the desired state, one row each; a pure function of its inputs "
        "but for one case: on an account whose users were read through their teams (`users_read`), the "
        "desired emails on no team are first looked up by email (`GET /users?query=`)."
    ),
)
def divergences(
    context: dg.AssetExecutionContext,
    reconcile: ReconcileSettings,
    pagerduty: PagerDutyResource,
    desired_state: DesiredState,
    pagerduty_users: Table,
    pagerduty_teams: Table,
    pagerduty_memberships: Table,
) -> dg.Output[Table]:
    scope = set(reconcile.teams)
    unknown = sorted(scope - {t.name for t in desired_state.teams})
    if unknown:
        raise dg.Failure(f"team filter names teams that no source declares: {', '.join(unknown)}")
    lookups = looked_up_or_refused(pagerduty, desired_state, pagerduty_users, scope)
    observed = ObservedState(users=lookups.users, teams=pagerduty_teams, memberships=pagerduty_memberships)
    try:
        frame = compute_divergences(desired_state, observed, scope=scope)
    except TeamIdentityConflict as conflict:
        # Nothing is planned: whichever definition a plan followed, it would undo the other's team.
        raise dg.Failure(
            description=f"two definitions resolve to one PagerDuty team; nothing is planned\n{conflict}",
            metadata={"conflicts": dg.MetadataValue.md(f"```\n{conflict}\n```")},
        ) from conflict
    frame.attrs[USERS_READ] = lookups.users_read  # for the unresolved-users check to say
    by_kind = frame["kind"].value_counts()
    if scope:
        context.log.info("scoped to teams: %s", ", ".join(sorted(scope)))
    return dg.Output(
        frame,
        metadata={
            "divergence_count": len(frame),
            **{f"{kind.value}_count": int(by_kind.get(kind.value, 0)) for kind in DivergenceKind},
            "scope": ", ".join(sorted(scope)) or "all teams",
            **lookups.metadata(),
            "preview": dg.MetadataValue.md(frame.head(50).fillna("").to_markdown(index=False))
            if len(frame)
            else dg.MetadataValue.md("No divergences."),
        },
    )
