"""Run-time settings that are not a provider: where the definitions live, precedence, scope, thresholds,
and who may approve."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from nthlayer_pipelines.desired.merge import parse_precedence
from nthlayer_pipelines.reconcile.policy import DEFAULT_MAX_PRE_APPROVED, ApprovalPolicy, parse_pre_approved
from nthlayer_pipelines.reconcile.safety import BlastRadiusLimits

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
        default="add_member,create_team",
        description="Change kinds applied without a person's approval; removals and role changes need one.",
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
        )


# Who may approve ---------------------------------------------------------------------------------------

APPROVERS_ENV_VAR = "NTHLAYER_APPROVERS"
POLICY_APPROVER = "policy"  # the name the pre-approval policy approves under; never a person's


class ApproverRefused(ValueError):
    """The named approver may not approve, reject or retry a plan."""


@dataclass(frozen=True)
class Approvers:
    """Who may approve, reject or retry a plan: `NTHLAYER_APPROVERS`, names or emails, compared ignoring
    case. `allowed` is None when the variable is unset: any name is accepted, with a warning."""

    allowed: frozenset[str] | None = None

    @classmethod
    def from_text(cls, text: str | None) -> Approvers:
        """Parse `NTHLAYER_APPROVERS`. None (unset) accepts anyone; "" (set but empty) accepts nobody."""
        if text is None:
            return cls(None)
        names = frozenset(part.strip().casefold() for part in text.split(",") if part.strip())
        if POLICY_APPROVER in names:
            raise ValueError(
                f"{APPROVERS_ENV_VAR}={text!r}: {POLICY_APPROVER!r} names the pre-approval policy, "
                "not a person; list the people who may approve"
            )
        return cls(names)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Approvers:
        return cls.from_text(environ.get(APPROVERS_ENV_VAR))

    @property
    def warning(self) -> str:
        """What an approval should say about the check; empty when the list is configured."""
        if self.allowed is None:
            return (
                f"{APPROVERS_ENV_VAR} is not set, so any name is accepted as an approver: "
                "set it to the people who may approve"
            )
        return ""

    def check(self, approver: str) -> str:
        """The approver, trimmed, when they may decide on a plan; `ApproverRefused` saying why otherwise."""
        name = (approver or "").strip()
        if not name:
            raise ApproverRefused("approver is empty: say who decides (a name or an email)")
        if name.casefold() == POLICY_APPROVER:
            raise ApproverRefused(
                f"{name!r} is the pre-approval policy's name, not a person's: approve under your own name"
            )
        if self.allowed is None or name.casefold() in self.allowed:
            return name
        if not self.allowed:
            raise ApproverRefused(
                f"{name} may not approve: {APPROVERS_ENV_VAR} is set but empty, so no person may approve "
                "(only the pre-approval policy does)"
            )
        listed = ", ".join(sorted(self.allowed))
        raise ApproverRefused(f"{name} may not approve: {APPROVERS_ENV_VAR} lists {listed}")
