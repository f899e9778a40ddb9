"""PagerDuty's services, escalation policies and schedules: what pages whom.

`/services` and `/escalation_policies` are listed, read, created and updated; `/schedules` listed and read.
Bodies are wrapped (`{"service": {...}}`) both ways, as PagerDuty's are. What PagerDuty refuses, the
sandbox refuses with the same 400 code 2001 and texts: a `status` other than active or disabled on an
update (a client echoing a critical service's status back, terraform-provider-pagerduty #82), time-based
alert grouping without a timeout (#1015), a policy without rules ("Cannot Delete Only Rule For Escalation
Policy") or with a taken name. Other read-only fields (`teams`, `integrations`, `created_at`...) are
ignored, so an object read can be written back as it is.

A rule's targets come back in the sandbox's own order (by id), not the order sent: PagerDuty answers in its
own order too (#639), so a client must compare them as sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from starlette.responses import Response

from nthlayer_pipelines.sandbox.core import Endpoint, RequestContext, json_response
from nthlayer_pipelines.sandbox.pagerduty.errors import found, invalid_input
from nthlayer_pipelines.sandbox.pagerduty.http import (
    Page,
    api_base,
    includes,
    json_object,
    sorted_by_name,
    write_origin,
)
from nthlayer_pipelines.sandbox.pagerduty.models import (
    ALERT_CREATION,
    HANDOFF_NOTIFICATIONS,
    SCHEDULE_TARGET,
    SETTABLE_SERVICE_STATUSES,
    URGENCIES,
    USER_TARGET,
    EscalationPolicy,
    EscalationTarget,
    RuleSpec,
    Schedule,
    Service,
)
from nthlayer_pipelines.sandbox.pagerduty.org import PagerDutyOrg
from nthlayer_pipelines.sandbox.pagerduty.render import Renderer

SERVICE_INCLUDES = ("escalation_policies", "teams", "integrations", "auto_pause_notifications_parameters")
POLICY_INCLUDES = ("services", "teams", "targets", "escalation_rule_assignment_strategies")
SCHEDULE_INCLUDES = ("schedule_layers", "overrides_subschedule", "final_schedule")
STATUS_REFUSED = "Status must be in active or disabled."
# A target's type as PagerDuty accepts it (the spec's EscalationTargetReference), and the reference type
# the sandbox keeps.
_TARGET_TYPES = {
    "user_reference": USER_TARGET,
    "user": USER_TARGET,
    "schedule_reference": SCHEDULE_TARGET,
    "schedule": SCHEDULE_TARGET,
    "schedule_v3_reference": SCHEDULE_TARGET,
}

Handler = Callable[[RequestContext], Response]


class ServiceEndpoints:
    """The handlers; `PagerDutyApi` serves them behind its gate."""

    def __init__(self, org: PagerDutyOrg) -> None:
        self._org = org

    def endpoints(self, guard: Callable[[Handler], Handler]) -> list[Endpoint]:
        return [
            Endpoint("GET", "/services", guard(self.list_services)),
            Endpoint("POST", "/services", guard(self.create_service)),
            Endpoint("GET", "/services/{id}", guard(self.get_service)),
            Endpoint("PUT", "/services/{id}", guard(self.update_service)),
            Endpoint("GET", "/escalation_policies", guard(self.list_policies)),
            Endpoint("POST", "/escalation_policies", guard(self.create_policy)),
            Endpoint("GET", "/escalation_policies/{id}", guard(self.get_policy)),
            Endpoint("PUT", "/escalation_policies/{id}", guard(self.update_policy)),
            Endpoint("GET", "/schedules", guard(self.list_schedules)),
            Endpoint("GET", "/schedules/{id}", guard(self.get_schedule)),
        ]

    def _render(self, ctx: RequestContext) -> Renderer:
        return Renderer(self._org, api_base(ctx))

    # -- services ------------------------------------------------------------------------------------
    def list_services(self, ctx: RequestContext) -> Response:
        page = Page.from_query(ctx)
        params = ctx.request.query_params
        query = (params.get("query") or "").casefold()
        name = params.get("name")
        team_ids = set(params.getlist("team_ids[]"))
        services: Sequence[Service] = self._org.services_by_name
        if team_ids:
            services = [s for s in services if team_ids.intersection(self._org.service_team_ids(s))]
        if query:
            services = [s for s in services if query in s.name.casefold()]
        if name:
            services = [s for s in services if s.name == name]
        wanted, render = includes(ctx, SERVICE_INCLUDES), self._render(ctx)
        return page.respond("services", sorted_by_name(ctx, services), lambda s: render.service(s, wanted))

    def get_service(self, ctx: RequestContext) -> Response:
        service = found(self._org.services, ctx.path_params["id"], "Service")
        wanted = includes(ctx, SERVICE_INCLUDES)
        return json_response({"service": self._render(ctx).service(service, wanted)})

    def create_service(self, ctx: RequestContext) -> Response:
        fields = service_fields(_wrapped(ctx, "service"), creating=True)
        name, policy_id = fields.pop("name"), fields.pop("escalation_policy_id")
        with _refused_as_invalid_input():
            service = self._org.add_service(name, policy_id, origin=write_origin(ctx), **fields)
        return json_response({"service": self._render(ctx).service(service)}, 201)

    def update_service(self, ctx: RequestContext) -> Response:
        service = found(self._org.services, ctx.path_params["id"], "Service")
        fields = service_fields(_wrapped(ctx, "service"), creating=False)
        with _refused_as_invalid_input():
            self._org.update_service(service.id, origin=write_origin(ctx), **fields)
        return json_response({"service": self._render(ctx).service(service)})

    # -- escalation policies -------------------------------------------------------------------------
    def list_policies(self, ctx: RequestContext) -> Response:
        page = Page.from_query(ctx)
        params = ctx.request.query_params
        query = (params.get("query") or "").casefold()
        team_ids = set(params.getlist("team_ids[]"))
        user_ids = params.getlist("user_ids[]")
        policies: Sequence[EscalationPolicy] = self._org.policies_by_name
        if user_ids:
            targeting: set[str] = set()
            for user_id in user_ids:
                targeting |= self._org.policies_targeting(user_id)
            policies = [p for p in policies if p.id in targeting]
        if team_ids:
            policies = [p for p in policies if team_ids.intersection(p.team_ids)]
        if query:
            policies = [p for p in policies if query in p.name.casefold()]
        wanted, render = includes(ctx, POLICY_INCLUDES), self._render(ctx)
        return page.respond(
            "escalation_policies", sorted_by_name(ctx, policies), lambda p: render.policy(p, wanted)
        )

    def get_policy(self, ctx: RequestContext) -> Response:
        policy = found(self._org.escalation_policies, ctx.path_params["id"], "Escalation policy")
        wanted = includes(ctx, POLICY_INCLUDES)
        return json_response({"escalation_policy": self._render(ctx).policy(policy, wanted)})

    def create_policy(self, ctx: RequestContext) -> Response:
        fields = policy_fields(_wrapped(ctx, "escalation_policy"), creating=True)
        name, team_ids = fields.pop("name"), fields.pop("team_ids", [])
        with _refused_as_invalid_input():
            policy = self._org.add_escalation_policy(name, team_ids, origin=write_origin(ctx), **fields)
        return json_response({"escalation_policy": self._render(ctx).policy(policy)}, 201)

    def update_policy(self, ctx: RequestContext) -> Response:
        policy = found(self._org.escalation_policies, ctx.path_params["id"], "Escalation policy")
        fields = policy_fields(_wrapped(ctx, "escalation_policy"), creating=False)
        with _refused_as_invalid_input():
            self._org.update_escalation_policy(policy.id, origin=write_origin(ctx), **fields)
        return json_response({"escalation_policy": self._render(ctx).policy(policy)})

    # -- schedules -----------------------------------------------------------------------------------
    def list_schedules(self, ctx: RequestContext) -> Response:
        page = Page.from_query(ctx)
        params = ctx.request.query_params
        query = (params.get("query") or "").casefold()
        team_ids = set(params.getlist("team_ids[]"))
        schedules: Sequence[Schedule] = self._org.schedules_by_name
        if team_ids:
            schedules = [s for s in schedules if team_ids.intersection(s.team_ids)]
        if query:
            schedules = [s for s in schedules if query in s.name.casefold()]
        layers, render = "schedule_layers" in includes(ctx, SCHEDULE_INCLUDES), self._render(ctx)
        return page.respond("schedules", schedules, lambda s: render.schedule(s, layers=layers))

    def get_schedule(self, ctx: RequestContext) -> Response:
        schedule = found(self._org.schedules, ctx.path_params["id"], "Schedule")
        return json_response({"schedule": self._render(ctx).schedule(schedule, layers=True)})


@contextmanager
def _refused_as_invalid_input() -> Iterator[None]:
    """The org refuses what PagerDuty refuses with a ValueError in PagerDuty's words: a 400 code 2001."""
    try:
        yield
    except ValueError as error:
        raise invalid_input(str(error)) from None


