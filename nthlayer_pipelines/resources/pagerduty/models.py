"""PagerDuty objects as the client returns them: only the fields the reconciler reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from nthlayer_pipelines.model import Email, Role


class _PagerDutyObject(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


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


class PagerDutyEscalationPolicy(_PagerDutyObject):
    """Enough of a policy to name it when it blocks a member's removal (PagerDuty's error 2001)."""

    id: str
    name: str
    team_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()  # users targeted directly by one of its rules

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> PagerDutyEscalationPolicy:
        user_ids: list[object] = []
        for index, rule in enumerate(_objects(item, "escalation_rules")):
            for target in _objects(rule, "targets", f"escalation_rules[{index}].targets"):
                target_id = target.get("id")
                if target.get("type") in ("user_reference", "user") and target_id not in user_ids:
                    user_ids.append(target_id)
        return cls.model_validate(
            {
                "id": item.get("id"),
                "name": item.get("name"),
                "team_ids": tuple(t.get("id") for t in _objects(item, "teams")),
                "user_ids": tuple(user_ids),
            }
        )


def _objects(item: dict[str, Any], key: str, name: str = "") -> list[dict[str, Any]]:
    """The objects listed under `key` (null: none); TypeError naming the field when it is no such list."""
    value = item.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise TypeError(f"{name or key}: expected a list of objects")
    return value


# ---- audit records (`GET /audit/records`) -------------------------------------------------------------


def _none_is_empty_tuple(value: object) -> object:
    return () if value is None else value


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
