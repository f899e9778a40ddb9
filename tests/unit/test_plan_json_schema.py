"""`plan --json` holds to schemas/plan.schema.json for every kind of change and finding."""

from __future__ import annotations

import json

import pytest
from jsonschema import ValidationError

from nthlayer_pipelines.core.model import (
    Change,
    ChangeKind,
    FieldChange,
    Finding,
    FindingKind,
    Role,
)
from nthlayer_pipelines.core.plan import ordered_plan, plan_to_json, plan_to_json_text
from tests.support import PLAN_SCHEMA, assert_plan_json_valid

SCHEMA = json.loads(PLAN_SCHEMA.read_text(encoding="utf-8"))


def every_kind_of_change() -> list[Change]:
    membership = [
        Change.planned("pagerduty", ChangeKind.CREATE_TEAM, team="search", team_name="Search"),
        Change.planned(
            "pagerduty",
            ChangeKind.ADD_MEMBER,
            team="ops",
            team_name="Ops",
            team_id="PT1",
            email="a@x.io",
            user_id="PU1",
            role=Role.MANAGER,
        ),
        Change.planned(
            "pagerduty",
            ChangeKind.SET_ROLE,
            team="ops",
            team_name="Ops",
            team_id="PT1",
            email="b@x.io",
            user_id="PU2",
            role=Role.RESPONDER,
            from_role=Role.OBSERVER,
        ),
        Change.planned(
            "pagerduty",
            ChangeKind.REMOVE_MEMBER,
            team="ops",
            team_name="Ops",
            team_id="PT1",
            email="c@x.io",
            user_id="PU3",
            from_role=Role.RESPONDER,
        ),
    ]
    rules = [{"escalation_delay_in_minutes": 5, "targets": [{"id": "PS1", "type": "schedule_reference"}]}]
    attributes = [
        (
            ChangeKind.CREATE_ESCALATION_POLICY,
            None,
            (FieldChange(name="num_loops", after=2), FieldChange(name="escalation_rules", after=rules)),
        ),
        (ChangeKind.UPDATE_ESCALATION_POLICY, "PEP1", (FieldChange(name="num_loops", before=0, after=2),)),
        (
            ChangeKind.SET_SERVICE_POLICY,
            "PSVC1",
            (
                FieldChange(
                    name="escalation_policy",
                    before={"id": "PEP0"},
                    after={"id": None, "name": "Ops (critical)"},
                ),
            ),
        ),
        (
            ChangeKind.UPDATE_SERVICE,
            "PSVC1",
            (FieldChange(name="auto_resolve_timeout", before=14400, after=None),),
        ),
    ]
    return membership + [
        Change.of_fields(
            "pagerduty",
            kind,
            team="ops",
            team_name="Ops",
            team_id="PT1",
            target_id=target,
            target_name="Payment API",
            fields=fields,
        )
        for kind, target, fields in attributes
    ]


def test_every_kind_of_change_and_finding_holds_to_the_schema() -> None:
    findings = [Finding(kind=kind, team="ops", subject="x", detail="why") for kind in FindingKind]
    plan = ordered_plan(every_kind_of_change(), findings)
    payload = plan_to_json(plan)
    assert {c["kind"] for c in payload["changes"]} == {k.value for k in ChangeKind}
    assert_plan_json_valid(payload)
    assert_plan_json_valid(json.loads(plan_to_json_text(plan, blocked={"checks": ["x"], "reasons": []})))


def test_the_schema_names_exactly_the_kinds_the_code_has() -> None:
    change = SCHEMA["$defs"]["change"]["properties"]
    assert set(change["kind"]["enum"]) == {k.value for k in ChangeKind}
    assert set(SCHEMA["$defs"]["finding"]["properties"]["kind"]["enum"]) == {k.value for k in FindingKind}
    assert set(SCHEMA["$defs"]["change"]["required"]) == set(
        plan_to_json(ordered_plan(every_kind_of_change(), []))["changes"][0]
    )


def test_the_schema_refuses_what_a_reader_could_not_rely_on() -> None:
    payload = plan_to_json(ordered_plan(every_kind_of_change(), []))
    wrong = json.loads(json.dumps(payload))
    del wrong["changes"][0]["team_id"]
    with pytest.raises(ValidationError):
        assert_plan_json_valid(wrong)
    wrong = {**payload, "schema_version": 1}
    with pytest.raises(ValidationError):
        assert_plan_json_valid(wrong)
