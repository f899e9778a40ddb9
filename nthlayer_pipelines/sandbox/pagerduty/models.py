"""The objects of a PagerDuty account as the sandbox keeps them: plain data, referring to each other by id.

A service belongs to one escalation policy; a policy's rules target users and schedules; a schedule's
layers rotate through users. A service's teams are its policy's (PagerDuty derives them, they are
read-only), and a policy has at most one team.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAGERDUTY_TEAM_ROLES = ("observer", "responder", "manager")
PAGERDUTY_USER_ROLES = (
    "admin",
    "limited_user",
    "observer",
    "owner",
    "read_only_user",
    "restricted_access",
    "read_only_limited_user",
    "user",
)

USER_TARGET = "user_reference"
SCHEDULE_TARGET = "schedule_reference"
TARGET_TYPES = (USER_TARGET, SCHEDULE_TARGET)
HANDOFF_NOTIFICATIONS = ("if_has_services", "always")
URGENCIES = ("high", "low", "severity_based")
ALERT_CREATION = ("create_incidents", "create_alerts_and_incidents")
# Every status a service may show; a client may set only the first two (the rest follow incidents).
SERVICE_STATUSES = ("active", "disabled", "warning", "critical", "maintenance")
SETTABLE_SERVICE_STATUSES = ("active", "disabled")
DEFAULT_ACKNOWLEDGEMENT_TIMEOUT = 1800
DEFAULT_AUTO_RESOLVE_TIMEOUT = 14400
DEFAULT_TURN_SECONDS = 7 * 24 * 3600
DEFAULT_LAYER_START = "2024-01-01T00:00:00Z"


def default_urgency_rule() -> dict[str, Any]:
    """What PagerDuty fills in for a service created without one (terraform-provider-pagerduty #61)."""
    return {"type": "constant", "urgency": "high"}


def _name_key(name: str, object_id: str) -> tuple[str, str]:
    return (name.casefold(), object_id)


@dataclass(slots=True)
class PagerDutyUser:
    id: str
    name: str
    email: str
    role: str = "user"
    time_zone: str = "Etc/UTC"
    job_title: str = ""

    @property
    def sort_key(self) -> tuple[str, str]:
        return _name_key(self.name, self.id)


@dataclass(slots=True)
class PagerDutyTeam:
    id: str
    name: str
    description: str = ""
    default_role: str = "manager"

    @property
    def sort_key(self) -> tuple[str, str]:
        return _name_key(self.name, self.id)


@dataclass(frozen=True, slots=True)
class EscalationTarget:
    type: str  # USER_TARGET or SCHEDULE_TARGET
    id: str


@dataclass(slots=True)
class EscalationRule:
    id: str
    # In the sandbox's own order (by id), whatever order a client sent: PagerDuty returns targets in its
    # own order too (terraform-provider-pagerduty #639), and a client must compare them as sets.
    targets: list[EscalationTarget]
    escalation_delay_in_minutes: int = 30

    @property
    def target_user_ids(self) -> list[str]:
        return [t.id for t in self.targets if t.type == USER_TARGET]

    @property
    def target_schedule_ids(self) -> list[str]:
        return [t.id for t in self.targets if t.type == SCHEDULE_TARGET]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule as a caller asks for it: the org gives it an id (or keeps `id`) and orders its targets."""

    targets: tuple[EscalationTarget, ...]
    escalation_delay_in_minutes: int = 30
    id: str | None = None


@dataclass(slots=True)
class EscalationPolicy:
    id: str
    name: str
    team_ids: list[str]
    rules: list[EscalationRule]
    description: str = ""
    num_loops: int = 0
    on_call_handoff_notifications: str = "if_has_services"

    @property
    def sort_key(self) -> tuple[str, str]:
        return _name_key(self.name, self.id)

    @property
    def target_user_ids(self) -> set[str]:
        """The users its rules target directly (not through a schedule)."""
        return {user_id for rule in self.rules for user_id in rule.target_user_ids}

    @property
    def target_schedule_ids(self) -> set[str]:
        return {schedule_id for rule in self.rules for schedule_id in rule.target_schedule_ids}


@dataclass(slots=True)
class ScheduleLayer:
    id: str
    name: str
    user_ids: list[str]  # rotation order: the position on the list is the turn
    rotation_turn_length_seconds: int = DEFAULT_TURN_SECONDS
    start: str = DEFAULT_LAYER_START
    rotation_virtual_start: str = DEFAULT_LAYER_START
    end: str | None = None


@dataclass(slots=True)
class Schedule:
    id: str
    name: str
    time_zone: str
    layers: list[ScheduleLayer]
    description: str = ""
    team_ids: list[str] = field(default_factory=list)

    @property
    def sort_key(self) -> tuple[str, str]:
        return _name_key(self.name, self.id)

    @property
    def user_ids(self) -> list[str]:
        """Everyone on any layer, once each, in the order they first appear."""
        return list(dict.fromkeys(user_id for layer in self.layers for user_id in layer.user_ids))


@dataclass(slots=True)
class Service:
    id: str
    name: str
    escalation_policy_id: str
    created_at: str
    description: str = ""
    # Seconds; None disables the timeout, as PagerDuty's null does.
    acknowledgement_timeout: int | None = DEFAULT_ACKNOWLEDGEMENT_TIMEOUT
    auto_resolve_timeout: int | None = DEFAULT_AUTO_RESOLVE_TIMEOUT
    incident_urgency_rule: dict[str, Any] = field(default_factory=default_urgency_rule)
    support_hours: dict[str, Any] | None = None
    scheduled_actions: list[dict[str, Any]] = field(default_factory=list)
    alert_creation: str = "create_alerts_and_incidents"
    alert_grouping_parameters: dict[str, Any] | None = None
    status: str = "active"
    # Not a PagerDuty field: the sandbox carries a seed's tier so a test can say what standard applies
    # (PagerDuty itself would keep it in a service custom field).
    tier: str | None = None

    @property
    def sort_key(self) -> tuple[str, str]:
        return _name_key(self.name, self.id)
