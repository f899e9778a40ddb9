"""Run-time settings that are not a provider, as resources: where the definitions live, precedence, scope
and thresholds. Their values come from the deployment's settings (`deployment.DeploymentSettings`)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg
from pydantic import Field

from nthlayer_pipelines.core.policy import (
    DEFAULT_MAX_PRE_APPROVED,
    ApprovalPolicy,
    parse_pre_approved,
)
from nthlayer_pipelines.core.safety import BlastRadiusLimits
from nthlayer_pipelines.desired.merge import parse_precedence

DEFAULT_DEFINITIONS = "examples/org"  # the example org, relative to the working directory


class DefinitionsRepository(dg.ConfigurableResource):
    """A folder of nthlayer/v1 YAML definitions; an empty path turns the Git source off."""

    path: str = Field(default=DEFAULT_DEFINITIONS, description="Folder of Team and Service definitions.")

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

    pre_approved_kinds: str = Field(
        default="add_member,create_team,create_escalation_policy",  # DEFAULT_PRE_APPROVED, as written
        description="Change kinds applied without a person's approval; removals, role changes and "
        "anything that changes who is paged need one.",
    )
    max_pre_approved_changes: int = Field(
        default=DEFAULT_MAX_PRE_APPROVED,
        description="A plan with more pre-approvable changes than this waits whole for a person's approval.",
    )
    max_team_removal_share: float = Field(
        default=0.2, description="A plan removing more than this share of a team's members is blocked."
    )
    min_team_removals: int = Field(
        default=2, description="A team's share counts only from this many removals (1 of 4 is not a purge)."
    )
    max_total_removals: int = Field(default=50, description="A plan with more removals in all is blocked.")
    max_services_repointed: int = Field(
        default=10,
        description="A plan pointing more services than this at another escalation policy is blocked.",
    )

    def precedence(self) -> tuple[str, ...]:
        return parse_precedence(self.source_precedence)

    def approval_policy(self) -> ApprovalPolicy:
        return ApprovalPolicy(
            pre_approved=parse_pre_approved(self.pre_approved_kinds),
            max_changes=self.max_pre_approved_changes,
        )

    def blast_radius_limits(self) -> BlastRadiusLimits:
        return BlastRadiusLimits(
            max_team_removal_share=self.max_team_removal_share,
            min_team_removals=self.min_team_removals,
            max_total_removals=self.max_total_removals,
            max_services_repointed=self.max_services_repointed,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ReconcileSettings:
        """The deployment's settings (every variable checked now, `DeploymentSettings`): a bad value is said
        when the code loads, not when a run first uses it."""
        from nthlayer_pipelines.resources.settings.deployment import DeploymentSettings

        return DeploymentSettings.from_env(environ).reconcile()
