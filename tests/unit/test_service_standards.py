"""The services kind's comparison: pure, on fixed fixtures."""

from __future__ import annotations

from nthlayer_pipelines.assets.pagerduty.services.compare import (
    ObservedServices,
    TeamContext,
    compare_standards,
)
from nthlayer_pipelines.assets.pagerduty.teams.decide import Action
from nthlayer_pipelines.core.fields import decide_fields
from nthlayer_pipelines.core.model import (
    ChangeKind,
    DesiredState,
    FindingKind,
    Member,
    Role,
    ScheduleRef,
    Service,
    ServiceStandard,
    Standard,
    StandardRule,
    StandardTarget,
    Team,
    Tier,
    Urgency,
)
from nthlayer_pipelines.core.plan import describe_change, describe_lines, ordered_plan
from nthlayer_pipelines.resources.pagerduty.models import (
    PagerDutyEscalationPolicy,
    PagerDutyEscalationRule,
    PagerDutySchedule,
    PagerDutyService,
    PagerDutyTarget,
    PagerDutyUrgencyRule,
)

CRITICAL = Standard(
    tier=Tier.CRITICAL,
    loops=2,
    rules=(
        StandardRule(targets=(StandardTarget(schedule="primary"),), escalate_after_minutes=5),
        StandardRule(
            targets=(StandardTarget(schedule="secondary"), StandardTarget(team_role=Role.MANAGER)),
            escalate_after_minutes=10,
        ),
    ),
    service=ServiceStandard(
        urgency=Urgency.HIGH, acknowledgement_timeout_minutes=10, auto_resolve_timeout_minutes=None
    ),
)
PAYMENTS = Team(
    name="payments",
    display_name="Payments",
    pagerduty_team_id="PT1",
    members=(Member(email="alice@example.com", role=Role.MANAGER),),
    schedules=(ScheduleRef(key="primary", ref="Payments Primary"), ScheduleRef(key="secondary", ref="PS2")),
)
API = Service(name="payment-api", team="payments", tier=Tier.CRITICAL, display_name="Payment API")
CONTEXT = {"payments": TeamContext("PT1", "Payments", {"alice@example.com": "PU1"})}
SCHEDULES = (PagerDutySchedule(id="PS1", name="Payments Primary"), PagerDutySchedule(id="PS2", name="Other"))
DEFAULT_POLICY = PagerDutyEscalationPolicy(
    id="PEP0",
    name="Payments default",
    team_ids=("PT1",),
    rules=(
        PagerDutyEscalationRule(
            escalation_delay_in_minutes=30, targets=(PagerDutyTarget(id="PU1", type="user_reference"),)
        ),
    ),
    service_ids=("PSVC1",),
)
SERVICE = PagerDutyService(
    id="PSVC1",
    name="Payment API",
    escalation_policy_id="PEP0",
    team_ids=("PT1",),
    acknowledgement_timeout=1800,
    auto_resolve_timeout=14400,
    urgency_rule=PagerDutyUrgencyRule(type="constant", urgency="low"),
)


def desired(*services: Service, teams: tuple[Team, ...] = (PAYMENTS,)) -> DesiredState:
    return DesiredState(teams=teams, services=services or (API,), standards=(CRITICAL,))


def managed_policy(**changes: object) -> PagerDutyEscalationPolicy:
    policy = PagerDutyEscalationPolicy(
        id="PEP9",
        name="Payments (critical)",
        team_ids=("PT1",),
        num_loops=2,
        rules=(
            PagerDutyEscalationRule(
                escalation_delay_in_minutes=5, targets=(PagerDutyTarget(id="PS1", type="schedule_reference"),)
            ),
            # PagerDuty's own order, not the standard's: compared as a set
            PagerDutyEscalationRule(
                escalation_delay_in_minutes=10,
                targets=(
                    PagerDutyTarget(id="PU1", type="user_reference"),
                    PagerDutyTarget(id="PS2", type="schedule_reference"),
                ),
            ),
        ),
        service_ids=(),
    )
    return policy.model_copy(update=changes)


