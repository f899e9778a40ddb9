"""Snapshots of PagerDuty: users, teams, and every team's members with their roles.

The `read_*` functions are the snapshots without Dagster (the benchmark calls them too); each asset opens
its own client, and all of them share the resource's rate limiter.
"""

from collections.abc import Sequence

import dagster as dg
import pandas as pd

from nthlayer_pipelines.reconcile.observed import memberships_frame, teams_frame, users_frame
from nthlayer_pipelines.resources.pagerduty import PagerDutyClient, PagerDutyResource

POOL = "pagerduty_api"  # one pool per provider key, so concurrent runs share its rate limit


def _page_minimum(rows: int, page_size: int = 100) -> int:
    """Requests a paginated listing needs at the least: an empty listing still costs one."""
    return max(1, -(-rows // page_size))


def read_users(client: PagerDutyClient) -> pd.DataFrame:
    return users_frame([{"user_id": u.id, "email": u.email, "name": u.name} for u in client.list_users()])


def read_teams(client: PagerDutyClient) -> pd.DataFrame:
    return teams_frame(
        [{"team_id": t.id, "name": t.name, "description": t.description} for t in client.list_teams()]
    )


def read_memberships(client: PagerDutyClient, team_ids: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Every team's members, up to the client's `max_concurrency` teams at a time, in the order of
    `team_ids`; with the fewest calls their pages allow."""
    by_team = client.list_members_of_teams(team_ids)
    frame = memberships_frame(
        [
            {"team_id": m.team_id, "user_id": m.user_id, "role": m.role}
            for members in by_team.values()
            for m in members
        ]
    )
    return frame, sum(_page_minimum(len(members)) for members in by_team.values())


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
        frame = read_users(client)
        calls = client.api_calls
    return _snapshot(frame, calls)


@dg.asset(
    group_name="observed",
    kinds={"pagerduty"},
    pool=POOL,
    description="Every PagerDuty team (id, name, description).",
)
def pagerduty_teams(pagerduty: PagerDutyResource) -> dg.Output[pd.DataFrame]:
    with pagerduty.client() as client:
        frame = read_teams(client)
        calls = client.api_calls
    return _snapshot(frame, calls)


@dg.asset(
    group_name="observed",
    kinds={"pagerduty"},
    pool=POOL,
    description="Every team's members with their roles, each team read once in pages of 100, many at a time.",
)
def pagerduty_memberships(
    context: dg.AssetExecutionContext, pagerduty: PagerDutyResource, pagerduty_teams: pd.DataFrame
) -> dg.Output[pd.DataFrame]:
    with pagerduty.client() as client:
        frame, minimum = read_memberships(client, [str(t) for t in pagerduty_teams["team_id"]])
        calls, concurrency = client.api_calls, client.max_concurrency
    context.log.info(
        "read %d memberships of %d teams in %d calls, %d at a time",
        len(frame),
        len(pagerduty_teams),
        calls,
        concurrency,
    )
    return dg.Output(
        frame,
        metadata={
            "row_count": len(frame),
            "team_count": len(pagerduty_teams),
            "api_calls": calls,
            "api_calls_minimum": minimum,
            "max_concurrency": concurrency,
            "roles": dg.MetadataValue.json(
                {str(k): int(v) for k, v in frame["role"].value_counts().sort_index().items()}
            ),
        },
    )
