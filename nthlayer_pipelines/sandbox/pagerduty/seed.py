"""The `pagerduty` part of a seed file: the account's subdomain, users, teams with their members, and
escalation policies. Objects refer to each other by name (teams) or email (users), as a person writes
them; ids are optional and generated when left out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nthlayer_pipelines.sandbox.pagerduty.org import (
    PAGERDUTY_TEAM_ROLES,
    PAGERDUTY_USER_ROLES,
    PagerDutyOrg,
    is_pagerduty_id,
    is_subdomain,
)
from nthlayer_pipelines.sandbox.seed_reader import SectionReader, SeedReader, join

SECTION_KEYS = {"subdomain", "users", "teams", "escalation_policies"}


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
        self.each(section, "pagerduty", "escalation_policies", self.policy)

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

    def policy(self, item: Any, field: str) -> None:
        allowed = {"id", "name", "description", "num_loops", "teams", "targets"}
        item = self.mapping(item, field, allowed, ("name", "targets"))
        name = self.text(item["name"], join(field, "name"))
        team_ids: list[str] = []
        targets: list[str] = []

        def team(value: Any, team_field: str) -> None:
            team_name = self.text(value, team_field)
            found = self.org.team_by_name(team_name)
            if found is None:
                raise self.fail(team_field, f"no team named {team_name!r} in pagerduty.teams")
            team_ids.append(found.id)

        def target(value: Any, target_field: str) -> None:
            targets.append(self.known_user(value, target_field))

        self.each(item, field, "teams", team)
        self.each(item, field, "targets", target)
        if not 1 <= len(targets) <= 10:
            raise self.fail(join(field, "targets"), "an escalation rule needs 1 to 10 targets")
        if len(team_ids) > 1:
            raise self.fail(join(field, "teams"), "PagerDuty allows at most one team per escalation policy")
        num_loops = self.count(item.get("num_loops"), join(field, "num_loops"))
        try:
            self.org.add_escalation_policy(
                name,
                team_ids,
                targets,
                id=self.pd_id(item.get("id"), join(field, "id")),
                description=self.text(item.get("description"), join(field, "description"), default=""),
                num_loops=num_loops,
            )
        except ValueError as error:
            raise self.fail(join(field, "id"), str(error)) from error
