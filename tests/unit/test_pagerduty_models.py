"""The PagerDuty models of services, escalation policies and schedules read from the shapes PagerDuty
answers with, odd ones included: null lists, the aliases of a target's type, a use_support_hours urgency
rule, and what they send back."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nthlayer_pipelines.resources.pagerduty.models import (
    EscalationRuleSpec,
    PagerDutyEscalationPolicy,
    PagerDutyEscalationRule,
    PagerDutySchedule,
    PagerDutyService,
    PagerDutyTarget,
    PagerDutyUrgencyRule,
)


def ref(object_id: str, kind: str) -> dict[str, str]:
    return {"id": object_id, "type": kind, "summary": object_id, "self": f"https://api/{object_id}"}


POLICY: dict[str, Any] = {
    "id": "PEP0001",
    "type": "escalation_policy",
    "name": "Payments (critical)",
    "html_url": "https://acme.pagerduty.com/escalation_policies/PEP0001",
    "num_loops": 2,
    "teams": [ref("PTEAM01", "team_reference")],
    "services": [ref("PSVC001", "service_reference"), ref("PSVC002", "service_reference")],
    "escalation_rules": [
        {
            "id": "PRULE01",
            "escalation_delay_in_minutes": 10,
            "targets": [ref("PSCHED1", "schedule_reference")],
        },
        {
            "id": "PRULE02",
            "escalation_delay_in_minutes": 20,
            "targets": [
                ref("PUSER02", "user"),
                ref("PSCHED2", "schedule_v3_reference"),
                ref("PUSER01", "user"),
            ],
        },
    ],
}


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("user", "user_reference"),
        ("user_reference", "user_reference"),
        ("schedule", "schedule_reference"),
        ("schedule_reference", "schedule_reference"),
        ("schedule_v3_reference", "schedule_reference"),
    ],
)
def test_a_targets_type_is_normalised_from_each_alias(given: str, normalised: str) -> None:
    assert PagerDutyTarget.model_validate(ref("P1", given)).type == normalised


@pytest.mark.parametrize("kind", ["team_reference", "escalation_policy_reference", "", "User"])
def test_a_target_that_is_neither_user_nor_schedule_is_refused(kind: str) -> None:
    with pytest.raises(ValidationError, match="is not a user or schedule target"):
        PagerDutyTarget(id="P1", type=kind)


def test_a_policy_reads_its_rules_in_order_with_targets_in_pagerdutys_order() -> None:
    policy = PagerDutyEscalationPolicy.from_api(POLICY)
    assert policy == PagerDutyEscalationPolicy(
        id="PEP0001",
        name="Payments (critical)",
        team_ids=("PTEAM01",),
        user_ids=("PUSER02", "PUSER01"),
        num_loops=2,
        rules=(
            PagerDutyEscalationRule(
                id="PRULE01",
                escalation_delay_in_minutes=10,
                targets=(PagerDutyTarget(id="PSCHED1", type="schedule_reference"),),
            ),
            PagerDutyEscalationRule(
                id="PRULE02",
                escalation_delay_in_minutes=20,
                targets=(
                    PagerDutyTarget(id="PUSER02", type="user_reference"),
                    PagerDutyTarget(id="PSCHED2", type="schedule_reference"),
                    PagerDutyTarget(id="PUSER01", type="user_reference"),
                ),
            ),
        ),
        service_ids=("PSVC001", "PSVC002"),
        html_url="https://acme.pagerduty.com/escalation_policies/PEP0001",
    )


def test_a_user_targeted_by_several_rules_is_one_of_the_policys_users() -> None:
    rules = [
        {"escalation_delay_in_minutes": 5, "targets": [ref("PUSER01", "user_reference")]},
        {"escalation_delay_in_minutes": 5, "targets": [ref("PUSER01", "user"), ref("PUSER03", "user")]},
    ]
    policy = PagerDutyEscalationPolicy.from_api({**POLICY, "escalation_rules": rules})
    assert policy.user_ids == ("PUSER01", "PUSER03")
    assert [rule.id for rule in policy.rules] == [None, None]


def test_null_lists_and_loops_read_as_none() -> None:
    bare = {"id": "PEP0002", "name": "Bare", "teams": None, "services": None, "num_loops": None}
    policy = PagerDutyEscalationPolicy.from_api({**bare, "escalation_rules": None})
    assert (policy.team_ids, policy.service_ids, policy.rules, policy.num_loops, policy.user_ids) == (
        (),
        (),
        (),
        0,
        (),
    )
    rule = {"escalation_delay_in_minutes": 5, "targets": None}
    assert PagerDutyEscalationPolicy.from_api({**bare, "escalation_rules": [rule]}).rules[0].targets == ()
    service = PagerDutyService.from_api(
        {"id": "PSVC001", "name": "API", "escalation_policy": ref("PEP0001", "escalation_policy_reference")}
        | {"teams": None, "incident_urgency_rule": None, "acknowledgement_timeout": None}
    )
    assert (service.team_ids, service.urgency_rule, service.acknowledgement_timeout) == ((), None, None)
    assert PagerDutySchedule.from_api({"id": "PSCHED1", "name": "Primary", "teams": None}).team_ids == ()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"escalation_rules": "all of them"}, "escalation_rules: expected a list of objects"),
        ({"teams": [None]}, "teams: expected a list of objects"),
        ({"escalation_rules": [{"targets": []}]}, "rules.0.escalation_delay_in_minutes"),
        ({"escalation_rules": [{"escalation_delay_in_minutes": 5, "targets": ["PU1"]}]}, "rules.0.targets.0"),
    ],
)
def test_a_policy_of_the_wrong_shape_names_what_is_wrong(change: dict[str, Any], named: str) -> None:
    with pytest.raises((TypeError, ValidationError), match=named.replace(".", r"\.")):
        PagerDutyEscalationPolicy.from_api({**POLICY, **change})


def test_a_service_reads_its_policy_teams_timeouts_and_urgency() -> None:
    service = PagerDutyService.from_api(
        {
            "id": "PSVC001",
            "type": "service",
            "name": "Payment API",
            "status": "critical",
            "html_url": "https://acme.pagerduty.com/service-directory/PSVC001",
            "escalation_policy": ref("PEP0001", "escalation_policy_reference"),
            "teams": [ref("PTEAM01", "team_reference")],
            "acknowledgement_timeout": 600,
            "auto_resolve_timeout": None,
            "incident_urgency_rule": {"type": "constant", "urgency": "severity_based"},
            "integrations": [ref("PINT001", "generic_events_api_inbound_integration_reference")],
            "last_incident_timestamp": "2026-01-01T00:00:00Z",
        }
    )
    assert service == PagerDutyService(
        id="PSVC001",
        name="Payment API",
        status="critical",
        escalation_policy_id="PEP0001",
        team_ids=("PTEAM01",),
        acknowledgement_timeout=600,
        auto_resolve_timeout=None,
        urgency_rule=PagerDutyUrgencyRule(type="constant", urgency="severity_based"),
        html_url="https://acme.pagerduty.com/service-directory/PSVC001",
    )


def test_a_service_without_its_policy_does_not_parse() -> None:
    with pytest.raises(ValidationError, match="escalation_policy_id"):
        PagerDutyService.from_api({"id": "PSVC001", "name": "Orphan", "escalation_policy": None})


def test_a_use_support_hours_urgency_rule_reads_each_part_and_is_sent_back_as_it_came() -> None:
    answered = {
        "type": "use_support_hours",
        "during_support_hours": {"type": "constant", "urgency": "high"},
        "outside_support_hours": {"type": "constant", "urgency": "low"},
    }
    rule = PagerDutyUrgencyRule.model_validate(answered)
    assert (rule.type, rule.urgency, rule.during_support_hours, rule.outside_support_hours) == (
        "use_support_hours",
        None,
        "high",
        "low",
    )
    assert rule.to_api() == answered
    assert PagerDutyUrgencyRule(type="constant", urgency="low").to_api() == {
        "type": "constant",
        "urgency": "low",
    }


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ({"type": "constant"}, "a constant urgency rule needs an urgency"),
        ({"type": "use_support_hours", "during_support_hours": {"urgency": "high"}}, "during and outside"),
        ({"type": "use_support_hours", "outside_support_hours": {"type": "constant"}}, "during and outside"),
        ({"type": "sometimes", "urgency": "high"}, "neither constant nor use_support_hours"),
    ],
)
def test_an_urgency_rule_that_says_no_urgency_is_refused(shape: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        PagerDutyUrgencyRule.model_validate(shape)


def test_a_rule_spec_sends_its_targets_as_references_in_the_order_given() -> None:
    spec = EscalationRuleSpec(
        escalation_delay_in_minutes=15,
        targets=(PagerDutyTarget(id="PUSER02", type="user"), PagerDutyTarget(id="PSCHED1", type="schedule")),
    )
    assert spec.to_api() == {
        "escalation_delay_in_minutes": 15,
        "targets": [
            {"id": "PUSER02", "type": "user_reference"},
            {"id": "PSCHED1", "type": "schedule_reference"},
        ],
    }


@pytest.mark.parametrize(
    ("delay", "count", "reason"),
    [(5, 0, "at least 1 item"), (5, 11, "at most 10 items"), (-1, 1, "greater than or equal to 0")],
)
def test_a_rule_spec_pagerduty_would_refuse_is_refused_when_made(delay: int, count: int, reason: str) -> None:
    targets = tuple(PagerDutyTarget(id=f"PUSER{n:02d}", type="user_reference") for n in range(count))
    with pytest.raises(ValidationError, match=reason):
        EscalationRuleSpec(escalation_delay_in_minutes=delay, targets=targets)


def test_the_models_are_frozen_and_ignore_fields_they_do_not_read() -> None:
    target = PagerDutyTarget.model_validate({"id": "P1", "type": "user", "summary": "Alice", "self": "x"})
    with pytest.raises(ValidationError, match="frozen"):
        target.id = "P2"  # type: ignore[misc]
    assert target.model_dump() == {"id": "P1", "type": "user_reference"}
