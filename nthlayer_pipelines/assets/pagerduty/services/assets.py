"""The services kind in the UI: PagerDuty's services, policies and schedules as read, and how they
differ from their tiers' standards."""

from typing import TYPE_CHECKING, Any

import dagster as dg

from nthlayer_pipelines.assets.pagerduty.services.compare import (
    ObservedServices,
    StandardsComparison,
    TeamContext,
    compare_standards,
)
from nthlayer_pipelines.assets.pagerduty.services.refresh import refresh_services
from nthlayer_pipelines.assets.pagerduty.snapshot import POOL, account_label, run_refresh
from nthlayer_pipelines.assets.pagerduty.teams.compare import resolve_teams
from nthlayer_pipelines.assets.pagerduty.teams.lookups import looked_up_or_refused
from nthlayer_pipelines.assets.tables import Table
from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import DesiredState, normalize_email
from nthlayer_pipelines.core.plan import describe_change
from nthlayer_pipelines.resources.ledger import LedgerResource
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.resources.settings import ReconcileSettings

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")


@dg.asset(
    group_name="observed",
    kinds={"pagerduty"},
    pool=POOL,
    description=(
        "PagerDuty's services, escalation policies and schedules, when the definitions declare any Service "
        "(else nothing is read: there is no standard to hold a service to). Incremental between full reads: "
        "the audit records of services, policies and schedules since the last refresh, then only the objects "
        "they name; in full on the first refresh, when the audit records are refused or too far back, when "
        "the stored snapshot is of another account, every full_refresh_every_hours, and in the nightly audit."
    ),
)
def pagerduty_services(
    context: dg.AssetExecutionContext,
    pagerduty: PagerDutyResource,
    ledger: LedgerResource,
    desired_state: DesiredState,
) -> dg.Output[ObservedServices]:
    if not desired_state.services:
        context.log.info("no Service is declared: PagerDuty's services are not read")
        return dg.Output(ObservedServices(), metadata={"read": False, "api_calls": 0})
    refresh = run_refresh(refresh_services, context, pagerduty, ledger)
    observed = refresh.state
    context.log.info(
        "%s refresh of services of %s (%s): %d API calls, %d audit records, %d objects read again",
        refresh.decision.mode.value,
        account_label(refresh.account),
        refresh.decision.reason,
        refresh.api_calls,
        refresh.audit_records_read,
        refresh.objects_reread,
    )
    metadata: dict[str, Any] = {
        "read": True,
        "services": len(observed.services),
        "escalation_policies": len(observed.policies),
        "schedules": len(observed.schedules),
        "refresh": refresh.decision.mode.value,
        "refresh_reason": refresh.decision.reason,
        "api_calls": refresh.api_calls,
        "audit_records_read": refresh.audit_records_read,
        "objects_reread": refresh.objects_reread,
        "probe_api_calls": refresh.probe_api_calls,  # included in api_calls
        "account": account_label(refresh.account),
        "snapshot_stored": refresh.stored,
    }
    if not refresh.decision.full:
        metadata["kinds_relisted"] = ", ".join(refresh.kinds_relisted)
        metadata["drift_records"] = refresh.drift_records
        metadata["own_write_records"] = refresh.own_write_records
    return dg.Output(observed, metadata=metadata)


def team_contexts(desired: DesiredState, teams: Table, users: Table) -> dict[str, TeamContext]:
    """What the membership snapshot says of each declared team: its PagerDuty team and users by email."""
    resolved = resolve_teams(desired, teams)
    known = users.dropna(subset=["email"])
    user_ids = {
        normalize_email(str(e)): str(i) for e, i in zip(known["email"], known["user_id"], strict=True)
    }
    return {
        team.name: TeamContext(
            team_id=resolved[team.name].team_id,
            team_name=resolved[team.name].pagerduty_name or team.display_name,
            user_ids={m.email: user_ids[m.email] for m in team.members if m.email in user_ids},
        )
        for team in desired.teams
    }


@dg.asset(
    group_name="reconcile",
    kinds={"python"},
    description=(
        "How PagerDuty's services and their teams' escalation policies differ from their tiers' standards: "
        "the changes that bring them there and the findings a person should read; a pure function but, on "
        "an account whose users were read through their teams, for the lookups of the desired emails on no "
        "team (as `divergences` does)."
    ),
)
def service_standards(
    reconcile: ReconcileSettings,
    pagerduty: PagerDutyResource,
    desired_state: DesiredState,
    pagerduty_services: ObservedServices,
    pagerduty_teams: Table,
    pagerduty_users: Table,
) -> dg.Output[StandardsComparison]:
    scope = set(reconcile.teams)  # the launchpad's scope: only these teams' services, as for membership
    desired = desired_state
    if scope:
        desired = desired_state.model_copy(
            update={"services": tuple(s for s in desired_state.services if s.team in scope)}
        )
    # A standard that pages a team's manager targets them by id, on a team yet or not.
    lookups = looked_up_or_refused(pagerduty, desired_state, pagerduty_users, scope)
    contexts = team_contexts(desired, pagerduty_teams, lookups.users)
    result = compare_standards(desired, pagerduty_services, contexts)
    if scope:
        result.findings = [f for f in result.findings if f.team in scope]
    lines = [describe_change(c) for c in result.changes[:50]]
    lines += [f"! {f.kind.value} {f.subject or ''}: {f.detail}" for f in result.findings[:50]]
    return dg.Output(
        result,
        metadata={
            "change_count": len(result.changes),
            "finding_count": len(result.findings),
            **lookups.metadata(),
            "preview": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines) or "Nothing differs."),
        },
    )