# -- request bodies ----------------------------------------------------------------------------------


def _wrapped(ctx: RequestContext, key: str) -> Mapping[str, Any]:
    body = json_object(ctx).get(key)
    if not isinstance(body, dict):
        raise invalid_input(f"{key.replace('_', ' ').capitalize()} must be an object")
    return body


def _name(body: Mapping[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise invalid_input("Name can't be blank")
    if len(name) > 255:
        raise invalid_input("Name is too long (maximum is 255 characters)")
    return name


def _description(body: Mapping[str, Any]) -> str:
    description = body.get("description")
    if description is None:
        return ""
    if not isinstance(description, str):
        raise invalid_input("Description must be a string")
    return description


def _count(body: Mapping[str, Any], key: str, *, nullable: bool = False) -> int | None:
    value = body.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        label = key.replace("_", " ").capitalize()
        raise invalid_input(f"{label} must be a non-negative integer" + (" or null" if nullable else ""))
    return value


def _reference_id(value: Any, kind: str) -> str:
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        raise invalid_input(f"{kind.replace('_', ' ').capitalize()} must be a reference with an id")
    if value.get("type", f"{kind}_reference") not in (kind, f"{kind}_reference"):
        raise invalid_input(f"{kind.replace('_', ' ').capitalize()} type must be {kind}_reference")
    return value["id"]


def service_fields(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """A service body as the org's fields: what is sent, checked; read-only fields dropped."""
    fields: dict[str, Any] = {}
    if creating or "name" in body:
        fields["name"] = _name(body)
    if creating or "escalation_policy" in body:
        fields["escalation_policy_id"] = _reference_id(body.get("escalation_policy"), "escalation_policy")
    if "description" in body:
        fields["description"] = _description(body)
    for timeout in ("acknowledgement_timeout", "auto_resolve_timeout"):
        if timeout in body:
            fields[timeout] = _count(body, timeout, nullable=True)
    if "incident_urgency_rule" in body:
        fields["incident_urgency_rule"] = urgency_rule(body["incident_urgency_rule"])
    if "support_hours" in body:
        fields["support_hours"] = support_hours(body["support_hours"])
    if "scheduled_actions" in body:
        actions = body["scheduled_actions"] or []
        if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
            raise invalid_input("Scheduled actions must be a list of objects")
        fields["scheduled_actions"] = actions
    if "alert_creation" in body:
        if body["alert_creation"] not in ALERT_CREATION:
            raise invalid_input(f"Alert creation must be one of {', '.join(ALERT_CREATION)}")
        fields["alert_creation"] = body["alert_creation"]
    if "alert_grouping_parameters" in body:
        fields["alert_grouping_parameters"] = _alert_grouping(body["alert_grouping_parameters"])
    if "status" in body:
        status = body["status"]
        if creating and status != "active":
            raise invalid_input("Status must be active.")  # the only status a service is created with
        if status not in SETTABLE_SERVICE_STATUSES:
            raise invalid_input(STATUS_REFUSED)
        fields["status"] = status
    return fields


def urgency_rule(value: Any) -> dict[str, Any]:
    """`{type: constant, urgency}` or `{type: use_support_hours, during_support_hours, outside_...}`."""

    def constant(part: Any, where: str) -> dict[str, Any]:
        if not isinstance(part, dict) or part.get("type", "constant") != "constant":
            raise invalid_input(f"{where} must be of type constant")
        if part.get("urgency") not in URGENCIES:
            raise invalid_input(f"{where} urgency must be one of {', '.join(URGENCIES)}")
        return {"type": "constant", "urgency": part["urgency"]}

    if not isinstance(value, dict):
        raise invalid_input("Incident urgency rule must be an object")
    if value.get("type") == "use_support_hours":
        return {
            "type": "use_support_hours",
            "during_support_hours": constant(value.get("during_support_hours"), "During support hours"),
            "outside_support_hours": constant(value.get("outside_support_hours"), "Outside support hours"),
        }
    if value.get("type") != "constant":
        raise invalid_input("Incident urgency rule type must be constant or use_support_hours")
    return constant(value, "Incident urgency rule")


def support_hours(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "fixed_time_per_day":
        raise invalid_input("Support hours must be of type fixed_time_per_day")
    days = value.get("days_of_week")
    if not isinstance(days, list) or not all(isinstance(d, int) and 1 <= d <= 7 for d in days):
        raise invalid_input("Support hours days of week must be a list of 1 (Monday) to 7")
    for key in ("time_zone", "start_time", "end_time"):
        if not isinstance(value.get(key), str):
            raise invalid_input(f"Support hours {key.replace('_', ' ')} must be a string")
    return {key: value[key] for key in ("type", "time_zone", "days_of_week", "start_time", "end_time")}


def _alert_grouping(value: Any) -> dict[str, Any] | None:
    if value is None or value == {"type": None}:  # no grouping, as a service is read back without it
        return None
    if not isinstance(value, dict):
        raise invalid_input("Alert grouping parameters must be an object")
    config = value.get("config")
    if value.get("type") == "time" and (not isinstance(config, dict) or config.get("timeout") is None):
        raise invalid_input("timeout cannot be null")
    return dict(value)


def policy_fields(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """An escalation policy body as the org's arguments; `services` (read-only) is dropped."""
    fields: dict[str, Any] = {}
    if creating or "name" in body:
        fields["name"] = _name(body)
    if "description" in body:
        fields["description"] = _description(body)
    if "num_loops" in body:
        fields["num_loops"] = _count(body, "num_loops")
    if "on_call_handoff_notifications" in body:
        value = body["on_call_handoff_notifications"]
        if value not in HANDOFF_NOTIFICATIONS:
            choices = ", ".join(HANDOFF_NOTIFICATIONS)
            raise invalid_input(f"On call handoff notifications must be one of {choices}")
        fields["on_call_handoff_notifications"] = value
    if "teams" in body:
        teams = body["teams"] or []
        if not isinstance(teams, list):
            raise invalid_input("Teams must be a list of team references")
        fields["team_ids"] = [_reference_id(team, "team") for team in teams]
    if creating or "escalation_rules" in body:
        rules = body.get("escalation_rules")
        if not isinstance(rules, list):
            raise invalid_input("Escalation rules must be a list")
        if creating and not rules:
            raise invalid_input("Escalation policy must have at least one escalation rule")
        fields["rules"] = [_rule(rule) for rule in rules]
    return fields


def _rule(value: Any) -> RuleSpec:
    if not isinstance(value, dict):
        raise invalid_input("Escalation rule must be an object")
    delay = value.get("escalation_delay_in_minutes")
    if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
        raise invalid_input("Escalation delay in minutes must be a non-negative integer")
    targets = value.get("targets")
    if not isinstance(targets, list) or not targets:
        raise invalid_input("An escalation rule must have between 1 and 10 targets")
    parsed = []
    for target in targets:
        kind = _TARGET_TYPES.get(target.get("type")) if isinstance(target, dict) else None
        if kind is None or not isinstance(target.get("id"), str):
            raise invalid_input("Escalation rule targets must be user_reference or schedule_reference")
        parsed.append(EscalationTarget(kind, target["id"]))
    rule_id = value.get("id")
    return RuleSpec(tuple(parsed), delay, rule_id if isinstance(rule_id, str) else None)
