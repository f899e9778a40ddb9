"""PagerDuty's objects as the API answers them: every object with `id`, `type`, `summary`, `self` and
`html_url`, a reference as `{id, type: "<kind>_reference", ...}`, and `include[]` turning the references
it names into full objects."""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from nthlayer_pipelines.sandbox.pagerduty.models import (
    USER_TARGET,
    EscalationPolicy,
    EscalationTarget,
    PagerDutyTeam,
    PagerDutyUser,
    Schedule,
    Service,
)
from nthlayer_pipelines.sandbox.pagerduty.org import PagerDutyOrg

NO_INCLUDES: frozenset[str] = frozenset()


class Renderer:
    """Renders the org's objects for one request: `base` is the API's URL as that request reached it."""

    def __init__(self, org: PagerDutyOrg, base: str) -> None:
        self._org, self._base = org, base

    def _html_url(self, collection: str, object_id: str) -> str:
        """In the account's web UI: its subdomain is how a client tells one account from another."""
        return f"{self._org.html_base}/{collection}/{object_id}"

    def _object(self, kind: str, collection: str, object_id: str, summary: str) -> dict[str, Any]:
        return {
            "id": object_id,
            "type": kind,
            "summary": summary,
            "self": f"{self._base}/{collection}/{object_id}",
            "html_url": self._html_url(collection, object_id),
        }

    def reference(self, kind: str, collection: str, object_id: str, summary: str) -> dict[str, Any]:
        return self._object(f"{kind}_reference", collection, object_id, summary)

    # -- teams and users -----------------------------------------------------------------------------
    def team_ref(self, team: PagerDutyTeam) -> dict[str, Any]:
        return self.reference("team", "teams", team.id, team.name)

    def user_ref(self, user: PagerDutyUser) -> dict[str, Any]:
        return self.reference("user", "users", user.id, user.name)

    def team(self, team: PagerDutyTeam) -> dict[str, Any]:
        return self._object("team", "teams", team.id, team.name) | {
            "name": team.name,
            "description": team.description,
            "default_role": team.default_role,
        }

    def teams(self, team_ids: list[str], *, full: bool) -> list[dict[str, Any]]:
        teams = [self._org.teams[team_id] for team_id in team_ids]
        return [self.team(t) if full else self.team_ref(t) for t in teams]

    def user(self, user: PagerDutyUser, includes: Set[str] = NO_INCLUDES) -> dict[str, Any]:
        return self._object("user", "users", user.id, user.name) | {
            "name": user.name,
            "email": user.email,
            "time_zone": user.time_zone,
            "color": "purple",
            "role": user.role,
            "avatar_url": "https://secure.gravatar.com/avatar/sandbox.png?d=mm&r=PG",
            "description": None,
            "invitation_sent": False,
            "created_via_sso": False,
            "job_title": user.job_title,
            "teams": self.teams(self._org.teams_of(user.id), full="teams" in includes),
            "contact_methods": [],
            "notification_rules": [],
        }

    # -- schedules -----------------------------------------------------------------------------------
    def schedule_ref(self, schedule: Schedule) -> dict[str, Any]:
        return self.reference("schedule", "schedules", schedule.id, schedule.name)

    def schedule(self, schedule: Schedule, *, layers: bool) -> dict[str, Any]:
        users = self._org.users
        rendered = self._object("schedule", "schedules", schedule.id, schedule.name) | {
            "name": schedule.name,
            "description": schedule.description,
            "time_zone": schedule.time_zone,
            "users": [self.user_ref(users[user_id]) for user_id in schedule.user_ids],
            "escalation_policies": [
                self.policy_ref(p) for p in self._org.policies_using_schedule(schedule.id)
            ],
            "teams": self.teams(schedule.team_ids, full=False),
        }
        if layers:
            rendered["schedule_layers"] = [
                {
                    "id": layer.id,
                    "name": layer.name,
                    "start": layer.start,
                    "end": layer.end,
                    "rotation_virtual_start": layer.rotation_virtual_start,
                    "rotation_turn_length_seconds": layer.rotation_turn_length_seconds,
                    "users": [{"user": self.user_ref(users[user_id])} for user_id in layer.user_ids],
                    "restrictions": [],
                }
                for layer in schedule.layers
            ]
        return rendered

    # -- escalation policies -------------------------------------------------------------------------
    def policy_ref(self, policy: EscalationPolicy) -> dict[str, Any]:
        return self.reference("escalation_policy", "escalation_policies", policy.id, policy.name)

    def target(self, target: EscalationTarget, *, full: bool) -> dict[str, Any]:
        if target.type == USER_TARGET:
            user = self._org.users[target.id]
            return self.user(user) if full else self.user_ref(user)
        schedule = self._org.schedules[target.id]
        return self.schedule(schedule, layers=False) if full else self.schedule_ref(schedule)

    def policy(self, policy: EscalationPolicy, includes: Set[str] = NO_INCLUDES) -> dict[str, Any]:
        full_targets = "targets" in includes
        services = self._org.services_on_policy(policy.id)
        return self._object("escalation_policy", "escalation_policies", policy.id, policy.name) | {
            "name": policy.name,
            "description": policy.description,
            "num_loops": policy.num_loops,
            "on_call_handoff_notifications": policy.on_call_handoff_notifications,
            "escalation_rules": [
                {
                    "id": rule.id,
                    "escalation_delay_in_minutes": rule.escalation_delay_in_minutes,
                    "targets": [self.target(t, full=full_targets) for t in rule.targets],
                }
                for rule in policy.rules
            ],
            "services": [
                self.service(s) if "services" in includes else self.service_ref(s) for s in services
            ],
            "teams": self.teams(policy.team_ids, full="teams" in includes),
        }

    # -- services ------------------------------------------------------------------------------------
    def service_ref(self, service: Service) -> dict[str, Any]:
        return self.reference("service", "services", service.id, service.name)

    def service(self, service: Service, includes: Set[str] = NO_INCLUDES) -> dict[str, Any]:
        policy = self._org.escalation_policies[service.escalation_policy_id]
        return self._object("service", "services", service.id, service.name) | {
            "name": service.name,
            "description": service.description,
            "auto_resolve_timeout": service.auto_resolve_timeout,
            "acknowledgement_timeout": service.acknowledgement_timeout,
            "created_at": service.created_at,
            "status": service.status,
            "last_incident_timestamp": None,
            "escalation_policy": (
                self.policy(policy) if "escalation_policies" in includes else self.policy_ref(policy)
            ),
            "teams": self.teams(self._org.service_team_ids(service), full="teams" in includes),
            "integrations": [],
            "incident_urgency_rule": service.incident_urgency_rule,
            "support_hours": service.support_hours,
            "scheduled_actions": service.scheduled_actions,
            "addons": [],
            "alert_creation": service.alert_creation,
            "alert_grouping_parameters": service.alert_grouping_parameters or {"type": None},
            "response_play": None,
        }
