"""Snapshots of PagerDuty: users, teams, and every team's members with their roles."""

import dagster as dg
import pandas as pd

from nthlayer_pipelines.reconcile.observed import memberships_frame, teams_frame, users_frame
from nthlayer_pipelines.resources.pagerduty import PagerDutyResource

POOL = "pagerduty_api"  # one pool per provider key, so concurrent runs share its rate limit


def _page_minimum(rows: int, page_size: int = 100) -> int:
    """Requests a paginated listing needs at the least: an empty listing still costs one."""
    return max(1, -(-rows // page_size))


def _snapshot(frame: pd.DataFrame, api_calls: int) -> dg.Output[pd.DataFrame]:
    """A one-listing snapshot with its call count beside the fewest calls its pages allow."""
    return dg.Output(
        frame,
        metadata={
            "row_count": len(frame),
            "api_calls": api_calls,
            "api_calls_minimum": _page_minimum(len(frame)),
        },
    )


@dg.asset(
    group_name="observed",
    kinds={"pagerduty"},
    pool=POOL,
    description="Every PagerDuty user (id, email, name); emails join users across providers.",
)
def pagerduty_users(pagerduty: PagerDutyResource) -> dg.Output[pd.DataFrame]:
    with pagerduty.client() as client:
        users = client.list_users()
        calls = client.api_calls
    return _snapshot(users_frame([{"user_id": u.id, "email": u.email, "name": u.name} for u in users]), calls)


@dg.asset(
    group_name="observed",
    kinds={"pagerduty"},
    pool=POOL,
    description="Every PagerDuty team (id, name, description).",
)
def pagerduty_teams(pagerduty: PagerDutyResource) -> dg.Output[pd.DataFrame]:
    with pagerduty.client() as client:
        teams = client.list_teams()
        calls = client.api_calls
    return _snapshot(
        teams_frame([{"team_id": t.id, "name": t.name, "description": t.description} for t in teams]), calls
    )


@dg.asset(
    group_name="observed",
    kinds={"pagerduty"},
    pool=POOL,
    description="Every team's members with their roles, each team read once in pages of 100.",
)
def pagerduty_memberships(
    context: dg.AssetExecutionContext, pagerduty: PagerDutyResource, pagerduty_teams: pd.DataFrame
) -> dg.Output[pd.DataFrame]:
    rows: list[dict[str, object]] = []
    minimum = 0
    with pagerduty.client() as client:
        for team_id in pagerduty_teams["team_id"]:
            members = client.list_team_members(str(team_id))
            minimum += _page_minimum(len(members))
            rows.extend({"team_id": m.team_id, "user_id": m.user_id, "role": m.role} for m in members)
        calls = client.api_calls
    frame = memberships_frame(rows)
    context.log.info("read %d memberships of %d teams in %d calls", len(frame), len(pagerduty_teams), calls)
    return dg.Output(
        frame,
        metadata={
            "row_count": len(frame),
            "team_count": len(pagerduty_teams),
            "api_calls": calls,
            "api_calls_minimum": minimum,
            "roles": dg.MetadataValue.json(
                {str(k): int(v) for k, v in frame["role"].value_counts().sort_index().items()}
            ),
        },
    )
