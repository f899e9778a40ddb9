"""What to do with one approved change, given what the provider holds right now: pure, no I/O.

Apply re-reads each entity before writing. What already matches the change is skipped (it converged,
perhaps by an earlier run that died before logging); what moved under the plan is stale and left alone,
since the plan was computed against a state that no longer exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nthlayer_pipelines.model import Change, ChangeKind, Role


class Action(StrEnum):
    WRITE = "write"
    SKIP = "skip"  # already converged: nothing to write
    STALE = "stale"  # moved under the plan: leave it for a person and a new plan
    FAIL = "fail"  # cannot be carried out now, may be later (the team is not created yet)


@dataclass(frozen=True)
class Decision:
    action: Action
    detail: str = ""


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
