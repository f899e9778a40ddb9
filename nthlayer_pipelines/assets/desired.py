"""Desired-state assets: what each source declares, and the merged desired state."""

import dagster as dg

from nthlayer_pipelines.desired.cortex import teams_from_cortex
from nthlayer_pipelines.desired.git import load_definitions
from nthlayer_pipelines.desired.merge import merge_sources
from nthlayer_pipelines.model import DefinitionsError, DesiredState, SourceError, Team
from nthlayer_pipelines.resources.cortex import CortexResource
from nthlayer_pipelines.resources.settings import DefinitionsRepository, ReconcileSettings


def _member_count(teams: tuple[Team, ...] | list[Team]) -> int:
    return sum(len(t.members) for t in teams)


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
    with cortex.client() as client:
        raw = client.list_teams()
        api_calls = client.api_calls
    role_map, default_role = cortex.roles()
    teams = teams_from_cortex(raw, role_map=role_map, default_role=default_role, prune=cortex.prune)
    if not teams:
        raise SourceError("Cortex returned no active teams; refusing to treat that as 'nobody'")
    return dg.Output(
        teams,
        metadata={
            "enabled": True,
            "team_count": len(teams),
            "member_count": _member_count(teams),
            "archived_or_skipped": len(raw) - len(teams),
            "api_calls": api_calls,
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
    result = merge_sources(
        {"git": git_definitions.teams if git_definitions else None, "cortex": cortex_teams},
        services=git_definitions.services if git_definitions else (),
        precedence=reconcile.precedence(),
    )
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
