"""The pre-approval policy and the blast-radius verdict: pure functions of a plan."""

from __future__ import annotations

import pytest

from nthlayer_pipelines.model import Change, ChangeKind, Plan, Role
from nthlayer_pipelines.reconcile.policy import (
    DEFAULT_PRE_APPROVED,
    ApprovalPolicy,
    parse_pre_approved,
    pre_approved_changes,
)
from nthlayer_pipelines.reconcile.safety import BlastRadius, BlastRadiusLimits, assess_blast_radius


def change(
    kind: ChangeKind,
    team: str = "payments",
    email: str | None = "a@example.com",
    role: Role | None = None,
    from_role: Role | None = None,
    team_id: str | None = "PTEAM01",
) -> Change:
    return Change.planned(
        "pagerduty",
        kind,
        team=team,
        team_name=team.title(),
        team_id=team_id,
        email=email,
        user_id=f"U-{email}" if email else None,
        role=role,
        from_role=from_role,
    )


def plan_of(*changes: Change) -> Plan:
    return Plan(id=Plan.make_id(changes), changes=changes)


def removals(team: str, team_id: str, count: int) -> list[Change]:
    return [
        change(ChangeKind.REMOVE_MEMBER, team, f"{team}{i}@example.com", None, Role.RESPONDER, team_id)
        for i in range(count)
    ]


# ---- the pre-approval policy -----------------------------------------------------------------------------


def test_default_policy_pre_approves_additions_and_creations_only() -> None:
    assert ApprovalPolicy().pre_approved == DEFAULT_PRE_APPROVED
    assert frozenset({ChangeKind.ADD_MEMBER, ChangeKind.CREATE_TEAM}) == DEFAULT_PRE_APPROVED


def test_parse_pre_approved_reads_a_comma_separated_list() -> None:
    assert parse_pre_approved(" add_member, CREATE_TEAM ,") == {ChangeKind.ADD_MEMBER, ChangeKind.CREATE_TEAM}
    assert parse_pre_approved("set_role") == {ChangeKind.SET_ROLE}


@pytest.mark.parametrize("text", ["", "  ", ","])
def test_parse_pre_approved_of_nothing_is_none(text: str) -> None:
    assert parse_pre_approved(text) == frozenset()


def test_parse_pre_approved_names_the_variable_and_the_bad_kind() -> None:
    with pytest.raises(ValueError) as raised:
        parse_pre_approved("add_member,delete_everything")
    message = str(raised.value)
    assert "NTHLAYER_PRE_APPROVED_KINDS" in message
    assert "'delete_everything' is not a change kind" in message
    assert "create_team, add_member, set_role, remove_member" in message


def test_removals_and_role_changes_wait_for_a_person_by_default() -> None:
    add = change(ChangeKind.ADD_MEMBER, role=Role.RESPONDER)
    promote = change(ChangeKind.SET_ROLE, email="b@example.com", role=Role.MANAGER, from_role=Role.RESPONDER)
    remove = change(ChangeKind.REMOVE_MEMBER, email="c@example.com", from_role=Role.OBSERVER)
    assert pre_approved_changes(plan_of(add, promote, remove), ApprovalPolicy()) == (add,)


def test_an_addition_as_manager_always_waits_for_a_person() -> None:
    manager = change(ChangeKind.ADD_MEMBER, role=Role.MANAGER)
    observer = change(ChangeKind.ADD_MEMBER, email="b@example.com", role=Role.OBSERVER)
    assert pre_approved_changes(plan_of(manager, observer), ApprovalPolicy()) == (observer,)


def test_members_of_a_new_team_wait_when_its_creation_is_not_pre_approved() -> None:
    create = change(ChangeKind.CREATE_TEAM, team="search", email=None, team_id=None)
    join_new = change(ChangeKind.ADD_MEMBER, team="search", role=Role.RESPONDER, team_id=None)
    join_old = change(ChangeKind.ADD_MEMBER, team="payments", role=Role.RESPONDER)
    plan = plan_of(create, join_new, join_old)
    assert pre_approved_changes(plan, ApprovalPolicy(frozenset({ChangeKind.ADD_MEMBER}))) == (join_old,)
    assert pre_approved_changes(plan, ApprovalPolicy()) == (create, join_new, join_old)


