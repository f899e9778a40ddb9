"""The `pagerduty` part of a seed file: the account's subdomain, users, teams with their members,
schedules, escalation policies and services. Objects refer to each other by email (users) or name (the
rest), as a person writes them; ids are optional and generated when left out.

A service's `tier` is the sandbox's, not PagerDuty's: kept on the service (and in `/_admin/state`) so a
test can say which standard applies, never served in PagerDuty's service object."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nthlayer_pipelines.sandbox.pagerduty.errors import PagerDutyError
from nthlayer_pipelines.sandbox.pagerduty.models import (
    ALERT_CREATION,
    DEFAULT_LAYER_START,
    DEFAULT_TURN_SECONDS,
    HANDOFF_NOTIFICATIONS,
    PAGERDUTY_TEAM_ROLES,
    PAGERDUTY_USER_ROLES,
    SCHEDULE_TARGET,
    SERVICE_STATUSES,
    URGENCIES,
    USER_TARGET,
    EscalationTarget,
    RuleSpec,
)
from nthlayer_pipelines.sandbox.pagerduty.org import LayerSpec, PagerDutyOrg, is_pagerduty_id, is_subdomain
from nthlayer_pipelines.sandbox.pagerduty.services import support_hours, urgency_rule
from nthlayer_pipelines.sandbox.seed_reader import SectionReader, SeedReader, join

SECTION_KEYS = {"subdomain", "users", "teams", "schedules", "escalation_policies", "services"}


def seed_subdomain(reader: SeedReader, section: Mapping[str, Any]) -> str | None:
    """The subdomain a seed pins, or None (the org is then a new account, see org.new_subdomain)."""
    value = section.get("subdomain")
    if value is None:
        return None
    text = reader.text(value, "pagerduty.subdomain")
    if not is_subdomain(text):
        raise reader.fail(
            "pagerduty.subdomain",
            f"{text!r} is not an account subdomain (lowercase letters, digits and inner hyphens, "
            "as in acme for https://acme.pagerduty.com)",
        )
    return text


class PagerDutySeedReader(SectionReader[PagerDutyOrg]):
    def read(self, section: Mapping[str, Any]) -> None:
        self.each(section, "pagerduty", "users", self.user)
        self.each(section, "pagerduty", "teams", self.team)
        self.each(section, "pagerduty", "schedules", self.schedule)
        self.each(section, "pagerduty", "escalation_policies", self.policy)
        self.each(section, "pagerduty", "services", self.service)

    def pd_id(self, value: Any, field: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not is_pagerduty_id(value):
            raise self.fail(field, f"{value!r} is not a PagerDuty id (P and 6 of 0-9, A-Z)")
        return value

    def known_user(self, value: Any, field: str) -> str:
        email = self.email(value, field)
        user = self.org.user_by_email(email)
        if user is None:
            raise self.fail(field, f"no user with email {email} in pagerduty.users")
        return user.id

    def user(self, item: Any, field: str) -> None:
        allowed = {"id", "name", "email", "role", "time_zone", "job_title"}
        item = self.mapping(item, field, allowed, ("name", "email"))
        name = self.text(item["name"], join(field, "name"))
        email = self.email(item["email"], join(field, "email"))
        role = self.choice(item.get("role"), join(field, "role"), PAGERDUTY_USER_ROLES, "user")
        user_id = self.pd_id(item.get("id"), join(field, "id"))
        if self.org.user_by_email(email) is not None:
            raise self.fail(join(field, "email"), f"{email} is already used by another user")
        try:
            self.org.add_user(
                name,
                email,
                role,
                id=user_id,
                time_zone=self.text(item.get("time_zone"), join(field, "time_zone"), default="Etc/UTC"),
                job_title=self.text(item.get("job_title"), join(field, "job_title"), default=""),
            )
        except ValueError as error:
            raise self.fail(join(field, "id"), str(error)) from error

    def team(self, item: Any, field: str) -> None:
        item = self.mapping(item, field, {"id", "name", "description", "members"}, ("name",))
        name = self.text(item["name"], join(field, "name"))
        if self.org.team_by_name(name) is not None:
            raise self.fail(join(field, "name"), f"a team named {name!r} is already declared")
        description = self.text(item.get("description"), join(field, "description"), default="")
        team_id = self.pd_id(item.get("id"), join(field, "id"))
        members: dict[str, str] = {}

        def member(entry: Any, member_field: str) -> None:
            entry = self.mapping(entry, member_field, {"email", "role"}, ("email", "role"))
            user_id = self.known_user(entry["email"], join(member_field, "email"))
            if user_id in members:
                raise self.fail(join(member_field, "email"), f"{entry['email']} is already a member")
            role_field = join(member_field, "role")
            members[user_id] = self.choice(entry.get("role"), role_field, PAGERDUTY_TEAM_ROLES, "manager")

        self.each(item, field, "members", member)
        try:
            team = self.org.add_team(name, description, id=team_id)
        except ValueError as error:
            raise self.fail(join(field, "id"), str(error)) from error
        for user_id, role in members.items():
            self.org.set_membership(team.id, user_id, role)

    def team_ids(self, item: Mapping[str, Any], field: str) -> list[str]:
        """The ids of the teams `item` names under `teams`."""
        found: list[str] = []

        def team(value: Any, team_field: str) -> None:
            found.append(self.named(value, team_field, self.org.team_by_name, "team", "teams"))

        self.each(item, field, "teams", team)
        return found

    def named(self, value: Any, field: str, lookup: Callable[[str], Any], what: str, section: str) -> str:
        """The id of the object `value` names, declared earlier in `pagerduty.<section>`."""
        name = self.text(value, field)
        found = lookup(name)
        if found is None:
            raise self.fail(field, f"no {what} named {name!r} in pagerduty.{section}")
        return found.id

    def schedule(self, item: Any, field: str) -> None:
        allowed = {"id", "name", "description", "time_zone", "teams", "users", "layers"}
        item = self.mapping(item, field, allowed, ("name",))
        name = self.text(item["name"], join(field, "name"))
        if self.org.schedule_by_name(name) is not None:
            raise self.fail(join(field, "name"), f"a schedule named {name!r} is already declared")
        if ("users" in item) == ("layers" in item):
            raise self.fail(field, "give either users (one layer) or layers")
        layers: list[LayerSpec] = []

        def layer(entry: Any, layer_field: str) -> None:
            allowed = {"name", "users", "rotation_turn_length_seconds", "start"}
            entry = self.mapping(entry, layer_field, allowed, ("users",))
            users: list[str] = []
            self.each(entry, layer_field, "users", lambda v, f: users.append(self.known_user(v, f)))
            if not users:
                raise self.fail(join(layer_field, "users"), "a layer needs at least one user")
            turn_field = join(layer_field, "rotation_turn_length_seconds")
            layers.append(
                LayerSpec(
                    tuple(users),
                    self.text(entry.get("name"), join(layer_field, "name"), default=""),
                    self.count(
                        entry.get("rotation_turn_length_seconds"), turn_field, default=DEFAULT_TURN_SECONDS
                    ),
                    self.text(entry.get("start"), join(layer_field, "start"), default=DEFAULT_LAYER_START),
                )
            )

        if "users" in item:
            layer({"users": item["users"]}, field)
        else:
            self.each(item, field, "layers", layer)
        self.org.add_schedule(
            name,
            self.text(item.get("time_zone"), join(field, "time_zone"), default="Etc/UTC"),
            layers,
            id=self.pd_id(item.get("id"), join(field, "id")),
            description=self.text(item.get("description"), join(field, "description"), default=""),
            team_ids=self.team_ids(item, field),
        )

    def targets(self, item: Mapping[str, Any], field: str) -> tuple[EscalationTarget, ...]:
        """A rule's targets: a user's email, `{user: email}` or `{schedule: name}`."""
        found: list[EscalationTarget] = []

        def target(value: Any, target_field: str) -> None:
            if isinstance(value, Mapping) and "schedule" in value:
                value = self.mapping(value, target_field, {"schedule"})
                lookup, where = self.org.schedule_by_name, join(target_field, "schedule")
                schedule_id = self.named(value["schedule"], where, lookup, "schedule", "schedules")
                found.append(EscalationTarget(SCHEDULE_TARGET, schedule_id))
                return
            if isinstance(value, Mapping):
                value = self.mapping(value, target_field, {"user"}, ("user",))["user"]
                target_field = join(target_field, "user")
            found.append(EscalationTarget(USER_TARGET, self.known_user(value, target_field)))

        self.each(item, field, "targets", target)
        if not 1 <= len(found) <= 10:
            raise self.fail(join(field, "targets"), "an escalation rule needs 1 to 10 targets")
        return tuple(found)

    def policy(self, item: Any, field: str) -> None:
        allowed = {"id", "name", "description", "num_loops", "on_call_handoff_notifications", "teams"}
        item = self.mapping(item, field, allowed | {"targets", "rules"}, ("name",))
        name = self.text(item["name"], join(field, "name"))
        if self.org.policy_by_name(name) is not None:
            raise self.fail(join(field, "name"), f"an escalation policy named {name!r} is already declared")
        rules: list[RuleSpec] = []
        if "rules" in item and "targets" in item:
            raise self.fail(field, "give either targets (one rule) or rules")
        if "rules" in item:

            def rule(entry: Any, rule_field: str) -> None:
                entry = self.mapping(
                    entry, rule_field, {"escalation_delay_in_minutes", "targets"}, ("targets",)
                )
                delay_field = join(rule_field, "escalation_delay_in_minutes")
                delay = self.count(entry.get("escalation_delay_in_minutes"), delay_field, default=30)
                rules.append(RuleSpec(self.targets(entry, rule_field), delay))

            self.each(item, field, "rules", rule)
            if not rules:
                raise self.fail(join(field, "rules"), "an escalation policy needs at least one rule")
        elif "targets" in item:
            rules.append(RuleSpec(self.targets(item, field)))
        else:
            raise self.fail(join(field, "targets"), "is required")
        team_ids = self.team_ids(item, field)
        if len(team_ids) > 1:
            raise self.fail(join(field, "teams"), "PagerDuty allows at most one team per escalation policy")
        handoff_field = join(field, "on_call_handoff_notifications")
        try:
            self.org.add_escalation_policy(
                name,
                team_ids,
                rules=rules,
                id=self.pd_id(item.get("id"), join(field, "id")),
                description=self.text(item.get("description"), join(field, "description"), default=""),
                num_loops=self.count(item.get("num_loops"), join(field, "num_loops")),
                on_call_handoff_notifications=self.choice(
                    item.get("on_call_handoff_notifications"),
                    handoff_field,
                    HANDOFF_NOTIFICATIONS,
                    "if_has_services",
                ),
            )
        except ValueError as error:
            raise self.fail(join(field, "id"), str(error)) from error

    def service(self, item: Any, field: str) -> None:
        allowed = {
            "id", "name", "description", "escalation_policy", "tier", "acknowledgement_timeout",
            "auto_resolve_timeout", "urgency", "incident_urgency_rule", "support_hours", "status",
            "alert_creation",
        }  # fmt: skip
        item = self.mapping(item, field, allowed, ("name", "escalation_policy"))
        name = self.text(item["name"], join(field, "name"))
        if self.org.service_by_name(name) is not None:
            raise self.fail(join(field, "name"), f"a service named {name!r} is already declared")
        policy_id = self.named(
            item["escalation_policy"],
            join(field, "escalation_policy"),
            self.org.policy_by_name,
            "escalation policy",
            "escalation_policies",
        )
        settings: dict[str, Any] = {
            "description": self.text(item.get("description"), join(field, "description"), default=""),
            "status": self.choice(item.get("status"), join(field, "status"), SERVICE_STATUSES, "active"),
            "alert_creation": self.choice(
                item.get("alert_creation"), join(field, "alert_creation"), ALERT_CREATION, ALERT_CREATION[1]
            ),
        }
        if item.get("tier") is not None:
            settings["tier"] = self.text(item["tier"], join(field, "tier"))
        for timeout in ("acknowledgement_timeout", "auto_resolve_timeout"):
            if timeout in item:  # an explicit null disables the timeout, as PagerDuty's null does
                settings[timeout] = (
                    None if item[timeout] is None else self.count(item[timeout], join(field, timeout))
                )
        if "urgency" in item and "incident_urgency_rule" in item:
            raise self.fail(field, "give either urgency or incident_urgency_rule")
        if "urgency" in item:
            urgency = self.choice(item["urgency"], join(field, "urgency"), URGENCIES, "high")
            settings["incident_urgency_rule"] = {"type": "constant", "urgency": urgency}
        for key, check in (("incident_urgency_rule", urgency_rule), ("support_hours", support_hours)):
            if key in item:
                try:
                    settings[key] = check(item[key])
                except PagerDutyError as error:
                    raise self.fail(join(field, key), "; ".join(error.errors)) from error
        self.org.add_service(name, policy_id, id=self.pd_id(item.get("id"), join(field, "id")), **settings)
