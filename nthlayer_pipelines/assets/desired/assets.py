"""Desired-state assets: what each source declares, and the merged desired state."""

from dataclasses import dataclass

import dagster as dg

from nthlayer_pipelines.core.model import DefinitionsError, DesiredState, SourceError, Team
from nthlayer_pipelines.desired.cortex import teams_from_cortex
from nthlayer_pipelines.desired.git import load_definitions
from nthlayer_pipelines.desired.merge import MergeResult, merge_sources
from nthlayer_pipelines.resources.cortex.resource import CortexResource
from nthlayer_pipelines.resources.settings import DefinitionsRepository, ReconcileSettings


def _member_count(teams: tuple[Team, ...] | list[Team]) -> int:
    return sum(len(t.members) for t in teams)


@dataclass(frozen=True)
class CortexRead:
    teams: list[Team]
    read: int  # teams Cortex listed, archived ones included
    api_calls: int


def read_cortex(cortex: CortexResource) -> CortexRead:
    """Cortex's active teams as desired teams; an answer with none is an error, never 'nobody'."""
    with cortex.client() as client:
        raw = client.list_teams()
        api_calls = client.api_calls
    role_map, default_role = cortex.roles()
    teams = teams_from_cortex(raw, role_map=role_map, default_role=default_role, prune=cortex.prune)
    if not teams:
        raise SourceError("Cortex returned no active teams; refusing to treat that as 'nobody'")
    return CortexRead(teams=teams, read=len(raw), api_calls=api_calls)


def merged_desired_state(
    reconcile: ReconcileSettings, git: DesiredState | None, cortex: list[Team] | None
) -> MergeResult:
    return merge_sources(
        {"git": git.teams if git else None, "cortex": cortex},
        services=git.services if git else (),
        standards=git.standards if git else (),
        precedence=reconcile.precedence(),
    )


def current_desired_state(
    definitions: DefinitionsRepository, cortex: CortexResource, reconcile: ReconcileSettings
) -> DesiredState:
    """What the enabled sources declare right now, merged as the desired_state asset merges them: what
    the apply checks each approved change against before writing it. Raises `DefinitionsError` or
    `SourceError` when a source cannot say."""
    git = load_definitions(definitions.path) if definitions.enabled else None
    teams = read_cortex(cortex).teams if cortex.enabled else None
    return merged_desired_state(reconcile, git, teams).desired


@dg.asset(
    group_name="desired",
    kinds={"yaml"},
    description="Teams and services declared as nthlayer/v1 YAML in the definitions repository.",
)
def git_definitions(
    context: dg.AssetExecutionContext, definitions: DefinitionsRepository
) -> dg.Output[DesiredState | None]:
    if not definitions.enabled:
        context.log.info("Git source is off: no definitions path is set")
        return dg.Output(None, metadata={"enabled": False})
    try:
        state = load_definitions(definitions.path)
    except DefinitionsError as error:
        problems = "\n".join(f"- `{p.file}` {p.path}: {p.message}" for p in error.problems)
        raise dg.Failure(
            description=f"{len(error.problems)} problem(s) in the definitions at {definitions.path}",
            metadata={"problems": dg.MetadataValue.md(problems), "problem_count": len(error.problems)},
        ) from error
    return dg.Output(
        state,
        metadata={
            "enabled": True,
            "path": definitions.path,
            "team_count": len(state.teams),
            "member_count": _member_count(state.teams),
            "service_count": len(state.services),
        },
    )


@dg.asset(
    group_name="desired",
    kinds={"cortex"},
    description="Teams declared in the Cortex catalog, mapped to PagerDuty roles by their role tags.",
)
def cortex_teams(context: dg.AssetExecutionContext, cortex: CortexResource) -> dg.Output[list[Team] | None]:
    if not cortex.enabled:
        context.log.info("Cortex source is off: CORTEX_API_URL is not set")
        return dg.Output(None, metadata={"enabled": False})
    read = read_cortex(cortex)
    return dg.Output(
        read.teams,
        metadata={
            "enabled": True,
            "team_count": len(read.teams),
            "member_count": _member_count(read.teams),
            "archived_or_skipped": read.read - len(read.teams),
            "api_calls": read.api_calls,
        },
    )


@dg.asset(
    group_name="desired",
    kinds={"python"},
    description="The merged desired state of every enabled source, under the declared precedence.",
)
def desired_state(
    context: dg.AssetExecutionContext,
    reconcile: ReconcileSettings,
    git_definitions: DesiredState | None,
    cortex_teams: list[Team] | None,
) -> dg.Output[DesiredState]:
    result = merged_desired_state(reconcile, git_definitions, cortex_teams)
    for line in result.overridden:
        context.log.info("precedence: %s", line)
    desired = result.desired
    return dg.Output(
        desired,
        metadata={
            "sources": ", ".join(desired.sources),
            "team_count": len(desired.teams),
            "member_count": _member_count(desired.teams),
            "overridden_count": len(result.overridden),
            "preview": dg.MetadataValue.md(
                "| team | name | source | members | prune |\n|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {t.name} | {t.display_name} | {t.source} | {len(t.members)} | {t.prune} |"
                    for t in desired.teams[:100]
                )
            ),
        },
    )
