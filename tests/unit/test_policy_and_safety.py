"""The pre-approval policy and the blast-radius verdict: pure functions of a plan."""

from __future__ import annotations

import pytest

from nthlayer_pipelines.core.model import Change, ChangeKind, Finding, FindingKind, Plan, Role
from nthlayer_pipelines.core.policy import (
    DEFAULT_MAX_PRE_APPROVED,
    DEFAULT_PRE_APPROVED,
    ApprovalPolicy,
    over_volume_cap,
    parse_pre_approved,
    pre_approved_changes,
)
from nthlayer_pipelines.core.safety import (
    BlastRadius,
    BlastRadiusLimits,
    TeamRoster,
    assess_blast_radius,
    rosters_from_members,
    rosters_from_memberships,
)
from nthlayer_pipelines.definitions import build_resources
from nthlayer_pipelines.resources.pagerduty.observed import memberships_frame
from tests.reliability import Reliability


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


def plan_of(*changes: Change, findings: tuple[Finding, ...] = ()) -> Plan:
    return Plan(id=Plan.make_id(changes), changes=changes, findings=findings)


def removals(team: str, team_id: str, count: int) -> list[Change]:
    return [
        change(ChangeKind.REMOVE_MEMBER, team, f"{team}{i}@example.com", None, Role.RESPONDER, team_id)
        for i in range(count)
    ]


# ---- the pre-approval policy -----------------------------------------------------------------------------


def test_default_policy_pre_approves_additions_and_creations_only() -> None:
    assert ApprovalPolicy().pre_approved == DEFAULT_PRE_APPROVED
    creations = {ChangeKind.ADD_MEMBER, ChangeKind.CREATE_TEAM, ChangeKind.CREATE_ESCALATION_POLICY}
    assert frozenset(creations) == DEFAULT_PRE_APPROVED


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
    every_kind = (
        "create_team, create_escalation_policy, add_member, set_role, update_escalation_policy, "
        "set_service_policy, update_service, remove_member"
    )
    assert every_kind in message


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


def test_removals_from_a_pinned_team_named_otherwise_are_never_pre_approved() -> None:
    """Whatever NTHLAYER_PRE_APPROVED_KINDS says: the pin may name the wrong team."""
    mismatch = Finding(kind=FindingKind.PINNED_TEAM_NAME_MISMATCH, team="payments", detail="...")
    remove = change(ChangeKind.REMOVE_MEMBER, from_role=Role.RESPONDER)
    add = change(ChangeKind.ADD_MEMBER, email="b@example.com", role=Role.RESPONDER)
    elsewhere = change(
        ChangeKind.REMOVE_MEMBER, team="search", email="c@example.com", from_role=Role.OBSERVER
    )
    everything = ApprovalPolicy(frozenset(ChangeKind))
    plan = plan_of(add, remove, elsewhere, findings=(mismatch,))
    assert pre_approved_changes(plan, everything) == (add, elsewhere)
    assert pre_approved_changes(plan_of(add, remove, elsewhere), everything) == (add, remove, elsewhere)


def test_a_removal_paired_with_an_unresolved_address_is_never_pre_approved() -> None:
    renamed = Finding(kind=FindingKind.POSSIBLE_EMAIL_RENAME, team="payments", email="bob@old.example.com")
    paired = change(ChangeKind.REMOVE_MEMBER, email="bob@old.example.com", from_role=Role.RESPONDER)
    other = change(ChangeKind.REMOVE_MEMBER, email="dan@example.com", from_role=Role.RESPONDER)
    plan = plan_of(paired, other, findings=(renamed,))
    assert pre_approved_changes(plan, ApprovalPolicy(frozenset(ChangeKind))) == (other,)


def additions(count: int) -> list[Change]:
    return [
        change(ChangeKind.ADD_MEMBER, email=f"p{i}@example.com", role=Role.RESPONDER) for i in range(count)
    ]


def test_past_the_volume_cap_the_policy_approves_nothing_of_the_plan() -> None:
    assert DEFAULT_MAX_PRE_APPROVED == ApprovalPolicy().max_changes == 50
    at_cap = plan_of(*additions(50))
    assert pre_approved_changes(at_cap, ApprovalPolicy()) == at_cap.changes
    assert over_volume_cap(at_cap, ApprovalPolicy()) == ""
    over = plan_of(*additions(51), change(ChangeKind.REMOVE_MEMBER, email="x@example.com"))
    assert pre_approved_changes(over, ApprovalPolicy()) == ()
    assert over_volume_cap(over, ApprovalPolicy()) == (
        "51 changes would be pre-approved, more than NTHLAYER_MAX_PRE_APPROVED_CHANGES (50): "
        "the policy approves none of them, a person approves the plan"
    )
    # The cap counts what the policy would approve, not the plan: 51 changes, 50 of them additions.
    mixed = plan_of(*additions(50), change(ChangeKind.REMOVE_MEMBER, email="x@example.com"))
    assert len(pre_approved_changes(mixed, ApprovalPolicy())) == 50


