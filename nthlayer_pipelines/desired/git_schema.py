"""The shapes of the Git definition documents, and pydantic's errors turned into sentences people act on.

Validation is strict: YAML gives real booleans and lists, so `prune: "true"` or `role: 1` is a mistake
to report, never a value to coerce.
"""

from __future__ import annotations

import difflib
import re
import types
from enum import StrEnum
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, EmailStr, Field, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from nthlayer_pipelines.model import Role, Tier

from .yaml_files import Location

API_VERSION = "nthlayer/v1"
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
SLUG_MAX_LENGTH = 63
PAGERDUTY_ID = re.compile(r"P[A-Z0-9]{6,}")
ROLES = tuple(
    role.value for role in sorted(Role, key=lambda role: -role.rank)
)  # manager, responder, observer
TIERS = tuple(tier.value for tier in Tier)


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


def _pagerduty_id(value: str) -> str:
    if not PAGERDUTY_ID.fullmatch(value):
        raise _refuse(
            f"malformed PagerDuty team id {value!r}: expected 'P' and at least 6 uppercase letters "
            "or digits, like 'PABC123'"
        )
    return value


def _one_of(what: str, enum: type[StrEnum], choices: tuple[str, ...]) -> BeforeValidator:
    """A check that names the field and the choices: strict enums would otherwise say little."""
    expected = ", ".join(choices)

    def check(value: Any) -> Any:
        if not isinstance(value, str):
            raise _refuse(f"{what} must be a string, one of {expected}; got {describe(value)}")
        if value not in choices:
            raise _refuse(
                f"unknown {what} {value!r}: expected one of {expected}{did_you_mean(value, choices)}"
            )
        return enum(value)

    return BeforeValidator(check)


Slug = Annotated[str, AfterValidator(_slug)]
NonBlank = Annotated[str, AfterValidator(_not_blank)]
RoleName = Annotated[Role, _one_of("role", Role, ROLES)]
TierName = Annotated[Tier, _one_of("tier", Tier, TIERS)]


class _Document(BaseModel):
    # Strict: YAML already typed every value; coercing "true" or 1 would hide a mistake.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Metadata(_Document):
    name: Slug


class MemberSpec(_Document):
    email: EmailStr
    role: RoleName


class PagerDutySpec(_Document):
    team_id: Annotated[str, AfterValidator(_pagerduty_id)] = Field(alias="teamId")


class TeamSpec(_Document):
    # PagerDuty's limits on a team's name and description: longer would fail at apply with a 400.
    display_name: NonBlank = Field(alias="displayName", max_length=100)
    description: str | None = Field(default=None, max_length=1024)
    prune: bool = False
    members: list[MemberSpec] = Field(default_factory=list)
    pagerduty: PagerDutySpec | None = None


class ServiceSpec(_Document):
    team: str  # checked against the declared teams, with a suggestion, once every file is read
    tier: TierName


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


DOCUMENT_KINDS: dict[str, type[_Document]] = {"Team": TeamDocument, "Service": ServiceDocument}


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
    kind, value = details["type"], details.get("input")
    field = str(location[-1]) if location else "document"
    if kind == "invalid_key":
        return None  # a non-string key, already reported with its line while reading the YAML
    if kind == "missing":
        return location, f"missing required field '{field}'"
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
