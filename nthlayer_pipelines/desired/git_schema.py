"""The shapes of the Git definition documents, and pydantic's errors turned into sentences people act on.

Validation is strict: YAML gives real booleans and lists, so `prune: "true"` or `role: 1` is a mistake
to report, never a value to coerce.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from nthlayer_pipelines.core.model import Role, Tier, Urgency

from .yaml_files import Location

API_VERSION = "nthlayer/v1"
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
SLUG_MAX_LENGTH = 63
PAGERDUTY_ID = re.compile(r"P[A-Z0-9]{6,}")
ROLES = tuple(
    role.value for role in sorted(Role, key=lambda role: -role.rank)
)  # manager, responder, observer
TIERS = tuple(tier.value for tier in Tier)
URGENCIES = tuple(urgency.value for urgency in Urgency)
# Urgencies a person may write that nthlayer cannot hold a service to yet, and why.
UNSUPPORTED_URGENCIES = {
    spelling: "it needs support hours on the service, which nthlayer does not manage yet"
    for spelling in ("support-hours", "support_hours", "supportHours")
}
MAX_LOOPS = 9  # PagerDuty's num_loops
MAX_RULES = 20
MAX_TARGETS = 10  # per escalation rule
# What a missing field's message adds: how to say what the field's absence cannot.
MISSING_HINTS = {
    "acknowledgementTimeoutMinutes": ": write null to turn the timeout off",
    "autoResolveTimeoutMinutes": ": write null to turn the timeout off",
}


def describe(value: Any) -> str:
    """A YAML reader's name for a value: "string 'yes'", "integer 1", "a list", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _refuse(reason: str) -> PydanticCustomError:
    # The reason goes in the context so braces in user input are never read as placeholders.
    return PydanticCustomError("definition", "{reason}", {"reason": reason})


def _slug(value: str) -> str:
    if not SLUG.fullmatch(value) or len(value) > SLUG_MAX_LENGTH:
        raise _refuse(
            f"name {value!r} is not a lowercase slug: use lowercase letters, digits and single hyphens "
            f"(at most {SLUG_MAX_LENGTH} characters), like 'payments-api'"
        )
    return value


def _api_version(value: str) -> str:
    if value != API_VERSION:
        raise _refuse(f"unsupported apiVersion {value!r}: expected {API_VERSION}")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise _refuse("must not be empty")
    return value.strip()


def _pagerduty_id(what: str, example: str) -> AfterValidator:
    def check(value: str) -> str:
        if not PAGERDUTY_ID.fullmatch(value):
            raise _refuse(
                f"malformed PagerDuty {what} id {value!r}: expected 'P' and at least 6 uppercase letters "
                f"or digits, like {example!r}"
            )
        return value

    return AfterValidator(check)


def _not_null(instead: str) -> BeforeValidator:
    """For an optional field whose absence means something: an explicit null is refused as a mistake."""

    def check(value: Any) -> Any:
        if value is None:
            raise _refuse(f"must not be null: {instead}")
        return value

    return BeforeValidator(check)


def _schedule_key(value: str) -> str:
    if not SLUG.fullmatch(value) or len(value) > SLUG_MAX_LENGTH:
        raise _refuse(
            f"schedule key {value!r} is not a lowercase slug: standards name a team's schedules by keys "
            "like 'primary' or 'follow-the-sun'"
        )
    return value


def _whole_number(what: str, *, low: int, high: int | None = None, null: str = "") -> BeforeValidator:
    """A check for an integer field that names the field, its range and the value YAML gave; `null` says
    what null means where null is allowed."""
    expected = (
        f"a whole number from {low} to {high}" if high is not None else f"a whole number, {low} or more"
    )
    if null:
        expected += f", or null {null}"

    def check(value: Any) -> Any:
        if value is None and null:
            return None
        in_range = isinstance(value, int) and not isinstance(value, bool)
        if not in_range or value < low or (high is not None and value > high):
            raise _refuse(f"{what} must be {expected}; got {describe(value)}")
        return value

    return BeforeValidator(check)


