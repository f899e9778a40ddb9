"""Run-time settings that are not a provider: where the definitions live, precedence, scope, thresholds."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from nthlayer_pipelines.desired.merge import parse_precedence


class DefinitionsRepository(dg.ConfigurableResource):
    """A folder of nthlayer/v1 YAML definitions; an empty path turns the Git source off."""

    path: str = Field(default="examples/org", description="Folder of Team and Service definitions.")

    @property
    def enabled(self) -> bool:
        return bool(self.path.strip())


class ReconcileSettings(dg.ConfigurableResource):
    """How desired state is assembled and compared. Set `teams` in the launchpad to scope a run."""

    source_precedence: str = Field(
        default="git,cortex", description="Which source wins when several declare a team, first wins."
    )
    teams: list[str] = Field(
        default_factory=list, description="Only compare these desired team slugs (empty: every team)."
    )
    max_unresolved_users: int = Field(
        default=10, description="More desired emails without a PagerDuty account than this blocks the plan."
    )

    def precedence(self) -> tuple[str, ...]:
        return parse_precedence(self.source_precedence)
