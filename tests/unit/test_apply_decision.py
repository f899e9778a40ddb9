"""The per-change decision apply makes after re-reading, and the check after it wrote: pure functions."""

from __future__ import annotations

import pytest

from nthlayer_pipelines.assets.pagerduty.teams.decide import Action, Decision, converged, decide
from nthlayer_pipelines.core.model import Change, ChangeKind, ChangeStatus, Role

R, M, OBS = Role.RESPONDER, Role.MANAGER, Role.OBSERVER


def change(kind: ChangeKind, role: Role | None = None, from_role: Role | None = None, **kw) -> Change:
    values = {
        "id": "chg-000000000000",
        "kind": kind,
        "team": "payments",
        "team_name": "Payments",
        "team_id": "PTEAM01",
        "email": "bob@example.com",
        "user_id": "PUSER01",
        "role": role,
        "from_role": from_role,
    }
    values.update(kw)
    return Change(**values)


CREATE = change(ChangeKind.CREATE_TEAM, team_id=None, email=None, user_id=None)
ADD = change(ChangeKind.ADD_MEMBER, R)
SET_ROLE = change(ChangeKind.SET_ROLE, R, from_role=OBS)
REMOVE = change(ChangeKind.REMOVE_MEMBER, from_role=R)


@pytest.mark.parametrize(
    ("the_change", "team_exists", "current", "expected"),
    [
        (CREATE, False, None, Decision(Action.WRITE, "create team 'Payments'")),
        (CREATE, True, None, Decision(Action.SKIP, "team 'Payments' already exists")),
        (ADD, True, None, Decision(Action.WRITE, "add as responder")),
        (ADD, True, R, Decision(Action.SKIP, "already a member as responder")),
        (ADD, True, M, Decision(Action.STALE, "now a member as manager; the plan expected no membership")),
        (SET_ROLE, True, OBS, Decision(Action.WRITE, "observer -> responder")),
        (SET_ROLE, True, R, Decision(Action.SKIP, "already a member as responder")),
        (SET_ROLE, True, M, Decision(Action.STALE, "now a member as manager; the plan expected observer")),
        (SET_ROLE, True, None, Decision(Action.STALE, "no longer a member; the plan expected observer")),
        (REMOVE, True, R, Decision(Action.WRITE, "remove (responder)")),
        (REMOVE, True, None, Decision(Action.SKIP, "already not a member")),
        (REMOVE, True, OBS, Decision(Action.STALE, "now a member as observer; the plan expected responder")),
        (ADD, False, None, Decision(Action.STALE, "team PTEAM01 no longer exists")),
        (REMOVE, False, None, Decision(Action.STALE, "team PTEAM01 no longer exists")),
    ],
)
def test_decide(the_change: Change, team_exists: bool, current: Role | None, expected: Decision) -> None:
    assert decide(the_change, team_exists=team_exists, current_role=current) == expected


def test_a_member_of_a_team_not_created_yet_fails_so_a_retry_can_add_it() -> None:
    joining = change(ChangeKind.ADD_MEMBER, R, team_id=None)
    decision = decide(joining, team_exists=False)
    assert decision == Decision(
        Action.FAIL, "team 'Payments' does not exist yet: its create_team change has not been applied"
    )


def test_a_membership_change_without_a_role_is_never_written() -> None:
    decision = decide(change(ChangeKind.ADD_MEMBER), team_exists=True)
    assert decision == Decision(Action.FAIL, "the add_member change names no role")


@pytest.mark.parametrize(
    ("the_change", "team_exists", "current", "holds"),
    [
        (CREATE, True, None, True),
        (CREATE, False, None, False),
        (ADD, True, R, True),
        (ADD, True, None, False),
        (ADD, True, M, False),
        (SET_ROLE, True, R, True),
        (SET_ROLE, True, OBS, False),
        (REMOVE, True, None, True),
        (REMOVE, True, R, False),
        (REMOVE, False, None, True),
        (ADD, False, None, False),
    ],
)
def test_converged(the_change: Change, team_exists: bool, current: Role | None, holds: bool) -> None:
    assert converged(the_change, team_exists=team_exists, current_role=current) is holds


def test_only_pending_and_failed_changes_are_attempted_again() -> None:
    assert {s for s in ChangeStatus if not s.terminal} == {ChangeStatus.PENDING, ChangeStatus.FAILED}
