"""Which changes of a plan may be applied without a person: the pre-approval policy, pure.

Removals and role changes need a person by default: a removal can take someone off call, and a role
change to manager is a privilege grant. For the same reason an addition as manager always needs a person,
whatever the policy says. So does a removal the plan itself has doubts about (a pinned team whose name in
PagerDuty is not the definition's, an address that may have been renamed), and a plan with more
pre-approvable changes than the volume cap is left whole to a person.
"""

from __future__ import annotations

from dataclasses import dataclass

from nthlayer_pipelines.core.model import Change, ChangeKind, FindingKind, Plan, Role

PRE_APPROVED_ENV_VAR = "NTHLAYER_PRE_APPROVED_KINDS"
# Creating a team's managed escalation policy pages nobody until a person approves pointing a service at
# it; changing a policy's rules or a service's policy, urgency or timeouts changes who is paged, and when.
DEFAULT_PRE_APPROVED = frozenset(
    {ChangeKind.ADD_MEMBER, ChangeKind.CREATE_TEAM, ChangeKind.CREATE_ESCALATION_POLICY}
)
MAX_PRE_APPROVED_ENV_VAR = "NTHLAYER_MAX_PRE_APPROVED_CHANGES"
# The most writes no person reads in one plan: as many as the removals a plan may make without an
# override (NTHLAYER_MAX_TOTAL_REMOVALS); the README says why.
DEFAULT_MAX_PRE_APPROVED = 50

# Findings that hold the removals they name (their team's, or their team's and email's) for a person.
_HOLDS_REMOVALS = frozenset({FindingKind.PINNED_TEAM_NAME_MISMATCH, FindingKind.POSSIBLE_EMAIL_RENAME})


@dataclass(frozen=True)
class ApprovalPolicy:
    """The change kinds a plan may apply on the policy's word alone, and how many changes at most."""

    pre_approved: frozenset[ChangeKind] = DEFAULT_PRE_APPROVED
    max_changes: int = DEFAULT_MAX_PRE_APPROVED

    def __post_init__(self) -> None:
        if self.max_changes < 0:
            raise ValueError(f"{MAX_PRE_APPROVED_ENV_VAR} must not be negative, not {self.max_changes}")


def parse_pre_approved(text: str) -> frozenset[ChangeKind]:
    """`NTHLAYER_PRE_APPROVED_KINDS`: comma-separated change kinds, e.g. "create_team,add_member".
    An empty value means none: every change waits for a person."""
    kinds: set[ChangeKind] = set()
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        try:
            kinds.add(ChangeKind(name))
        except ValueError:
            known = ", ".join(kind.value for kind in ChangeKind)
            raise ValueError(
                f"{PRE_APPROVED_ENV_VAR}={text!r}: {part.strip()!r} is not a change kind; "
                f"must be a comma-separated list of {known}, or nothing for none"
            ) from None
    return frozenset(kinds)


def pre_approved_changes(plan: Plan, policy: ApprovalPolicy) -> tuple[Change, ...]:
    """The plan's changes the policy approves, in plan order: none when more than `policy.max_changes`
    would be (`over_volume_cap` says so in words)."""
    eligible = _eligible(plan, policy)
    return eligible if len(eligible) <= policy.max_changes else ()


def over_volume_cap(plan: Plan, policy: ApprovalPolicy) -> str:
    """Why the policy approves nothing of a plan it would otherwise approve some of; empty when it does."""
    count = len(_eligible(plan, policy))
    if count <= policy.max_changes:
        return ""
    return (
        f"{count} changes would be pre-approved, more than {MAX_PRE_APPROVED_ENV_VAR} "
        f"({policy.max_changes}): the policy approves none of them, a person approves the plan"
    )


def _eligible(plan: Plan, policy: ApprovalPolicy) -> tuple[Change, ...]:
    """Left out: additions as manager (a privilege grant), the members of a team the plan creates when the
    creation itself is not pre-approved (they could only fail until a person approves it), and removals a
    finding holds."""
    created = {c.team for c in plan.changes if c.kind is ChangeKind.CREATE_TEAM}
    creation_approved = ChangeKind.CREATE_TEAM in policy.pre_approved
    held_teams = {f.team for f in plan.findings if f.kind in _HOLDS_REMOVALS and f.email is None}
    held_members = {(f.team, f.email) for f in plan.findings if f.kind in _HOLDS_REMOVALS}
    approved: list[Change] = []
    for change in plan.changes:
        if change.kind not in policy.pre_approved:
            continue
        if change.kind is ChangeKind.ADD_MEMBER and change.role is Role.MANAGER:
            continue
        if change.kind is not ChangeKind.CREATE_TEAM and change.team in created and not creation_approved:
            continue
        if change.kind is ChangeKind.REMOVE_MEMBER and (
            change.team in held_teams or (change.team, change.email) in held_members
        ):
            continue
        approved.append(change)
    return tuple(approved)
