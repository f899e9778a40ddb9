"""Which changes of a plan may be applied without a person: the pre-approval policy, pure.

Removals and role changes need a person by default: a removal can take someone off call, and a role
change to manager is a privilege grant. For the same reason an addition as manager always needs a person,
whatever the policy says. So does a removal from a pinned team whose name in PagerDuty is not the
definition's: the pin may name the wrong team.
"""

from __future__ import annotations

from dataclasses import dataclass

from nthlayer_pipelines.model import Change, ChangeKind, FindingKind, Plan, Role

PRE_APPROVED_ENV_VAR = "NTHLAYER_PRE_APPROVED_KINDS"
DEFAULT_PRE_APPROVED = frozenset({ChangeKind.ADD_MEMBER, ChangeKind.CREATE_TEAM})


@dataclass(frozen=True)
class ApprovalPolicy:
    """The change kinds a plan may apply on the policy's word alone."""

    pre_approved: frozenset[ChangeKind] = DEFAULT_PRE_APPROVED


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
                f"expected a comma-separated list of {known}, or nothing for none"
            ) from None
    return frozenset(kinds)


def pre_approved_changes(plan: Plan, policy: ApprovalPolicy) -> tuple[Change, ...]:
    """The plan's changes the policy approves, in plan order.

    Left out: additions as manager (a privilege grant), the members of a team the plan creates when
    the creation itself is not pre-approved (they could only fail until a person approves it), and removals
    from a pinned team PagerDuty names otherwise.
    """
    created = {c.team for c in plan.changes if c.kind is ChangeKind.CREATE_TEAM}
    creation_approved = ChangeKind.CREATE_TEAM in policy.pre_approved
    held_teams = {f.team for f in plan.findings if f.kind is FindingKind.PINNED_TEAM_NAME_MISMATCH}
    approved: list[Change] = []
    for change in plan.changes:
        if change.kind not in policy.pre_approved:
            continue
        if change.kind is ChangeKind.ADD_MEMBER and change.role is Role.MANAGER:
            continue
        if change.kind is not ChangeKind.CREATE_TEAM and change.team in created and not creation_approved:
            continue
        if change.kind is ChangeKind.REMOVE_MEMBER and change.team in held_teams:
            continue
        approved.append(change)
    return tuple(approved)