def test_the_volume_cap_is_the_deployments_setting() -> None:
    reconcile = build_resources({"NTHLAYER_MAX_PRE_APPROVED_CHANGES": "3"})["reconcile"]
    assert reconcile.approval_policy().max_changes == 3
    assert pre_approved_changes(plan_of(*additions(4)), reconcile.approval_policy()) == ()
    assert build_resources({})["reconcile"].approval_policy().max_changes == DEFAULT_MAX_PRE_APPROVED
    with pytest.raises(ValueError, match="NTHLAYER_MAX_PRE_APPROVED_CHANGES must not be negative"):
        ApprovalPolicy(max_changes=-1)


# ---- blast radius -------------------------------------------------------------------------------------


def roster(members: int, managers: int = 1) -> TeamRoster:
    return TeamRoster(members=members, managers=managers)


def test_one_removal_from_a_small_team_is_not_a_mass_removal() -> None:
    verdict = assess_blast_radius(plan_of(*removals("payments", "P1", 1)), {"P1": roster(4)})
    assert verdict == BlastRadius(exceeded=False, reasons=(), removals=1)


def test_a_team_losing_most_members_exceeds_with_a_readable_reason() -> None:
    verdict = assess_blast_radius(plan_of(*removals("payments", "P1", 3)), {"P1": roster(4)})
    assert verdict == BlastRadius(
        exceeded=True, reasons=("payments (P1): 3 of 4 members removed (75 % > 20 %)",), removals=3
    )


def test_team_share_at_the_limit_passes_and_just_over_it_exceeds() -> None:
    at_limit = assess_blast_radius(plan_of(*removals("payments", "P1", 2)), {"P1": roster(10)})
    assert not at_limit.exceeded  # 20 % is not more than 20 %
    over = assess_blast_radius(plan_of(*removals("payments", "P1", 2)), {"P1": roster(9)})
    assert over.reasons == ("payments (P1): 2 of 9 members removed (22.2 % > 20 %)",)


def test_min_team_removals_is_the_floor_for_a_team_to_count() -> None:
    limits = BlastRadiusLimits(min_team_removals=3)
    assert not assess_blast_radius(plan_of(*removals("ops", "P1", 2)), {"P1": roster(3)}, limits).exceeded
    verdict = assess_blast_radius(plan_of(*removals("ops", "P1", 3)), {"P1": roster(4)}, limits)
    assert verdict.reasons == ("ops (P1): 3 of 4 members removed (75 % > 20 %)",)


def test_total_removals_at_the_cap_pass_and_one_more_exceeds() -> None:
    # 50 teams of 20 members, one removal each: no team is over its share.
    at_cap = [r for i in range(50) for r in removals(f"team{i:02}", f"P{i:02}", 1)]
    rosters = {f"P{i:02}": roster(20) for i in range(52)}
    assert assess_blast_radius(plan_of(*at_cap), rosters) == BlastRadius(False, (), 50)
    over = at_cap + removals("team50", "P50", 1) + removals("team51", "P51", 1)
    verdict = assess_blast_radius(plan_of(*over), rosters)
    assert verdict == BlastRadius(True, ("52 removals in all > 50",), 52)


def test_every_reason_is_listed_by_team() -> None:
    plan = plan_of(*removals("search", "P2", 2), *removals("payments", "P1", 3))
    verdict = assess_blast_radius(
        plan, {"P1": roster(4), "P2": roster(2, 0)}, BlastRadiusLimits(max_total_removals=4)
    )
    assert verdict.reasons == (
        "payments (P1): 3 of 4 members removed (75 % > 20 %)",
        "search (P2): the plan removes every member (2 of 2)",
        "5 removals in all > 4",
    )


def test_a_team_of_unknown_size_is_judged_as_losing_everything() -> None:
    verdict = assess_blast_radius(plan_of(*removals("payments", "P1", 1)), {})
    assert verdict.reasons == ("payments (P1): the plan removes every member (1 of 1)",)


def test_additions_do_not_count_toward_the_blast_radius() -> None:
    plan = plan_of(*(change(ChangeKind.ADD_MEMBER, email=f"{i}@x.io", role=Role.OBSERVER) for i in range(60)))
    assert assess_blast_radius(plan, {"PTEAM01": roster(1)}) == BlastRadius(False, (), 0)


# ---- small teams: whatever the share, a plan never leaves a team without a manager or a member --------


def manager_removed(email: str = "alice@example.com", team_id: str = "PABC123") -> Change:
    return change(ChangeKind.REMOVE_MEMBER, email=email, from_role=Role.MANAGER, team_id=team_id)


def test_removing_the_only_manager_of_a_large_team_is_over_the_blast_radius(
    reliability: Reliability,
) -> None:
    verdict = assess_blast_radius(plan_of(manager_removed()), {"PABC123": roster(30, managers=1)})
    reliability.count(
        "small teams", small_team_scenarios=1, small_team_plans_let_through=int(not verdict.exceeded)
    )
    assert verdict == BlastRadius(
        True,
        ("payments (PABC123): the plan leaves no manager (removes alice@example.com, the only one)",),
        1,
    )


