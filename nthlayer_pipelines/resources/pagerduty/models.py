"""PagerDuty objects as the client returns them: only the fields the reconciler reads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nthlayer_pipelines.core.model import Email, Role


class _PagerDutyObject(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


def _objects(item: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The objects listed under `key` (null: none); TypeError naming the field when it is no such list."""
    value = item.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise TypeError(f"{key}: expected a list of objects")
    return value


def _none_is_empty_tuple(value: object) -> object:
    return () if value is None else value


class PagerDutyUser(_PagerDutyObject):
    id: str
    name: str
    email: Email  # lowercased: the join key across providers


class PagerDutyTeam(_PagerDutyObject):
    id: str
    name: str
    description: str = ""

    @field_validator("description", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return "" if value is None else value


class PagerDutyMember(_PagerDutyObject):
    """One row of `GET /teams/{id}/members`, with the team it was read from."""

    team_id: str
    user_id: str
    role: Role

    @classmethod
    def from_api(cls, team_id: str, item: dict[str, Any]) -> PagerDutyMember:
        user = item.get("user")
        user_id = user.get("id") if isinstance(user, dict) else None
        return cls.model_validate({"team_id": team_id, "user_id": user_id, "role": item.get("role")})


# ---- escalation policies, services and schedules ------------------------------------------------------

USER_TARGET = "user_reference"
SCHEDULE_TARGET = "schedule_reference"
# Every type PagerDuty may give a rule's target, as the one reference type the client speaks of.
_TARGET_TYPES = {
    "user": USER_TARGET,
    "user_reference": USER_TARGET,
    "schedule": SCHEDULE_TARGET,
    "schedule_reference": SCHEDULE_TARGET,
    "schedule_v3_reference": SCHEDULE_TARGET,
}
MAX_RULE_TARGETS = 10  # PagerDuty's limit: a rule has 1 to 10 targets


def _reference_ids(item: dict[str, Any], key: str) -> tuple[object, ...]:
    """The ids of the references listed under `key` (null: none)."""
    return tuple(reference.get("id") for reference in _objects(item, key))


def _owned_object(item: dict[str, Any]) -> dict[str, Any]:
    """What a policy, service and schedule share: id, name, web page, and teams (as their ids)."""
    return {
        "id": item.get("id"),
        "name": item.get("name"),
        "team_ids": _reference_ids(item, "teams"),
        "html_url": item.get("html_url"),
    }


def _reference_id(item: dict[str, Any], key: str) -> object:
    reference = item.get(key)
    return reference.get("id") if isinstance(reference, dict) else None


class PagerDutyTarget(_PagerDutyObject):
    """Whom a rule pages: a user or a schedule. Its type is normalised to `user_reference` or
    `schedule_reference`, whichever of PagerDuty's aliases (user, schedule, schedule_v3_reference) it had."""

    id: str
    type: str

    @field_validator("type", mode="before")
    @classmethod
    def _normalised(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if value not in _TARGET_TYPES:
            raise ValueError(f"{value!r} is not a user or schedule target")
        return _TARGET_TYPES[value]

    def to_api(self) -> dict[str, str]:
        return {"id": self.id, "type": self.type}


class EscalationRuleSpec(_PagerDutyObject):
    """One rule as a create or update sends it: after `escalation_delay_in_minutes` unacknowledged, the
    incident escalates away from these targets (1 to 10)."""

    escalation_delay_in_minutes: int = Field(ge=0)
    targets: tuple[PagerDutyTarget, ...] = Field(min_length=1, max_length=MAX_RULE_TARGETS)

    def to_api(self) -> dict[str, Any]:
        return {
            "escalation_delay_in_minutes": self.escalation_delay_in_minutes,
            "targets": [target.to_api() for target in self.targets],
        }


class PagerDutyEscalationRule(_PagerDutyObject):
    """A rule as PagerDuty returned it; `targets` in PagerDuty's order, which is its own, not the order they
    were sent in (terraform-provider-pagerduty #639): compare them as sets."""

    id: str | None = None
    escalation_delay_in_minutes: int
    targets: tuple[PagerDutyTarget, ...]

    _none_is_empty = field_validator("targets", mode="before")(_none_is_empty_tuple)


class PagerDutyEscalationPolicy(_PagerDutyObject):
    """A policy: its rules in order, how often it loops, and the services that use it. `user_ids` are the
    users its rules target directly, which block their removal from its team (PagerDuty's error 2001)."""

    id: str
    name: str
    team_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()  # users targeted directly by one of its rules, in the order first seen
    num_loops: int = 0
    rules: tuple[PagerDutyEscalationRule, ...] = ()
    # Read-only in PagerDuty (a service names its policy); by id: PagerDuty lists them in an order of its
    # own, which renaming a service changes without a record of the policy.
    service_ids: tuple[str, ...] = ()
    html_url: str | None = None

    @field_validator("num_loops", mode="before")
    @classmethod
    def _none_is_no_loops(cls, value: object) -> object:
        return 0 if value is None else value

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> PagerDutyEscalationPolicy:
        policy = cls.model_validate(
            {
                **_owned_object(item),
                "num_loops": item.get("num_loops"),
                "rules": _objects(item, "escalation_rules"),
                "service_ids": tuple(sorted(map(str, _reference_ids(item, "services")))),
            }
        )
        targeted = (t.id for rule in policy.rules for t in rule.targets if t.type == USER_TARGET)
        return policy.model_copy(update={"user_ids": tuple(dict.fromkeys(targeted))})


class PagerDutyUrgencyRule(_PagerDutyObject):
    """A service's `incident_urgency_rule`: `constant` (one `urgency`: high, low or severity_based) or
    `use_support_hours` (one urgency inside the service's support hours, another outside them). Read from
    PagerDuty's shape, where each part of `use_support_hours` is itself a constant rule."""

    type: str
    urgency: str | None = None
    during_support_hours: str | None = None
    outside_support_hours: str | None = None

    @field_validator("during_support_hours", "outside_support_hours", mode="before")
    @classmethod
    def _urgency_of_part(cls, value: object) -> object:
        return value.get("urgency") if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _complete(self) -> PagerDutyUrgencyRule:
        if self.type == "constant":
            if self.urgency is None:
                raise ValueError("a constant urgency rule needs an urgency")
        elif self.type == "use_support_hours":
            if self.during_support_hours is None or self.outside_support_hours is None:
                raise ValueError("a use_support_hours rule needs an urgency during and outside support hours")
        else:
            raise ValueError(f"urgency rule type {self.type!r} is neither constant nor use_support_hours")
        return self

    def to_api(self) -> dict[str, Any]:
        if self.type == "constant":
            return {"type": "constant", "urgency": self.urgency}
        return {
            "type": "use_support_hours",
            "during_support_hours": {"type": "constant", "urgency": self.during_support_hours},
            "outside_support_hours": {"type": "constant", "urgency": self.outside_support_hours},
        }


class PagerDutyService(_PagerDutyObject):
    """A service: the policy it pages through, its timeouts (seconds; None: off) and urgency rule. Its
    teams are its policy's (PagerDuty derives them) and, like `status`, read-only."""

    id: str
    name: str
    status: str | None = None
    escalation_policy_id: str
    team_ids: tuple[str, ...] = ()
    acknowledgement_timeout: int | None = None
    auto_resolve_timeout: int | None = None
    urgency_rule: PagerDutyUrgencyRule | None = None
    html_url: str | None = None

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> PagerDutyService:
        return cls.model_validate(
            {
                **_owned_object(item),
                "status": item.get("status"),
                "escalation_policy_id": _reference_id(item, "escalation_policy"),
                "acknowledgement_timeout": item.get("acknowledgement_timeout"),
                "auto_resolve_timeout": item.get("auto_resolve_timeout"),
                "urgency_rule": item.get("incident_urgency_rule"),
            }
        )


class PagerDutySchedule(_PagerDutyObject):
    id: str
    name: str
    team_ids: tuple[str, ...] = ()
    html_url: str | None = None

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> PagerDutySchedule:
        return cls.model_validate(_owned_object(item))


@dataclass(frozen=True)
class ObservedServices:
    """PagerDuty's services, escalation policies and schedules as one refresh read them."""

    services: tuple[PagerDutyService, ...] = ()
    policies: tuple[PagerDutyEscalationPolicy, ...] = ()
    schedules: tuple[PagerDutySchedule, ...] = ()

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        """The three lists as the models dump them (the ledger's stored snapshot)."""
        return {
            "services": [s.model_dump(mode="json") for s in self.services],
            "escalation_policies": [p.model_dump(mode="json") for p in self.policies],
            "schedules": [s.model_dump(mode="json") for s in self.schedules],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ObservedServices:
        """What `to_json` wrote; raises `pydantic.ValidationError` (or TypeError) for anything else."""
        return cls(
            services=tuple(PagerDutyService.model_validate(s) for s in value["services"]),
            policies=tuple(PagerDutyEscalationPolicy.model_validate(p) for p in value["escalation_policies"]),
            schedules=tuple(PagerDutySchedule.model_validate(s) for s in value["schedules"]),
        )


# ---- audit records (`GET /audit/records`) -------------------------------------------------------------


class PagerDutyReference(_PagerDutyObject):
    """`{id, type, summary}`: what a record says it touched, named as it was then."""

    id: str
    type: str
    summary: str | None = None


class AuditField(_PagerDutyObject):
    """A changed field: `value` after, `before_value` before; PagerDuty may leave either out."""

    name: str
    value: str | None = None
    before_value: str | None = None

    @field_validator("value", "before_value", mode="before")
    @classmethod
    def _scalar_as_text(cls, value: object) -> object:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, separators=(",", ":"), sort_keys=True)


class AuditReferenceChange(_PagerDutyObject):
    """References added to or removed from a collection of the resource, e.g. a team's `members`."""

    name: str
    added: tuple[PagerDutyReference, ...] = ()
    removed: tuple[PagerDutyReference, ...] = ()

    _none_is_empty = field_validator("added", "removed", mode="before")(_none_is_empty_tuple)


class AuditMethod(_PagerDutyObject):
    """How the change was made: `api_token` (with the token's last 4 characters), `browser`, ..."""

    type: str
    truncated_token: str | None = None


class AuditDetails(_PagerDutyObject):
    resource: PagerDutyReference | None = None
    fields: tuple[AuditField, ...] = ()
    references: tuple[AuditReferenceChange, ...] = ()

    _none_is_empty = field_validator("fields", "references", mode="before")(_none_is_empty_tuple)


class AuditRecord(_PagerDutyObject):
    """One audit record. Records written by one request share `request_id`."""

    id: str
    execution_time: datetime
    request_id: str | None = None
    actors: tuple[PagerDutyReference, ...] = ()
    method: AuditMethod
    root_resource: PagerDutyReference
    action: str
    details: AuditDetails = AuditDetails()

    _none_is_empty = field_validator("actors", mode="before")(_none_is_empty_tuple)

    @field_validator("execution_time")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("details", mode="before")
    @classmethod
    def _none_is_no_details(cls, value: object) -> object:
        return AuditDetails() if value is None else value

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> AuditRecord:
        context = item.get("execution_context")
        request_id = context.get("request_id") if isinstance(context, dict) else None
        return cls.model_validate({**item, "request_id": request_id})


class AuditPage(_PagerDutyObject):
    """One page of `GET /audit/records`: newest first; `next_cursor` is None on the last page."""

    records: tuple[AuditRecord, ...]
    limit: int | None = None
    next_cursor: str | None = None
