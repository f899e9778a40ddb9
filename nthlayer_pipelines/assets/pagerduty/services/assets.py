"""The services kind in the UI: PagerDuty's services, policies and schedules as read, and how they
differ from their tiers' standards."""

import dagster as dg
import pandas as pd

from nthlayer_pipelines.assets.pagerduty.services.compare import (
    ObservedServices,
    StandardsComparison,
    TeamContext,
    compare_standards,
)
from nthlayer_pipelines.assets.pagerduty.snapshot import POOL
from nthlayer_pipelines.assets.pagerduty.teams.compare import resolve_teams
from nthlayer_pipelines.core.model import DesiredState, normalize_email
from nthlayer_pipelines.core.plan import describe_change
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.resources.settings import ReconcileSettings


@dg.asset(
    group_name="observed",
    kinds={"pagerduty"},
    pool=POOL,
    description=(
        "PagerDuty's services, escalation policies and schedules, read in full when the definitions declare "
        "any Service (else nothing is read: there is no standard to hold a service to)."
    ),
)
def pagerduty_services(
    context: dg.AssetExecutionContext, pagerduty: PagerDutyResource, desired_state: DesiredState
) -> dg.Output[ObservedServices]:
    if not desired_state.services:
        context.log.info("no Service is declared: PagerDuty's services are not read")
        return dg.Output(ObservedServices(), metadata={"read": False, "api_calls": 0})
    with pagerduty.client() as client:
        calls = client.api_calls
        observed = ObservedServices(
            services=tuple(client.list_services()),
            policies=tuple(client.list_escalation_policies()),
            schedules=tuple(client.list_schedules()),
        )
        calls = client.api_calls - calls
    return dg.Output(
        observed,
        metadata={
            "read": True,
            "services": len(observed.services),
            "escalation_policies": len(observed.policies),
            "schedules": len(observed.schedules),
            "api_calls": calls,
        },
    )


def team_contexts(desired: DesiredState, teams: pd.DataFrame, users: pd.DataFrame) -> dict[str, TeamContext]:
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
        "the changes that bring them there and the findings a person should read; a pure function."
    ),
)
def service_standards(
    reconcile: ReconcileSettings,
    desired_state: DesiredState,
    pagerduty_services: ObservedServices,
    pagerduty_teams: pd.DataFrame,
    pagerduty_users: pd.DataFrame,
) -> dg.Output[StandardsComparison]:
    scope = set(reconcile.teams)  # the launchpad's scope: only these teams' services, as for membership
    desired = desired_state
    if scope:
        desired = desired_state.model_copy(
            update={"services": tuple(s for s in desired_state.services if s.team in scope)}
        )
    contexts = team_contexts(desired, pagerduty_teams, pagerduty_users)
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
            "preview": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines) or "Nothing differs."),
        },
    )