def test_demoting_the_only_manager_is_over_the_blast_radius(reliability: Reliability) -> None:
    demote = change(
        ChangeKind.SET_ROLE, email="alice@example.com", role=Role.RESPONDER, from_role=Role.MANAGER
    )
    verdict = assess_blast_radius(plan_of(demote), {"PTEAM01": roster(8, managers=1)})
    reliability.count(
        "small teams", small_team_scenarios=1, small_team_plans_let_through=int(not verdict.exceeded)
    )
    assert verdict.reasons == (
        "payments (PTEAM01): the plan leaves no manager "
        "(demotes alice@example.com to responder, the only one)",
    )


def test_removing_both_managers_of_a_team_says_both() -> None:
    plan = plan_of(manager_removed("alice@example.com"), manager_removed("bob@example.com"))
    verdict = assess_blast_radius(plan, {"PABC123": roster(40, managers=2)})
    assert verdict.reasons == (
        "payments (PABC123): the plan leaves no manager "
        "(removes alice@example.com, bob@example.com, both of them)",
    )


def test_a_manager_replaced_in_the_same_plan_leaves_the_team_a_manager() -> None:
    promoted = change(
        ChangeKind.SET_ROLE, email="bob@example.com", role=Role.MANAGER, from_role=Role.RESPONDER
    )
    added = change(ChangeKind.ADD_MEMBER, email="carol@example.com", role=Role.MANAGER, team_id="PABC123")
    rosters = {"PABC123": roster(30, managers=1), "PTEAM01": roster(30, managers=1)}
    assert not assess_blast_radius(plan_of(manager_removed(), added), rosters).exceeded
    demote = change(
        ChangeKind.SET_ROLE, email="alice@example.com", role=Role.OBSERVER, from_role=Role.MANAGER
    )
    assert not assess_blast_radius(plan_of(demote, promoted), rosters).exceeded
    # Another manager staying is enough.
    assert not assess_blast_radius(plan_of(manager_removed()), {"PABC123": roster(30, managers=2)}).exceeded


def test_a_team_that_had_no_manager_is_not_blamed_on_the_plan() -> None:
    verdict = assess_blast_radius(plan_of(*removals("ops", "P1", 1)), {"P1": roster(6, managers=0)})
    assert not verdict.exceeded


def test_emptying_a_one_person_team_is_over_the_blast_radius(reliability: Reliability) -> None:
    """One removal is under the floor of two: only the small-team rule sees the team go empty."""
    only = change(ChangeKind.REMOVE_MEMBER, email="dan@example.com", from_role=Role.RESPONDER)
    verdict = assess_blast_radius(plan_of(only), {"PTEAM01": roster(1, managers=0)})
    assert verdict.reasons == ("payments (PTEAM01): the plan removes every member (1 of 1)",)
    both = assess_blast_radius(plan_of(manager_removed()), {"PABC123": roster(1, managers=1)})
    let_through = int(not verdict.exceeded) + int(not both.exceeded)
    reliability.count("small teams", small_team_scenarios=2, small_team_plans_let_through=let_through)
    assert both.reasons == (
        "payments (PABC123): the plan removes every member (1 of 1)",
        "payments (PABC123): the plan leaves no manager (removes alice@example.com, the only one)",
    )


def test_swapping_every_member_of_a_team_is_over_the_blast_radius() -> None:
    """Every member removed counts even when others are added: a whole roster replaced is what an
    identity mix-up looks like."""
    plan = plan_of(
        *removals("payments", "P1", 2),
        *(
            change(ChangeKind.ADD_MEMBER, email=f"n{i}@x.io", role=Role.RESPONDER, team_id="P1")
            for i in range(2)
        ),
    )
    assert assess_blast_radius(plan, {"P1": roster(2, managers=0)}).reasons == (
        "payments (P1): the plan removes every member (2 of 2)",
    )


def test_rosters_come_from_a_memberships_table_or_from_members_read_live() -> None:
    table = memberships_frame(
        [
            {"team_id": "PABC123", "user_id": "PU1", "role": "manager"},
            {"team_id": "PABC123", "user_id": "PU2", "role": "responder"},
            {"team_id": "PDEF456", "user_id": "PU2", "role": "observer"},
        ]
    )
    live = {"PABC123": {"PU1": Role.MANAGER, "PU2": Role.RESPONDER}, "PDEF456": {"PU2": "observer"}}
    expected = {"PABC123": TeamRoster(2, 1), "PDEF456": TeamRoster(1, 0)}
    assert rosters_from_memberships(table) == rosters_from_members(live) == expected
    assert rosters_from_memberships(memberships_frame()) == {} == rosters_from_members({})


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


def test_the_settings_default_is_the_policys_default() -> None:
    from nthlayer_pipelines.resources.settings import ReconcileSettings

    assert ReconcileSettings().approval_policy().pre_approved == DEFAULT_PRE_APPROVED
