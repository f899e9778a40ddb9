"""PagerDuty objects as the client returns them: only the fields the reconciler reads."""

from __future__ import annotations

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
        user_ids: list[str] = []
        for rule in item.get("escalation_rules") or ():
            for target in rule.get("targets") or ():
                if target.get("type") in ("user_reference", "user") and target.get("id") not in user_ids:
                    user_ids.append(target["id"])
        return cls.model_validate(
            {
                "id": item.get("id"),
                "name": item.get("name"),
                "team_ids": tuple(t.get("id") for t in item.get("teams") or ()),
                "user_ids": tuple(user_ids),
            }
        )
