"""Combine the teams of several desired-state sources under a declared precedence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nthlayer_pipelines.core.model import DesiredState, Service, SourceError, Standard, Team, team_name_key

DEFAULT_PRECEDENCE = ("git", "cortex")


@dataclass(frozen=True)
class MergeResult:
    desired: DesiredState
    overridden: tuple[str, ...]  # "cortex:payments overridden by git" lines, for the asset's metadata


def parse_precedence(text: str) -> tuple[str, ...]:
    order = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(order) - set(DEFAULT_PRECEDENCE))
    if unknown or len(set(order)) != len(order) or not order:
        raise ValueError(
            f"NTHLAYER_SOURCE_PRECEDENCE={text!r}: "
            f"must be a comma-separated order of {', '.join(DEFAULT_PRECEDENCE)}"
        )
    return order


def merge_sources(
    teams_by_source: Mapping[str, Sequence[Team] | None],
    *,
    services: Sequence[Service] = (),
    standards: Sequence[Standard] = (),
    precedence: Sequence[str] = DEFAULT_PRECEDENCE,
) -> MergeResult:
    """One desired state: a team declared by several sources (same slug, or same PagerDuty name) is taken
    from the source earliest in `precedence`. A source mapped to None is off. Services and standards come
    from Git alone and are carried as they are.

    An enabled source with no teams is an error, never an empty desired state: that is how truncated
    reads and empty group lists have deleted real members in other tools.
    """
    enabled = [s for s in precedence if teams_by_source.get(s) is not None]
    if not enabled:
        raise SourceError("no desired-state source is enabled: set NTHLAYER_DEFINITIONS or CORTEX_API_URL")
    chosen: dict[str, Team] = {}
    by_display: dict[str, Team] = {}
    overridden: list[str] = []
    for source in enabled:
        teams = teams_by_source[source] or ()
        if not teams:
            raise SourceError(f"source {source!r} returned no teams; refusing to treat that as 'nobody'")
        for team in teams:
            winner = chosen.get(team.name) or by_display.get(team_name_key(team.display_name))
            if winner is not None:
                overridden.append(f"{source}:{team.name} overridden by {winner.source}:{winner.name}")
                continue
            chosen[team.name] = team
            by_display[team_name_key(team.display_name)] = team
    teams_sorted = tuple(sorted(chosen.values(), key=lambda t: t.name))
    return MergeResult(
        desired=DesiredState(
            teams=teams_sorted, services=tuple(services), standards=tuple(standards), sources=tuple(enabled)
        ),
        overridden=tuple(overridden),
    )
