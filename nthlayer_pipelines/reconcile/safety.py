"""Blast radius: how much of the on-call organisation a plan would take away, and when that is too much.

Anchors for the defaults: Okta pauses an import that would unassign more than 20 % of an app's users;
Entra Connect stops an export with more than 500 deletes. We cap far lower than Entra because these are
on-call memberships, where every removal can leave an incident without a responder, not directory objects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from nthlayer_pipelines.model import ChangeKind, Plan


@dataclass(frozen=True)
class BlastRadiusLimits:
    """When a plan needs an approval that says `allow_blast_radius: true`.

    A team counts when it loses more than `max_team_removal_share` of its members *and* at least
    `min_team_removals` of them: one removal from a 4-person team is 25 %, and not a mass removal.
    """

    max_team_removal_share: float = 0.2
    min_team_removals: int = 2
    max_total_removals: int = 50

    def __post_init__(self) -> None:
        if not 0 <= self.max_team_removal_share <= 1:
            raise ValueError(
                f"max_team_removal_share must be a share between 0 and 1, not {self.max_team_removal_share}"
            )
        if self.min_team_removals < 1:
            raise ValueError(f"min_team_removals must be at least 1, not {self.min_team_removals}")
        if self.max_total_removals < 0:
            raise ValueError(f"max_total_removals must not be negative, not {self.max_total_removals}")


@dataclass(frozen=True)
class BlastRadius:
    """The verdict on a plan: `reasons` says in words why it is `exceeded`."""

    exceeded: bool
    reasons: tuple[str, ...] = ()
    removals: int = 0


def assess_blast_radius(
    plan: Plan, team_sizes: Mapping[str, int], limits: BlastRadiusLimits | None = None
) -> BlastRadius:
    """Judge the plan's removals against the limits.

    `team_sizes` maps a PagerDuty team id to its current member count. A team whose size is unknown is
    taken to be no larger than what the plan removes from it: unknown is judged as everything.
    """
    limits = limits or BlastRadiusLimits()
    removals = [c for c in plan.changes if c.kind is ChangeKind.REMOVE_MEMBER]
    removed_by_team = Counter(c.team_id or c.team for c in removals)
    label_by_team = {c.team_id or c.team: c.team for c in removals}
    reasons: list[str] = []
    for team_key, removed in sorted(removed_by_team.items(), key=lambda item: label_by_team[item[0]]):
        size = max(team_sizes.get(team_key, 0), removed)
        share = removed / size
        if removed >= limits.min_team_removals and share > limits.max_team_removal_share:
            reasons.append(
                f"{label_by_team[team_key]}: {removed} of {size} members removed "
                f"({_percent(share)} > {_percent(limits.max_team_removal_share)})"
            )
    if len(removals) > limits.max_total_removals:
        reasons.append(f"{len(removals)} removals in all > {limits.max_total_removals}")
    return BlastRadius(exceeded=bool(reasons), reasons=tuple(reasons), removals=len(removals))


def _percent(share: float) -> str:
    return f"{share * 100:.1f}".rstrip("0").rstrip(".") + " %"
