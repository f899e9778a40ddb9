"""Divergences: a pure function of desired and observed state. The same inputs give the same rows.

Which PagerDuty team a definition writes to is settled first, and never guessed: a pinned id is taken as
it is (a name that differs is said), a name is taken only when exactly one PagerDuty team carries it
(several is a blocking row for that team alone), and two definitions that would write to one PagerDuty
team are an error that plans nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import DesiredState, DivergenceKind, Team, team_name_key
from nthlayer_pipelines.resources.pagerduty.observed import ObservedState

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")

DIVERGENCE_COLUMNS = [
    "kind",
    "team",  # desired team slug; for an unmanaged team, PagerDuty's name
    "team_name",  # the PagerDuty team's name; for a team still to be created, the definition's displayName
    "team_id",  # PagerDuty team id, null while the team does not exist
    "email",
    "user_id",
    "desired_role",
    "observed_role",
    "detail",
]

_KIND_ORDER = {kind.value: i for i, kind in enumerate(DivergenceKind)}


@dataclass(frozen=True)
class PagerDutyTeamRef:
    team_id: str
    name: str

    def __str__(self) -> str:
        return f"{self.name!r} ({self.team_id})"


@dataclass(frozen=True)
class TeamResolution:
    """The PagerDuty team a definition writes to, and how it was found."""

    team_id: str | None = None  # None: none yet (to create), a pin PagerDuty lacks, or ambiguous
    pagerduty_name: str | None = None  # that team's name in PagerDuty
    candidates: tuple[PagerDutyTeamRef, ...] = ()  # several teams carry an unpinned team's name: none taken

    @property
    def ambiguous(self) -> bool:
        return bool(self.candidates)


class TeamIdentityConflict(ValueError):
    """Two definitions resolve to one PagerDuty team: whichever were planned, the other would be undone."""


def resolve_teams(desired: DesiredState, teams: pd.DataFrame) -> dict[str, TeamResolution]:
    """Desired team slug -> its PagerDuty team: by pinned id, else by the one team carrying its name
    (compared by `team_name_key`)."""
    names = {str(team_id): str(name) for team_id, name in zip(teams["team_id"], teams["name"], strict=True)}
    by_name: dict[str, list[PagerDutyTeamRef]] = defaultdict(list)
    for team_id, name in sorted(names.items()):
        by_name[team_name_key(name)].append(PagerDutyTeamRef(team_id, name))
    resolved: dict[str, TeamResolution] = {}
    for team in desired.teams:
        pin = team.pagerduty_team_id
        if pin is not None:
            resolved[team.name] = TeamResolution(pin, names[pin]) if pin in names else TeamResolution()
            continue
        matches = by_name.get(team_name_key(team.display_name), [])
        if len(matches) == 1:
            resolved[team.name] = TeamResolution(matches[0].team_id, matches[0].name)
        else:
            resolved[team.name] = TeamResolution(candidates=tuple(matches))
    return resolved


def refuse_shared_teams(desired: DesiredState, resolved: Mapping[str, TeamResolution]) -> None:
    """Raise `TeamIdentityConflict` naming every PagerDuty team that several definitions resolve to."""
    claims: dict[str, list[Team]] = defaultdict(list)
    for team in desired.teams:
        team_id = resolved[team.name].team_id
        if team_id is not None:
            claims[team_id].append(team)
    lines = []
    for team_id, claimants in sorted(claims.items()):
        if len(claimants) > 1:
            name = resolved[claimants[0].name].pagerduty_name
            who = "; ".join(_definition(t) for t in claimants)
            lines.append(
                f"PagerDuty team {name!r} ({team_id}) is claimed by {len(claimants)} definitions: {who}"
            )
    if lines:
        raise TeamIdentityConflict(
            "\n".join(lines) + "\none PagerDuty team follows one definition: pin each definition to its own "
            "team (spec.pagerduty.teamId) or rename one; nothing is planned until then"
        )


def _ambiguous_detail(team: Team, resolution: TeamResolution) -> str:
    named = ", ".join(str(c) for c in resolution.candidates)
    return (
        f"{len(resolution.candidates)} PagerDuty teams are named like {team.display_name!r}: {named}; "
        "nothing is planned for this team until it is pinned (spec.pagerduty.teamId) or the PagerDuty "
        "teams are renamed apart"
    )


def _mismatch_detail(team: Team, resolution: TeamResolution) -> str:
    return (
        f"pinned PagerDuty team {resolution.team_id} is named {resolution.pagerduty_name!r} in PagerDuty, "
        f"not {team.display_name!r}: its removals wait for a person"
    )


def _definition(team: Team) -> str:
    how = f"pinned to {team.pagerduty_team_id}" if team.pagerduty_team_id else f"named {team.display_name!r}"
    return f"{team.name} ({team.source}, {team.origin or 'no origin'}, {how})"


def compute_divergences(
    desired: DesiredState, observed: ObservedState, *, scope: Collection[str] = ()
) -> pd.DataFrame:
    """Every way `observed` differs from `desired`, one row each, in a deterministic order.

    `scope` limits the comparison to those desired team slugs; unmanaged teams are only reported
    for an unscoped comparison, since a scoped run does not look at the whole account. Two definitions
    resolving to one PagerDuty team raise `TeamIdentityConflict` whatever the scope: a scoped run would
    otherwise plan one of them against the team the other one owns.
    """
    resolved = resolve_teams(desired, observed.teams)
    refuse_shared_teams(desired, resolved)
    in_scope = [t for t in desired.teams if not scope or t.name in scope]
    ambiguous = [t for t in in_scope if resolved[t.name].ambiguous]
    teams = [t for t in in_scope if not resolved[t.name].ambiguous]  # an ambiguous team is not compared
    team_ids = {t.name: resolved[t.name].team_id for t in teams}

    def pagerduty_name(team: Team) -> str:
        return resolved[team.name].pagerduty_name or team.display_name

    wanted = pd.DataFrame(
        [
            {
                "team": team.name,
                "team_name": pagerduty_name(team),
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

    rows: list[pd.DataFrame] = [
        pd.DataFrame(
            [
                {
                    "kind": DivergenceKind.AMBIGUOUS_TEAM.value,
                    "team": t.name,
                    "team_name": t.display_name,
                    "detail": _ambiguous_detail(t, resolved[t.name]),
                }
                for t in ambiguous
            ],
            columns=["kind", "team", "team_name", "detail"],
        ),
        pd.DataFrame(
            [
                {
                    "kind": DivergenceKind.PINNED_TEAM_NAME_MISMATCH.value,
                    "team": t.name,
                    "team_name": pagerduty_name(t),
                    "team_id": team_ids[t.name],
                    "detail": _mismatch_detail(t, resolved[t.name]),
                }
                for t in teams
                if team_ids[t.name] is not None
                and team_name_key(pagerduty_name(t)) != team_name_key(t.display_name)
            ],
            columns=["kind", "team", "team_name", "team_id", "detail"],
        ),
    ]

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
    name_by_id = {team_ids[t.name]: pagerduty_name(t) for t in teams if team_ids[t.name] is not None}
    held = observed.memberships[observed.memberships["team_id"].isin(matched_ids)].rename(
        columns={"role": "observed_role"}
    )
    held = held.merge(users[["user_id", "email"]], on="user_id", how="left")
    joined = present.drop(columns=["prune", "pinned"]).merge(
        held, on=["team_id", "user_id"], how="outer", suffixes=("", "_held"), indicator=True
    )
    joined["email"] = joined["email"].fillna(joined["email_held"])
    joined["team"] = joined["team"].fillna(joined["team_id"].map(matched_ids))
    joined["team_name"] = joined["team_name"].fillna(joined["team_id"].map(name_by_id))

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
        # The teams an ambiguous name matches are claimed too: they are named in its row, not unmanaged.
        claimed = set(matched_ids) | {c.team_id for t in ambiguous for c in resolved[t.name].candidates}
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
