"""Checks of the desired state before anything is compared with it."""

import dagster as dg

from nthlayer_pipelines.assets.verdicts import verdict
from nthlayer_pipelines.core.model import DesiredState, Role


@dg.asset_check(
    asset="desired_state",
    blocking=True,
    description="Every desired team has at least one manager: a team without one is almost always a mistake.",
)
def desired_teams_have_a_manager(desired_state: DesiredState) -> dg.AssetCheckResult:
    without = [t for t in desired_state.teams if t.members and all(m.role != Role.MANAGER for m in t.members)]
    return verdict(
        [
            f"{t.name} ({t.source}, {t.origin or 'no origin'}): none of its {len(t.members)} members is a "
            "manager; make one a manager"
            for t in without
        ],
        "every desired team has a manager",
        teams_without_manager_count=len(without),
        teams=", ".join(t.name for t in without[:50]),
    )
