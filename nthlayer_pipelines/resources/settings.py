"""Run-time settings that are not a provider: where the definitions live, precedence, scope, thresholds,
and who may approve; and the one place a deployment's environment variables are read and checked."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from nthlayer_pipelines.desired.merge import parse_precedence
from nthlayer_pipelines.reconcile.policy import (
    DEFAULT_MAX_PRE_APPROVED,
    MAX_PRE_APPROVED_ENV_VAR,
    PRE_APPROVED_ENV_VAR,
    ApprovalPolicy,
    parse_pre_approved,
)
from nthlayer_pipelines.reconcile.safety import BlastRadiusLimits

DEFAULT_DEFINITIONS = "examples/org"  # the example org, relative to the working directory


class SettingsError(ValueError):
    """A deployment setting (an environment variable) is missing or malformed. The message is one line: the
    variable, what it holds, and what it must be."""


# Reading the environment ----------------------------------------------------------------------------------
# A blank number is unset (deployment templates often export empty values); a blank list is not, since an
# empty NTHLAYER_PRE_APPROVED_KINDS means "none".


def _given(environ: Mapping[str, str], name: str) -> str | None:
    text = environ.get(name, "").strip()
    return text or None


def _env_number(
    environ: Mapping[str, str],
    name: str,
    default: float,
    *,
    whole: bool,
    valid: Callable[[float], bool],
    must: Callable[[float | None], str],
) -> float:
    """The variable as a number when `valid`; the default when unset or blank. `must` says what it must be,
    given the value (None when it is no number at all)."""
    text = _given(environ, name)
    if text is None:
        return default
    try:
        value: float | None = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise SettingsError(f"{name}={text!r}: must be {must(value)}")
    return value


def env_whole(environ: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    """A whole-number setting of at least `minimum`."""
    must = f"a whole number, {minimum} or more (unset: {default})"
    return int(
        _env_number(environ, name, default, whole=True, valid=lambda v: v >= minimum, must=lambda _: must)
    )


def env_positive(environ: Mapping[str, str], name: str, default: float) -> float:
    """A number above 0 (seconds, hours)."""
    must = f"a number above 0 (unset: {default:g})"
    return _env_number(
        environ, name, default, whole=False, valid=lambda v: math.isfinite(v) and v > 0, must=lambda _: must
    )


def env_share(environ: Mapping[str, str], name: str, default: float) -> float:
    """A share between 0 and 1; a percentage is told the share it meant."""

    def must(value: float | None) -> str:
        meant = f"; for {value:g} % write {value / 100:g}" if value is not None and 1 < value <= 100 else ""
        return f"a share between 0 and 1 (0.2 is 20 %){meant}"

    return _env_number(environ, name, default, whole=False, valid=lambda v: 0 <= v <= 1, must=must)


def env_choice(environ: Mapping[str, str], name: str, choices: Sequence[str], default: str) -> str:
    """One of `choices`, compared in lower case; the default when unset or blank."""
    text = _given(environ, name)
    if text is None:
        return default
    if text.lower() not in choices:
        raise SettingsError(f"{name}={text!r}: must be one of {', '.join(choices)} (unset: {default})")
    return text.lower()


def require_env(environ: Mapping[str, str], name: str, why: str) -> str:
    """A variable that must be set; `why` completes "NAME is not set: ..."."""
    text = _given(environ, name)
    if text is None:
        raise SettingsError(f"{name} is not set: {why}")
    return text


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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ReconcileSettings:
        """The deployment's settings, every one checked now: a bad value is said when the code loads,
        not when a run first uses it."""
        default = {name: field.default for name, field in cls.model_fields.items()}
        settings = cls(
            source_precedence=environ.get("NTHLAYER_SOURCE_PRECEDENCE", default["source_precedence"]),
            max_unresolved_users=env_whole(
                environ, "NTHLAYER_MAX_UNRESOLVED_USERS", default["max_unresolved_users"], minimum=0
            ),
            pre_approved_kinds=environ.get(PRE_APPROVED_ENV_VAR, default["pre_approved_kinds"]),
            max_pre_approved_changes=env_whole(
                environ, MAX_PRE_APPROVED_ENV_VAR, default["max_pre_approved_changes"], minimum=0
            ),
            max_team_removal_share=env_share(
                environ, "NTHLAYER_MAX_TEAM_REMOVAL_SHARE", default["max_team_removal_share"]
            ),
            min_team_removals=env_whole(
                environ, "NTHLAYER_MIN_TEAM_REMOVALS", default["min_team_removals"], minimum=1
            ),
            max_total_removals=env_whole(
                environ, "NTHLAYER_MAX_TOTAL_REMOVALS", default["max_total_removals"], minimum=0
            ),
        )
        try:  # the lists' parsers name their variable in what they raise
            settings.precedence()
            settings.approval_policy()
        except ValueError as error:
            raise SettingsError(str(error)) from None
        return settings


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
            raise SettingsError(
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
