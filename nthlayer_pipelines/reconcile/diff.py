"""Divergences: a pure function of desired and observed state. The same inputs give the same rows."""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd

from nthlayer_pipelines.model import DesiredState, DivergenceKind
from nthlayer_pipelines.reconcile.observed import ObservedState

DIVERGENCE_COLUMNS = [
    "kind",
    "team",  # desired team slug; for an unmanaged team, PagerDuty's name
    "team_name",  # PagerDuty display name
    "team_id",  # PagerDuty team id, null while the team does not exist
    "email",
    "user_id",
    "desired_role",
    "observed_role",
    "detail",
]

_KIND_ORDER = {kind.value: i for i, kind in enumerate(DivergenceKind)}


def match_teams(desired: DesiredState, teams: pd.DataFrame) -> dict[str, str | None]:
    """Desired team slug -> PagerDuty team id: by pinned id, else by name, case-insensitively."""
    known_ids = set(teams["team_id"].dropna())
    by_name: dict[str, str] = {}
    for team_id, name in sorted(zip(teams["team_id"], teams["name"], strict=True)):
        by_name.setdefault(str(name).strip().lower(), team_id)
    matched: dict[str, str | None] = {}
    for team in desired.teams:
        if team.pagerduty_team_id is not None:
            matched[team.name] = team.pagerduty_team_id if team.pagerduty_team_id in known_ids else None
        else:
            matched[team.name] = by_name.get(team.display_name.strip().lower())
    return matched


def compute_divergences(
    desired: DesiredState, observed: ObservedState, *, scope: Collection[str] = ()
) -> pd.DataFrame:
    """Every way `observed` differs from `desired`, one row each, in a deterministic order.

    `scope` limits the comparison to those desired team slugs; unmanaged teams are only reported
    for an unscoped comparison, since a scoped run does not look at the whole account.
    """
    teams = [t for t in desired.teams if not scope or t.name in scope]
    desired = DesiredState(teams=tuple(teams), services=desired.services, sources=desired.sources)
    team_ids = match_teams(desired, observed.teams)

    wanted = pd.DataFrame(
        [
            {
                "team": team.name,
                "team_name": team.display_name,
                "team_id": team_ids[team.name],
                "prune": team.prune,
                "pinned": team.pagerduty_team_id,
                "email": member.email,
                "desired_role": member.role.value,
            }
            for team in teams
            for member in team.members
        ],
        columns=["team", "team_name", "team_id", "prune", "pinned", "email", "desired_role"],
    ).astype({"team_id": "string", "email": "string", "desired_role": "string"})

    # One account per email: on duplicates (an asset check flags them) the lowest id wins, deterministically.
    users = observed.users.sort_values("user_id").drop_duplicates("email", keep="first")
    wanted = wanted.merge(users[["email", "user_id"]], on="email", how="left")

    rows: list[pd.DataFrame] = []

    unresolved = wanted[wanted["user_id"].isna()]
    rows.append(
        unresolved.assign(
            kind=DivergenceKind.UNRESOLVED_USER.value,
            detail="no PagerDuty user has this email",
        )
    )
    wanted = wanted[wanted["user_id"].notna()]

    missing_teams = [t for t in teams if team_ids[t.name] is None]
    rows.append(
        pd.DataFrame(
            [
                {
                    "kind": DivergenceKind.MISSING_TEAM.value,
                    "team": t.name,
                    "team_name": t.display_name,
                    "detail": (
                        f"pinned PagerDuty team {t.pagerduty_team_id} does not exist"
                        if t.pagerduty_team_id
                        else "no PagerDuty team has this name"
                    ),
                }
                for t in missing_teams
            ],
            columns=["kind", "team", "team_name", "detail"],
        )
    )

    # Members of a team still to be created are all missing; a pinned team that vanished gets none,
    # since its creation is left to a person.
    to_create = wanted[wanted["team_id"].isna()]
    rows.append(
        to_create[to_create["pinned"].isna()].assign(
            kind=DivergenceKind.MISSING_MEMBER.value, detail="team does not exist yet"
        )
    )

    present = wanted[wanted["team_id"].notna()]
    matched_ids = {tid: name for name, tid in team_ids.items() if tid is not None}
    prune_by_id = {team_ids[t.name]: t.prune for t in teams if team_ids[t.name] is not None}
    display_by_id = {team_ids[t.name]: t.display_name for t in teams if team_ids[t.name] is not None}
    held = observed.memberships[observed.memberships["team_id"].isin(matched_ids)].rename(
        columns={"role": "observed_role"}
    )
    held = held.merge(users[["user_id", "email"]], on="user_id", how="left")
    joined = present.drop(columns=["prune", "pinned"]).merge(
        held, on=["team_id", "user_id"], how="outer", suffixes=("", "_held"), indicator=True
    )
    joined["email"] = joined["email"].fillna(joined["email_held"])
    joined["team"] = joined["team"].fillna(joined["team_id"].map(matched_ids))
    joined["team_name"] = joined["team_name"].fillna(joined["team_id"].map(display_by_id))

    missing = joined[joined["_merge"] == "left_only"]
    rows.append(missing.assign(kind=DivergenceKind.MISSING_MEMBER.value, detail=""))

    both = joined[joined["_merge"] == "both"]
    mismatched = both[both["desired_role"] != both["observed_role"]]
    rows.append(mismatched.assign(kind=DivergenceKind.ROLE_MISMATCH.value, detail=""))

    extra = joined[(joined["_merge"] == "right_only") & joined["team_id"].map(prune_by_id).fillna(False)]
    rows.append(
        extra.assign(
            kind=DivergenceKind.EXTRA_MEMBER.value,
            detail=extra["email"].isna().map({True: "member's user is not in the users snapshot", False: ""}),
        )
    )

    if not scope:
        claimed = set(matched_ids)
        unmanaged = observed.teams[~observed.teams["team_id"].isin(claimed)]
        rows.append(
            pd.DataFrame(
                {
                    "kind": DivergenceKind.UNMANAGED_TEAM.value,
                    "team": unmanaged["name"],
                    "team_name": unmanaged["name"],
                    "team_id": unmanaged["team_id"],
                    "detail": "no definition claims this team",
                }
            )
        )

    frames = [f.reindex(columns=DIVERGENCE_COLUMNS) for f in rows if not f.empty]
    if not frames:
        return empty_divergences()
    result = pd.concat(frames, ignore_index=True).astype("string")
    result["_order"] = result["kind"].map(_KIND_ORDER)
    result = result.sort_values(["_order", "team", "email", "team_id"], na_position="first", kind="stable")
    return result.drop(columns="_order").reset_index(drop=True)


def empty_divergences() -> pd.DataFrame:
    return pd.DataFrame(columns=DIVERGENCE_COLUMNS).astype("string")
