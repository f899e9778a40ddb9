"""Blast radius: how much of the on-call organisation a plan would take away, and when that is too much.

Anchors for the defaults: Okta pauses an import that would unassign more than 20 % of an app's users;
Entra Connect stops an export with more than 500 deletes. We cap far lower than Entra because these are
on-call memberships, where every removal can leave an incident without a responder, not directory objects.
Whatever a team's size, a plan that leaves it without a manager or removes every member is over the
limits: those are exactly the plans a small team cannot survive, and no share catches them.

Pure: the rosters are given, read from a snapshot when a plan is made (`rosters_from_memberships`) or from
PagerDuty when it is applied (`rosters_from_members`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import Change, ChangeKind, Plan, Role

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")


@dataclass(frozen=True)
class BlastRadiusLimits:
    """When a plan needs an approval that says `allow_blast_radius: true`.

    A team counts when it loses more than `max_team_removal_share` of its members *and* at least
    `min_team_removals` of them: one removal from a 4-person team is 25 %, and not a mass removal.
    """

    max_team_removal_share: float = 0.2
    min_team_removals: int = 2
    max_total_removals: int = 50
    # Re-pointing a service changes who is paged for it from then on: a plan that re-points many at once
    # (a standard's rules edited, a team renamed) is read by a person who says so.
    max_services_repointed: int = 10

    def __post_init__(self) -> None:
        if not 0 <= self.max_team_removal_share <= 1:
            raise ValueError(
                f"max_team_removal_share must be a share between 0 and 1, not {self.max_team_removal_share}"
            )
        if self.min_team_removals < 1:
            raise ValueError(f"min_team_removals must be at least 1, not {self.min_team_removals}")
        if self.max_total_removals < 0:
            raise ValueError(f"max_total_removals must not be negative, not {self.max_total_removals}")
        if self.max_services_repointed < 0:
            raise ValueError(
                f"max_services_repointed must not be negative, not {self.max_services_repointed}"
            )


@dataclass(frozen=True)
class BlastRadius:
    """The verdict on a plan: `reasons` says in words why it is `exceeded`."""

    exceeded: bool
    reasons: tuple[str, ...] = ()
    removals: int = 0


@dataclass(frozen=True)
class TeamRoster:
    """A PagerDuty team as the blast radius sees it before the plan: how many members, how many managers."""

    members: int
    managers: int


def rosters_from_memberships(memberships: pd.DataFrame) -> dict[str, TeamRoster]:
    """Team id -> roster, from a memberships table (columns team_id, user_id, role)."""
    managers = memberships["role"] == Role.MANAGER.value
    counts = memberships.assign(manager=managers).groupby("team_id")["manager"].agg(["size", "sum"])
    return {str(t): TeamRoster(int(row["size"]), int(row["sum"])) for t, row in counts.iterrows()}


def rosters_from_members(members: Mapping[str, Mapping[str, Role | str]]) -> dict[str, TeamRoster]:
    """Team id -> roster, from each team's members as read from PagerDuty ({user id: role})."""
    return {
        team_id: TeamRoster(len(roles), sum(1 for r in roles.values() if Role(r) is Role.MANAGER))
        for team_id, roles in members.items()
    }


def rosters_as_json(rosters: Mapping[str, TeamRoster]) -> dict[str, dict[str, int]]:
    """Rosters as the ledger keeps them beside a plan."""
    return {team: {"members": r.members, "managers": r.managers} for team, r in sorted(rosters.items())}


def rosters_from_json(data: Mapping[str, Mapping[str, int]]) -> dict[str, TeamRoster]:
    return {team: TeamRoster(int(r["members"]), int(r["managers"])) for team, r in data.items()}


def reduces_a_team(change: Change) -> bool:
    """Whether the change can take people or a manager away: what the blast radius is about."""
    return change.kind is ChangeKind.REMOVE_MEMBER or (
        change.from_role is Role.MANAGER and change.role is not Role.MANAGER
    )


def assess_blast_radius(
    plan: Plan, rosters: Mapping[str, TeamRoster], limits: BlastRadiusLimits | None = None
) -> BlastRadius:
    """Judge the plan against the limits and the rosters it would change.

    `rosters` is keyed by PagerDuty team id (by slug for a team without one). A team whose roster is
    unknown is taken to be no larger than what the plan removes from it: unknown is judged as everything.
    """
    limits = limits or BlastRadiusLimits()
    by_team: dict[str, list[Change]] = {}
    for change in plan.changes:
        by_team.setdefault(change.team_id or change.team, []).append(change)
    reasons: list[str] = []
    for team_key, changes in sorted(by_team.items(), key=lambda item: (item[1][0].team, item[0])):
        reasons += _team_reasons(changes, rosters.get(team_key, TeamRoster(0, 0)), limits)
    removals = plan.count(ChangeKind.REMOVE_MEMBER)
    if removals > limits.max_total_removals:
        reasons.append(f"{removals} removals in all > {limits.max_total_removals}")
    reasons += repoint_reasons(plan.changes, limits)
    return BlastRadius(exceeded=bool(reasons), reasons=tuple(reasons), removals=removals)


def repoint_reasons(changes: Sequence[Change], limits: BlastRadiusLimits) -> list[str]:
    """Too many services pointed at another escalation policy in one plan."""
    repointed = sum(1 for c in changes if c.kind is ChangeKind.SET_SERVICE_POLICY)
    if repointed > limits.max_services_repointed:
        return [
            f"{repointed} services re-pointed to another escalation policy > {limits.max_services_repointed}"
        ]
    return []


def _team_reasons(changes: list[Change], roster: TeamRoster, limits: BlastRadiusLimits) -> list[str]:
    """What is wrong with the state the plan leaves one team in, in words."""
    first = changes[0]
    label = f"{first.team} ({first.team_id or 'no id yet'})"
    removed = [c for c in changes if c.kind is ChangeKind.REMOVE_MEMBER]
    # Managers the plan takes away (removed, or demoted) and gives (added, or promoted).
    lost = [c for c in changes if c.from_role is Role.MANAGER and c.role is not Role.MANAGER]
    gained = [c for c in changes if c.role is Role.MANAGER and c.from_role is not Role.MANAGER]
    members = max(roster.members, len(removed))
    managers = max(roster.managers, len(lost))
    reasons: list[str] = []
    if removed and len(removed) == members:
        reasons.append(f"{label}: the plan removes every member ({members} of {members})")
    elif removed:
        share = len(removed) / members
        if len(removed) >= limits.min_team_removals and share > limits.max_team_removal_share:
            reasons.append(
                f"{label}: {len(removed)} of {members} members removed "
                f"({_percent(share)} > {_percent(limits.max_team_removal_share)})"
            )
    if lost and managers - len(lost) + len(gained) <= 0:
        reasons.append(f"{label}: the plan leaves no manager ({_taking(lost)}, {_all_of(len(lost))})")
    return reasons


def _taking(lost: list[Change]) -> str:
    removes = [c.email or c.user_id or "?" for c in lost if c.kind is ChangeKind.REMOVE_MEMBER]
    demotes = [f"{c.email or c.user_id} to {c.role}" for c in lost if c.kind is ChangeKind.SET_ROLE]
    parts = [f"removes {', '.join(removes)}"] if removes else []
    parts += [f"demotes {', '.join(demotes)}"] if demotes else []
    return " and ".join(parts)


def _all_of(count: int) -> str:
    return "the only one" if count == 1 else "both of them" if count == 2 else f"all {count} of them"


def _percent(share: float) -> str:
    return f"{share * 100:.1f}".rstrip("0").rstrip(".") + " %"