def _one_of(
    what: str, enum: type[StrEnum], choices: tuple[str, ...], unsupported: Mapping[str, str] | None = None
) -> BeforeValidator:
    """A check that names the field and the choices: strict enums would otherwise say little.
    `unsupported` holds values people may mean that are refused for now, each with why."""
    expected = ", ".join(choices)
    not_yet = unsupported or {}

    def check(value: Any) -> Any:
        if not isinstance(value, str):
            raise _refuse(f"{what} must be a string, one of {expected}; got {describe(value)}")
        if value in not_yet:
            raise _refuse(f"{what} {value!r} is not supported yet: {not_yet[value]}")
        if value not in choices:
            raise _refuse(
                f"unknown {what} {value!r}: expected one of {expected}{did_you_mean(value, choices)}"
            )
        return enum(value)

    return BeforeValidator(check)


Slug = Annotated[str, AfterValidator(_slug)]
NonBlank = Annotated[str, AfterValidator(_not_blank)]
RoleName = Annotated[Role, _one_of("role", Role, ROLES)]
TeamRoleName = Annotated[Role, _one_of("teamRole", Role, ROLES)]
TierName = Annotated[Tier, _one_of("tier", Tier, TIERS)]
UrgencyName = Annotated[Urgency, _one_of("urgency", Urgency, URGENCIES, UNSUPPORTED_URGENCIES)]
ScheduleKey = Annotated[str, AfterValidator(_schedule_key)]
TeamId = Annotated[str, _pagerduty_id("team", "PABC123")]
ServiceId = Annotated[str, _pagerduty_id("service", "PSVC123")]


class _Document(BaseModel):
    # Strict: YAML already typed every value; coercing "true" or 1 would hide a mistake.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Metadata(_Document):
    name: Slug


class MemberSpec(_Document):
    email: EmailStr
    role: RoleName


class PagerDutySpec(_Document):
    team_id: Annotated[TeamId | None, _not_null("leave teamId out to match the team by its displayName")] = (
        Field(default=None, alias="teamId")
    )
    # The schedules the team's standards target, by key: a PagerDuty schedule's name or id each.
    schedules: Annotated[
        dict[ScheduleKey, NonBlank], _not_null("leave schedules out, or write {}, when there are none")
    ] = Field(default_factory=dict)


class TeamSpec(_Document):
    # PagerDuty's limits on a team's name and description: longer would fail at apply with a 400.
    display_name: NonBlank = Field(alias="displayName", max_length=100)
    description: str | None = Field(default=None, max_length=1024)
    prune: bool = False
    members: list[MemberSpec] = Field(default_factory=list)
    pagerduty: PagerDutySpec | None = None


class ServicePagerDutySpec(_Document):
    service_id: ServiceId = Field(alias="serviceId")


class ServiceSpec(_Document):
    team: str  # checked against the declared teams, with a suggestion, once every file is read
    tier: TierName
    display_name: Annotated[NonBlank | None, _not_null("leave displayName out to use the service's name")] = (
        Field(default=None, alias="displayName")
    )  # None: metadata.name
    pagerduty: ServicePagerDutySpec | None = None


class StandardMetadata(_Document):
    name: TierName  # the tier the standard sets


class TargetSpec(_Document):
    schedule: ScheduleKey | None = None
    team_role: TeamRoleName | None = Field(default=None, alias="teamRole")

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetSpec:
        if self.schedule is None and self.team_role is None:
            raise _refuse("a target needs a schedule (a key of the team's schedules) or a teamRole")
        if self.schedule is not None and self.team_role is not None:
            raise _refuse("a target is a schedule or a teamRole, not both: write them as two targets")
        return self


# The numbers of rules and of targets are checked on the raw document (git.py), so that a list both too
# long and holding a bad item has both reported.
class RuleSpec(_Document):
    targets: list[TargetSpec]
    escalate_after_minutes: Annotated[int, _whole_number("escalateAfterMinutes", low=1)] = Field(
        alias="escalateAfterMinutes"
    )