def test_an_empty_policy_pre_approves_nothing() -> None:
    plan = plan_of(change(ChangeKind.ADD_MEMBER, role=Role.RESPONDER))
    assert pre_approved_changes(plan, ApprovalPolicy(frozenset())) == ()


# ---- blast radius -------------------------------------------------------------------------------------


def test_one_removal_from_a_small_team_is_not_a_mass_removal() -> None:
    verdict = assess_blast_radius(plan_of(*removals("payments", "P1", 1)), {"P1": 4})
    assert verdict == BlastRadius(exceeded=False, reasons=(), removals=1)


def test_a_team_losing_most_members_exceeds_with_a_readable_reason() -> None:
    verdict = assess_blast_radius(plan_of(*removals("payments", "P1", 3)), {"P1": 4})
    assert verdict == BlastRadius(
        exceeded=True, reasons=("payments: 3 of 4 members removed (75 % > 20 %)",), removals=3
    )


def test_team_share_at_the_limit_passes_and_just_over_it_exceeds() -> None:
    at_limit = assess_blast_radius(plan_of(*removals("payments", "P1", 2)), {"P1": 10})
    assert not at_limit.exceeded  # 20 % is not more than 20 %
    over = assess_blast_radius(plan_of(*removals("payments", "P1", 2)), {"P1": 9})
    assert over.reasons == ("payments: 2 of 9 members removed (22.2 % > 20 %)",)


def test_min_team_removals_is_the_floor_for_a_team_to_count() -> None:
    limits = BlastRadiusLimits(min_team_removals=3)
    assert not assess_blast_radius(plan_of(*removals("ops", "P1", 2)), {"P1": 2}, limits).exceeded
    verdict = assess_blast_radius(plan_of(*removals("ops", "P1", 3)), {"P1": 3}, limits)
    assert verdict.reasons == ("ops: 3 of 3 members removed (100 % > 20 %)",)


def test_total_removals_at_the_cap_pass_and_one_more_exceeds() -> None:
    # 50 teams of 20 members, one removal each: no team is over its share.
    at_cap = [r for i in range(50) for r in removals(f"team{i:02}", f"P{i:02}", 1)]
    sizes = {f"P{i:02}": 20 for i in range(52)}
    assert assess_blast_radius(plan_of(*at_cap), sizes) == BlastRadius(False, (), 50)
    over = at_cap + removals("team50", "P50", 1) + removals("team51", "P51", 1)
    verdict = assess_blast_radius(plan_of(*over), sizes)
    assert verdict == BlastRadius(True, ("52 removals in all > 50",), 52)


def test_every_reason_is_listed_by_team() -> None:
    plan = plan_of(*removals("search", "P2", 2), *removals("payments", "P1", 3))
    verdict = assess_blast_radius(plan, {"P1": 4, "P2": 2}, BlastRadiusLimits(max_total_removals=4))
    assert verdict.reasons == (
        "payments: 3 of 4 members removed (75 % > 20 %)",
        "search: 2 of 2 members removed (100 % > 20 %)",
        "5 removals in all > 4",
    )


def test_a_team_of_unknown_size_is_judged_as_losing_everything() -> None:
    verdict = assess_blast_radius(plan_of(*removals("payments", "P1", 2)), {})
    assert verdict.reasons == ("payments: 2 of 2 members removed (100 % > 20 %)",)


def test_additions_do_not_count_toward_the_blast_radius() -> None:
    plan = plan_of(*(change(ChangeKind.ADD_MEMBER, email=f"{i}@x.io", role=Role.OBSERVER) for i in range(60)))
    assert assess_blast_radius(plan, {"PTEAM01": 1}) == BlastRadius(False, (), 0)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_team_removal_share", 1.5, "between 0 and 1"),
        ("min_team_removals", 0, "at least 1"),
        ("max_total_removals", -1, "must not be negative"),
    ],
)
def test_limits_refuse_nonsense_naming_the_field(field: str, value: float, words: str) -> None:
    with pytest.raises(ValueError, match=words) as raised:
        BlastRadiusLimits(**{field: value})
    assert field in str(raised.value)