def test_a_drifted_critical_service_gets_its_policy_created_pointed_at_and_its_fields_set() -> None:
    observed = ObservedServices(services=(SERVICE,), policies=(DEFAULT_POLICY,), schedules=SCHEDULES)
    result = compare_standards(desired(), observed, CONTEXT)
    assert not result.findings
    plan = ordered_plan(result.changes, [])
    kinds = [c.kind for c in plan.changes]
    assert kinds == [
        ChangeKind.CREATE_ESCALATION_POLICY,
        ChangeKind.SET_SERVICE_POLICY,
        ChangeKind.UPDATE_SERVICE,
    ]
    create, repoint, update = plan.changes
    assert create.target_name == "Payments (critical)" and create.team_id == "PT1"
    rules = create.field("escalation_rules")
    assert rules is not None and rules.after == [
        {"escalation_delay_in_minutes": 5, "targets": [{"id": "PS1", "type": "schedule_reference"}]},
        {
            "escalation_delay_in_minutes": 10,
            "targets": [{"id": "PS2", "type": "schedule_reference"}, {"id": "PU1", "type": "user_reference"}],
        },
    ]
    assert repoint.field("escalation_policy").after == {"id": None, "name": "Payments (critical)"}  # type: ignore[union-attr]
    assert {f.name: (f.before, f.after) for f in update.fields} == {
        "incident_urgency_rule": (
            {"type": "constant", "urgency": "low"},
            {"type": "constant", "urgency": "high"},
        ),
        "acknowledgement_timeout": (1800, 600),
        "auto_resolve_timeout": (14400, None),
    }
    assert describe_lines(update)[1:] == [
        "    incident_urgency_rule: low → high",
        "    acknowledgement_timeout: 1800 → 600",
        "    auto_resolve_timeout: 14400 → off",
    ]
    assert describe_change(update).startswith(
        '~ service "Payment API" (PSVC1), team payments (Payments, PT1)'
    )
    assert describe_lines(repoint)[1:] == [
        '    escalation_policy: "Payments default" (PEP0) → "Payments (critical)" (new)'
    ]
    assert create.risk.value == "low" and repoint.risk.value == "privileged"


def test_a_policy_that_matches_with_targets_in_pagerdutys_order_is_no_change() -> None:
    service = SERVICE.model_copy(
        update={
            "escalation_policy_id": "PEP9",
            "acknowledgement_timeout": 600,
            "auto_resolve_timeout": None,
            "urgency_rule": PagerDutyUrgencyRule(type="constant", urgency="high"),
        }
    )
    policy = managed_policy(service_ids=("PSVC1",))
    result = compare_standards(desired(), ObservedServices((service,), (policy,), SCHEDULES), CONTEXT)
    assert result.changes == [] and result.findings == []


def test_a_policy_whose_rules_drifted_is_updated_field_by_field() -> None:
    policy = managed_policy(num_loops=0, service_ids=("PSVC1",))
    service = SERVICE.model_copy(update={"escalation_policy_id": "PEP9"})
    result = compare_standards(desired(), ObservedServices((service,), (policy,), SCHEDULES), CONTEXT)
    update = next(c for c in result.changes if c.kind is ChangeKind.UPDATE_ESCALATION_POLICY)
    assert [(f.name, f.before, f.after) for f in update.fields] == [("num_loops", 0, 2)]
    assert update.target_id == "PEP9"
    assert not any(c.kind is ChangeKind.SET_SERVICE_POLICY for c in result.changes)


def test_ids_are_stable_and_cover_what_is_written() -> None:
    observed = ObservedServices(services=(SERVICE,), policies=(DEFAULT_POLICY,), schedules=SCHEDULES)
    first = compare_standards(desired(), observed, CONTEXT).changes
    again = compare_standards(desired(), observed, CONTEXT).changes
    assert [c.id for c in first] == [c.id for c in again]
    slower = CRITICAL.model_copy(
        update={"service": CRITICAL.service.model_copy(update={"acknowledgement_timeout_minutes": 20})}
    )
    other = compare_standards(
        DesiredState(teams=(PAYMENTS,), services=(API,), standards=(slower,)), observed, CONTEXT
    ).changes
    assert {c.id for c in other} & {c.id for c in first} == {
        c.id for c in first if c.kind is not ChangeKind.UPDATE_SERVICE
    }
    # what was found counts in the plan's id, not the change's
    found_other = SERVICE.model_copy(update={"acknowledgement_timeout": 900})
    moved = compare_standards(
        desired(), ObservedServices((found_other,), (DEFAULT_POLICY,), SCHEDULES), CONTEXT
    )
    assert {c.id for c in moved.changes} == {c.id for c in first}
    assert ordered_plan(moved.changes, []).id != ordered_plan(first, []).id


def test_a_service_is_never_guessed_between_look_alikes() -> None:
    twin = SERVICE.model_copy(update={"id": "PSVC2", "name": "payment  API"})
    result = compare_standards(
        desired(), ObservedServices((SERVICE, twin), (DEFAULT_POLICY,), SCHEDULES), CONTEXT
    )
    assert [f.kind for f in result.findings] == [FindingKind.AMBIGUOUS_SERVICE]
    assert "PSVC1" in result.findings[0].detail and "PSVC2" in result.findings[0].detail
    assert result.changes == []