class EscalationSpec(_Document):
    loops: Annotated[int, _whole_number("loops", low=0, high=MAX_LOOPS)] = 0
    rules: list[RuleSpec]


# Minutes, or null for off. Both are required, so that leaving one out never means 'off' by accident.
AcknowledgementTimeout = Annotated[
    int | None, _whole_number("acknowledgementTimeoutMinutes", low=1, null="to turn it off")
]
AutoResolveTimeout = Annotated[
    int | None, _whole_number("autoResolveTimeoutMinutes", low=1, null="to turn it off")
]


class ServiceStandardSpec(_Document):
    urgency: UrgencyName
    acknowledgement_timeout_minutes: AcknowledgementTimeout = Field(alias="acknowledgementTimeoutMinutes")
    auto_resolve_timeout_minutes: AutoResolveTimeout = Field(alias="autoResolveTimeoutMinutes")


class StandardSpec(_Document):
    escalation: EscalationSpec
    service: ServiceStandardSpec


class TeamDocument(_Document):
    api_version: Annotated[str, AfterValidator(_api_version)] = Field(alias="apiVersion")
    kind: str
    metadata: Metadata
    spec: TeamSpec


class ServiceDocument(_Document):
    api_version: Annotated[str, AfterValidator(_api_version)] = Field(alias="apiVersion")
    kind: str
    metadata: Metadata
    spec: ServiceSpec


class StandardDocument(_Document):
    api_version: Annotated[str, AfterValidator(_api_version)] = Field(alias="apiVersion")
    kind: str
    metadata: StandardMetadata
    spec: StandardSpec


DOCUMENT_KINDS: dict[str, type[_Document]] = {
    "Team": TeamDocument,
    "Service": ServiceDocument,
    "Standard": StandardDocument,
}


def did_you_mean(value: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_at(model: type[BaseModel], location: Location) -> type[BaseModel] | None:
    """The model validating the mapping at `location`, following field types through lists and Optional."""
    current: type[BaseModel] = model
    for part in location:
        if isinstance(part, int):
            continue
        info = next((i for n, i in current.model_fields.items() if (i.alias or n) == part), None)
        if info is None:
            return None
        found = _model_in(info.annotation)
        if found is None:
            return None
        current = found
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union, types.UnionType, Annotated):
        for argument in get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None


def validate_document(
    model: type[_Document], data: dict[str, Any]
) -> tuple[_Document | None, list[tuple[Location, str]]]:
    """The validated document, or every problem in it as (location, message)."""
    try:
        return model.model_validate(data), []
    except ValidationError as error:
        problems = [_explain(model, details) for details in error.errors(include_url=False)]
        return None, [problem for problem in problems if problem is not None]


def _explain(model: type[BaseModel], details: ErrorDetails) -> tuple[Location, str] | None:
    location: Location = tuple(details["loc"])
    if location and location[-1] == "[key]":  # a mapping's key, such as a schedule's: located at the key
        location = location[:-1]
    kind, value = details["type"], details.get("input")
    field = str(location[-1]) if location else "document"
    if kind == "invalid_key":
        return None  # a non-string key, already reported with its line while reading the YAML
    if kind == "missing":
        return location, f"missing required field '{field}'{MISSING_HINTS.get(field, '')}"
    if kind == "extra_forbidden":
        parent = _model_at(model, location[:-1])
        known = _field_names(parent) if parent else []
        hint = did_you_mean(field, known) or (f": expected {', '.join(known)}" if known else "")
        return location, f"unknown field '{field}'{hint}"
    if kind == "string_type":
        return location, f"expected a string, got {describe(value)}"
    if kind == "bool_type":
        return location, f"expected true or false, got {describe(value)}"
    if kind in ("list_type", "tuple_type"):
        return location, f"expected a list, got {describe(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return location, f"expected a mapping, got {describe(value)}"
    if kind == "value_error" and field == "email":
        reason = (details.get("ctx") or {}).get("reason", "")
        return location, f"invalid email {value!r}: {reason}".rstrip(": ")
    return location, details["msg"]
