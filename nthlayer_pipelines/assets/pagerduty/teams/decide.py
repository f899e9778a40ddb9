"""What to do with one approved change, given what the provider holds right now: pure, no I/O.

Apply re-reads the definitions and each entity before writing. A change the definitions no longer want
is superseded and written nowhere (a saved terraform plan is refused once its inputs change; here each
change is judged alone). What already matches the change is skipped (it converged, perhaps by an earlier
run that died before logging); what moved under the plan is stale and left alone, since the plan was
computed against a state that no longer exists.
"""

from __future__ import annotations

from nthlayer_pipelines.core.kind import Action, Decision
from nthlayer_pipelines.core.model import Change, ChangeKind, DesiredState, Role


def decide(change: Change, *, team_exists: bool, current_role: Role | None = None) -> Decision:
    """The decision for `change` when its team does or does not exist and the user holds `current_role`
    in it (None: not a member). For `create_team` only `team_exists` matters."""
    if change.kind is ChangeKind.CREATE_TEAM:
        if team_exists:
            return Decision(Action.SKIP, f"team {change.team_name!r} already exists")
        return Decision(Action.WRITE, f"create team {change.team_name!r}")
    if not team_exists:
        if change.team_id is None:
            return Decision(
                Action.FAIL,
                f"team {change.team_name!r} does not exist yet: its create_team change has not been applied",
            )
        return Decision(Action.STALE, f"team {change.team_id} no longer exists")
    if change.kind is not ChangeKind.REMOVE_MEMBER and change.role is None:
        return Decision(Action.FAIL, f"the {change.kind.value} change names no role")
    held = f"a member as {current_role.value}" if current_role else "not a member"
    now = f"now {held}" if current_role else "no longer a member"
    match change.kind:
        case ChangeKind.ADD_MEMBER:
            if current_role is None:
                return Decision(Action.WRITE, f"add as {_role(change.role)}")
            if current_role is change.role:
                return Decision(Action.SKIP, f"already {held}")
            return Decision(Action.STALE, f"{now}; the plan expected no membership")
        case ChangeKind.SET_ROLE:
            if current_role is change.role:
                return Decision(Action.SKIP, f"already {held}")
            if current_role is not None and current_role is change.from_role:
                return Decision(Action.WRITE, f"{_role(change.from_role)} -> {_role(change.role)}")
            return Decision(Action.STALE, f"{now}; the plan expected {_role(change.from_role)}")
        case ChangeKind.REMOVE_MEMBER:
            if current_role is None:
                return Decision(Action.SKIP, "already not a member")
            if current_role is change.from_role:
                return Decision(Action.WRITE, f"remove ({current_role.value})")
            return Decision(Action.STALE, f"{now}; the plan expected {_role(change.from_role)}")
    raise ValueError(f"unknown change kind {change.kind!r}")  # pragma: no cover: the match is exhaustive


def converged(change: Change, *, team_exists: bool, current_role: Role | None = None) -> bool:
    """Whether the provider now holds the change's end state: the check after apply."""
    if change.kind is ChangeKind.CREATE_TEAM:
        return team_exists
    if change.kind is ChangeKind.REMOVE_MEMBER:
        return current_role is None
    return team_exists and current_role is not None and current_role is change.role


def _role(role: Role | None) -> str:
    return role.value if role else "no role"


def unwanted_reason(change: Change, desired: DesiredState) -> str | None:
    """Why the definitions as they stand now no longer want `change`; None while they still do.

    The change must still follow from the desired team the plan read it from: the same slug, naming or
    pinning the same PagerDuty team, declaring the member with the same role (or, for a removal, pruning
    and not declaring them)."""
    team = desired.team(change.team)
    if team is None:
        return f"no definition declares team {change.team!r} any more"
    if team.pagerduty_team_id is not None:
        if change.kind is ChangeKind.CREATE_TEAM:
            return f"team {change.team!r} is now pinned to PagerDuty team {team.pagerduty_team_id}"
        if change.team_id is not None and team.pagerduty_team_id != change.team_id:
            return f"team {change.team!r} is now pinned to PagerDuty team {team.pagerduty_team_id}"
    elif team.display_name.strip().casefold() != change.team_name.strip().casefold():
        return f"team {change.team!r} is now named {team.display_name!r}, not {change.team_name!r}"
    if change.kind is ChangeKind.CREATE_TEAM:
        return None
    declared = {member.email: member.role for member in team.members}
    who = change.email or change.user_id
    if change.kind is ChangeKind.REMOVE_MEMBER:
        if not team.prune:
            return f"team {change.team!r} no longer prunes undeclared members"
        if change.email is not None and change.email in declared:
            return f"the definitions now declare {who} as {declared[change.email].value}"
        return None
    if change.email not in declared:
        return f"the definitions no longer declare {who} in {change.team!r}"
    if declared[change.email] is not change.role:
        return f"the definitions now want {who} as {declared[change.email].value}, not {_role(change.role)}"
    return None