def test_a_pinned_service_is_found_by_its_id_and_a_missing_one_is_a_finding() -> None:
    pinned = API.model_copy(update={"pagerduty_service_id": "PSVC1", "display_name": "Payments API v2"})
    result = compare_standards(
        desired(pinned), ObservedServices((SERVICE,), (DEFAULT_POLICY,), SCHEDULES), CONTEXT
    )
    assert [f.kind for f in result.findings] == [FindingKind.PINNED_SERVICE_NAME_MISMATCH]
    assert result.changes
    gone = API.model_copy(update={"pagerduty_service_id": "PNOPE"})
    result = compare_standards(
        desired(gone), ObservedServices((SERVICE,), (DEFAULT_POLICY,), SCHEDULES), CONTEXT
    )
    kinds = {f.kind for f in result.findings}
    assert FindingKind.MISSING_SERVICE in kinds and not result.changes


def test_a_standard_that_cannot_be_met_plans_no_policy() -> None:
    no_managers = PAYMENTS.model_copy(
        update={"members": (Member(email="bob@example.com", role=Role.RESPONDER),)}
    )
    result = compare_standards(
        desired(teams=(no_managers,)), ObservedServices((SERVICE,), (DEFAULT_POLICY,), SCHEDULES), CONTEXT
    )
    unmet = [f for f in result.findings if f.kind is FindingKind.STANDARD_UNMET]
    assert len(unmet) == 1 and "managers of 'payments'" in unmet[0].detail
    assert {c.kind for c in result.changes} == {ChangeKind.UPDATE_SERVICE}  # its fields still set


def test_a_declared_schedule_pagerduty_lacks_is_a_finding() -> None:
    result = compare_standards(
        desired(), ObservedServices((SERVICE,), (DEFAULT_POLICY,), (SCHEDULES[1],)), CONTEXT
    )
    missing = [f for f in result.findings if f.kind is FindingKind.MISSING_SCHEDULE]
    assert len(missing) == 1 and "Payments Primary" in missing[0].detail
    assert not any(c.kind is ChangeKind.CREATE_ESCALATION_POLICY for c in result.changes)


def test_unclaimed_services_of_a_declared_team_and_unused_managed_policies_are_findings() -> None:
    stray = SERVICE.model_copy(update={"id": "PSVC7", "name": "Payments Batch"})
    elsewhere = SERVICE.model_copy(
        update={"id": "PSVC8", "name": "Search", "team_ids": ("PT2",), "escalation_policy_id": "PEP5"}
    )
    unused = managed_policy(id="PEP4", name="Payments (high)")
    high = CRITICAL.model_copy(update={"tier": Tier.HIGH})
    state = DesiredState(teams=(PAYMENTS,), services=(API,), standards=(CRITICAL, high))
    result = compare_standards(
        state, ObservedServices((SERVICE, stray, elsewhere), (DEFAULT_POLICY, unused), SCHEDULES), CONTEXT
    )
    found = {(f.kind, f.subject) for f in result.findings}
    assert (FindingKind.UNMANAGED_SERVICE, "Payments Batch") in found
    assert (FindingKind.UNUSED_MANAGED_POLICY, "Payments (high)") in found
    assert not any(f.subject == "Search" for f in result.findings)


def test_no_declared_service_compares_nothing() -> None:
    state = DesiredState(teams=(PAYMENTS,), standards=(CRITICAL,))
    result = compare_standards(state, ObservedServices((SERVICE,), (DEFAULT_POLICY,), SCHEDULES), CONTEXT)
    assert result.changes == [] and result.findings == []


def test_decide_fields_writes_what_is_still_as_found_and_leaves_what_moved() -> None:
    observed = ObservedServices(services=(SERVICE,), policies=(DEFAULT_POLICY,), schedules=SCHEDULES)
    update = next(
        c
        for c in compare_standards(desired(), observed, CONTEXT).changes
        if c.kind is ChangeKind.UPDATE_SERVICE
    )
    as_found = {
        "incident_urgency_rule": {"type": "constant", "urgency": "low"},
        "acknowledgement_timeout": 1800,
        "auto_resolve_timeout": 14400,
    }
    assert decide_fields(update, as_found).decision.action is Action.WRITE
    half = {**as_found, "acknowledgement_timeout": 600}
    verdict = decide_fields(update, half)
    assert verdict.decision.action is Action.WRITE
    assert [f.name for f in verdict.to_write] == ["incident_urgency_rule", "auto_resolve_timeout"]
    moved = {**as_found, "acknowledgement_timeout": 900}
    assert decide_fields(update, moved).decision.action is Action.STALE
    done = {
        "incident_urgency_rule": {"type": "constant", "urgency": "high"},
        "acknowledgement_timeout": 600,
        "auto_resolve_timeout": None,
    }
    assert decide_fields(update, done).decision.action is Action.SKIP
