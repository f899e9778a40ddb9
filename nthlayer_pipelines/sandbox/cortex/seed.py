"""The `cortex` part of a seed file: teams by tag, with members and their roles."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nthlayer_pipelines.sandbox.cortex.org import CortexMember, CortexOrg, CortexRole
from nthlayer_pipelines.sandbox.seed_reader import SectionReader, join

SECTION_KEYS = {"teams"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class CortexSeedReader(SectionReader[CortexOrg]):
    def read(self, section: Mapping[str, Any]) -> None:
        self.each(section, "cortex", "teams", self.cortex_team)

    def cortex_team(self, item: Any, field: str) -> None:
        allowed = {"id", "tag", "name", "description", "summary", "archived", "members", "slack_channels"}
        item = self.mapping(item, field, allowed, ("tag", "name"))
        tag = self.text(item["tag"], join(field, "tag"))
        if not _SLUG.match(tag):
            raise self.fail(join(field, "tag"), f"{tag!r} is not a tag (lowercase letters, digits, . _ -)")
        if self.org.find(tag) is not None:
            raise self.fail(join(field, "tag"), f"a Cortex team tagged {tag!r} is already declared")
        archived = item.get("archived", False)
        if not isinstance(archived, bool):
            raise self.fail(join(field, "archived"), f"expected true or false, got {archived!r}")
        members: list[CortexMember] = []
        emails: set[str] = set()

        def member(entry: Any, member_field: str) -> None:
            entry = self.mapping(
                entry, member_field, {"email", "name", "roles", "notifications_enabled"}, ("email",)
            )
            email = self.email(entry["email"], join(member_field, "email"))
            if email.casefold() in emails:
                raise self.fail(join(member_field, "email"), f"{email} is already a member")
            emails.add(email.casefold())
            roles: list[CortexRole] = []
            self.each(entry, member_field, "roles", lambda r, f: roles.append(self.cortex_role(r, f)))
            notify = entry.get("notifications_enabled", True)
            if not isinstance(notify, bool):
                raise self.fail(
                    join(member_field, "notifications_enabled"), f"expected true or false, got {notify!r}"
                )
            name = self.text(entry.get("name"), join(member_field, "name"), default=email.split("@")[0])
            members.append(CortexMember(name, email, roles, notify))

        self.each(item, field, "members", member)
        channels: list[str] = []
        self.each(
            item, field, "slack_channels", lambda c, f: channels.append(self.text(c, f).removeprefix("#"))
        )
        team_id = item.get("id")
        if team_id is not None:
            team_id = self.text(team_id, join(field, "id"))
            if self.org.find(team_id) is not None:
                raise self.fail(join(field, "id"), f"id {team_id!r} is already used")
        self.org.add_team(
            tag,
            self.text(item["name"], join(field, "name")),
            description=self.text(item.get("description"), join(field, "description"), default=""),
            summary=self.text(item.get("summary"), join(field, "summary"), default=""),
            archived=archived,
            members=members,
            slack_channels=channels,
            id=team_id,
        )

    def cortex_role(self, value: Any, field: str) -> CortexRole:
        if isinstance(value, str):
            tag = self.text(value, field)
            return CortexRole(tag, role_display_name(tag))
        value = self.mapping(value, field, {"tag", "name"}, ("tag",))
        tag = self.text(value["tag"], join(field, "tag"))
        name = self.text(value.get("name"), join(field, "name"), default=role_display_name(tag))
        return CortexRole(tag, name)


def role_display_name(tag: str) -> str:
    """`oncall-manager` -> `Oncall Manager`."""
    return " ".join(word.capitalize() for word in re.split(r"[-_.\s]+", tag) if word)
