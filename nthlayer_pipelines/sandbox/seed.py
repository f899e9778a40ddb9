"""Read a sandbox org from a YAML seed file, refusing a bad one with the file, field and reason."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from nthlayer_pipelines.sandbox.cortex.org import CortexMember, CortexRole
from nthlayer_pipelines.sandbox.org import SandboxOrg
from nthlayer_pipelines.sandbox.pagerduty.org import (
    PAGERDUTY_TEAM_ROLES,
    PAGERDUTY_USER_ROLES,
    is_pagerduty_id,
    is_subdomain,
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class SeedError(ValueError):
    """A seed that cannot be loaded: which file, which field, what is wrong."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        super().__init__(f"{source}: {field}: {reason}" if field else f"{source}: {reason}")
        self.source, self.field, self.reason = source, field, reason


def load_seed(path: str | Path, *, seed: int = 0) -> SandboxOrg:
    """Build an org from a YAML seed file (see the package docstring for the format)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SeedError(source, "", f"cannot read the file: {error.strerror or error}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SeedError(source, where, f"not valid YAML: {getattr(error, 'problem', error)}") from error
    return org_from_seed({} if data is None else data, source=source, seed=seed)


def org_from_seed(data: Any, *, source: str = "<seed>", seed: int = 0) -> SandboxOrg:
    """Build an org from an already parsed seed document."""
    return _SeedReader(source, seed).read(data)


class _SeedReader:
    def __init__(self, source: str, seed: int) -> None:
        self.source = source
        self.seed = seed
        self.org = SandboxOrg(seed)

    def fail(self, field: str, reason: str) -> SeedError:
        return SeedError(self.source, field, reason)

    def read(self, data: Any) -> SandboxOrg:
        root = self.mapping(data, "", {"pagerduty", "cortex", "slack"})
        pagerduty = self.mapping(
            _or_empty(root.get("pagerduty")),
            "pagerduty",
            {"subdomain", "users", "teams", "escalation_policies"},
        )
        # Unpinned, the org is a new account with a subdomain of its own (see org.new_subdomain).
        self.org = SandboxOrg(self.seed, subdomain=self.subdomain(pagerduty.get("subdomain")))
        self.each(pagerduty, "pagerduty", "users", self.user)
        self.each(pagerduty, "pagerduty", "teams", self.team)
        self.each(pagerduty, "pagerduty", "escalation_policies", self.policy)
        cortex = self.mapping(_or_empty(root.get("cortex")), "cortex", {"teams"})
        self.each(cortex, "cortex", "teams", self.cortex_team)
        slack = self.mapping(_or_empty(root.get("slack")), "slack", {"channels"})
        self.each(slack, "slack", "channels", self.channel)
        return self.org

    # -- generic checks ------------------------------------------------------------------------------
    def mapping(self, value: Any, field: str, allowed: set[str], required: tuple[str, ...] = ()) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.fail(field or "(top level)", f"expected a mapping, got {_kind(value)}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise self.fail(
                field or "(top level)", f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
            )
        for key in required:
            if value.get(key) in (None, ""):
                raise self.fail(_join(field, key), "is required")
        return value

    def each(self, parent: Mapping, field: str, key: str, read_one: Callable[[Any, str], None]) -> None:
        items = parent.get(key)
        if items is None:
            items = []
        where = _join(field, key)
        if not isinstance(items, list):
            raise self.fail(where, f"expected a list, got {_kind(items)}")
        for index, item in enumerate(items):
            read_one(item, f"{where}[{index}]")

    def text(self, value: Any, field: str, *, default: str | None = None) -> str:
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or (default is None and not value.strip()):
            raise self.fail(field, f"expected a non-empty string, got {_kind(value)}")
        return value

    def email(self, value: Any, field: str) -> str:
        email = self.text(value, field)
        if not _EMAIL.match(email):
            raise self.fail(field, f"{email!r} is not an email address")
        return email

    def choice(self, value: Any, field: str, choices: tuple[str, ...], default: str) -> str:
        if value is None:
            return default
        if value not in choices:
            raise self.fail(field, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def pd_id(self, value: Any, field: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not is_pagerduty_id(value):
            raise self.fail(field, f"{value!r} is not a PagerDuty id (P and 6 of 0-9, A-Z)")
        return value

    def known_user(self, value: Any, field: str) -> str:
        email = self.email(value, field)
        user = self.org.pagerduty.user_by_email(email)
        if user is None:
            raise self.fail(field, f"no user with email {email} in pagerduty.users")
        return user.id

    # -- PagerDuty -----------------------------------------------------------------------------------
    def subdomain(self, value: Any) -> str | None:
        if value is None:
            return None
        text = self.text(value, "pagerduty.subdomain")
        if not is_subdomain(text):
            raise self.fail(
                "pagerduty.subdomain",
                f"{text!r} is not an account subdomain (lowercase letters, digits and inner hyphens, "
                "as in acme for https://acme.pagerduty.com)",
            )
        return text

    def user(self, item: Any, field: str) -> None:
        allowed = {"id", "name", "email", "role", "time_zone", "job_title"}
        item = self.mapping(item, field, allowed, ("name", "email"))
        name = self.text(item["name"], _join(field, "name"))
        email = self.email(item["email"], _join(field, "email"))
        role = self.choice(item.get("role"), _join(field, "role"), PAGERDUTY_USER_ROLES, "user")
        user_id = self.pd_id(item.get("id"), _join(field, "id"))
        if self.org.pagerduty.user_by_email(email) is not None:
            raise self.fail(_join(field, "email"), f"{email} is already used by another user")
        try:
            self.org.pagerduty.add_user(
                name,
                email,
                role,
                id=user_id,
                time_zone=self.text(item.get("time_zone"), _join(field, "time_zone"), default="Etc/UTC"),
                job_title=self.text(item.get("job_title"), _join(field, "job_title"), default=""),
            )
        except ValueError as error:
            raise self.fail(_join(field, "id"), str(error)) from error

    def team(self, item: Any, field: str) -> None:
        item = self.mapping(item, field, {"id", "name", "description", "members"}, ("name",))
        name = self.text(item["name"], _join(field, "name"))
        if self.org.pagerduty.team_by_name(name) is not None:
            raise self.fail(_join(field, "name"), f"a team named {name!r} is already declared")
        description = self.text(item.get("description"), _join(field, "description"), default="")
        team_id = self.pd_id(item.get("id"), _join(field, "id"))
        members: dict[str, str] = {}

        def member(entry: Any, member_field: str) -> None:
            entry = self.mapping(entry, member_field, {"email", "role"}, ("email", "role"))
            user_id = self.known_user(entry["email"], _join(member_field, "email"))
            if user_id in members:
                raise self.fail(_join(member_field, "email"), f"{entry['email']} is already a member")
            role_field = _join(member_field, "role")
            members[user_id] = self.choice(entry.get("role"), role_field, PAGERDUTY_TEAM_ROLES, "manager")

        self.each(item, field, "members", member)
        try:
            team = self.org.pagerduty.add_team(name, description, id=team_id)
        except ValueError as error:
            raise self.fail(_join(field, "id"), str(error)) from error
        for user_id, role in members.items():
            self.org.pagerduty.set_membership(team.id, user_id, role)

    def policy(self, item: Any, field: str) -> None:
        allowed = {"id", "name", "description", "num_loops", "teams", "targets"}
        item = self.mapping(item, field, allowed, ("name", "targets"))
        name = self.text(item["name"], _join(field, "name"))
        team_ids: list[str] = []
        targets: list[str] = []

        def team(value: Any, team_field: str) -> None:
            team_name = self.text(value, team_field)
            found = self.org.pagerduty.team_by_name(team_name)
            if found is None:
                raise self.fail(team_field, f"no team named {team_name!r} in pagerduty.teams")
            team_ids.append(found.id)

        def target(value: Any, target_field: str) -> None:
            targets.append(self.known_user(value, target_field))

        self.each(item, field, "teams", team)
        self.each(item, field, "targets", target)
        if not 1 <= len(targets) <= 10:
            raise self.fail(_join(field, "targets"), "an escalation rule needs 1 to 10 targets")
        if len(team_ids) > 1:
            raise self.fail(_join(field, "teams"), "PagerDuty allows at most one team per escalation policy")
        num_loops = item.get("num_loops", 0)
        if not isinstance(num_loops, int) or isinstance(num_loops, bool) or num_loops < 0:
            raise self.fail(_join(field, "num_loops"), f"expected a non-negative integer, got {num_loops!r}")
        try:
            self.org.pagerduty.add_escalation_policy(
                name,
                team_ids,
                targets,
                id=self.pd_id(item.get("id"), _join(field, "id")),
                description=self.text(item.get("description"), _join(field, "description"), default=""),
                num_loops=num_loops,
            )
        except ValueError as error:
            raise self.fail(_join(field, "id"), str(error)) from error

    # -- Cortex --------------------------------------------------------------------------------------
    def cortex_team(self, item: Any, field: str) -> None:
        allowed = {"id", "tag", "name", "description", "summary", "archived", "members", "slack_channels"}
        item = self.mapping(item, field, allowed, ("tag", "name"))
        tag = self.text(item["tag"], _join(field, "tag"))
        if not _SLUG.match(tag):
            raise self.fail(_join(field, "tag"), f"{tag!r} is not a tag (lowercase letters, digits, . _ -)")
        if self.org.cortex.find(tag) is not None:
            raise self.fail(_join(field, "tag"), f"a Cortex team tagged {tag!r} is already declared")
        archived = item.get("archived", False)
        if not isinstance(archived, bool):
            raise self.fail(_join(field, "archived"), f"expected true or false, got {archived!r}")
        members: list[CortexMember] = []
        emails: set[str] = set()

        def member(entry: Any, member_field: str) -> None:
            entry = self.mapping(
                entry, member_field, {"email", "name", "roles", "notifications_enabled"}, ("email",)
            )
            email = self.email(entry["email"], _join(member_field, "email"))
            if email.casefold() in emails:
                raise self.fail(_join(member_field, "email"), f"{email} is already a member")
            emails.add(email.casefold())
            roles: list[CortexRole] = []
            self.each(entry, member_field, "roles", lambda r, f: roles.append(self.cortex_role(r, f)))
            notify = entry.get("notifications_enabled", True)
            if not isinstance(notify, bool):
                raise self.fail(
                    _join(member_field, "notifications_enabled"), f"expected true or false, got {notify!r}"
                )
            name = self.text(entry.get("name"), _join(member_field, "name"), default=email.split("@")[0])
            members.append(CortexMember(name, email, roles, notify))

        self.each(item, field, "members", member)
        channels: list[str] = []
        self.each(
            item, field, "slack_channels", lambda c, f: channels.append(self.text(c, f).removeprefix("#"))
        )
        team_id = item.get("id")
        if team_id is not None:
            team_id = self.text(team_id, _join(field, "id"))
            if self.org.cortex.find(team_id) is not None:
                raise self.fail(_join(field, "id"), f"id {team_id!r} is already used")
        self.org.cortex.add_team(
            tag,
            self.text(item["name"], _join(field, "name")),
            description=self.text(item.get("description"), _join(field, "description"), default=""),
            summary=self.text(item.get("summary"), _join(field, "summary"), default=""),
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
        tag = self.text(value["tag"], _join(field, "tag"))
        name = self.text(value.get("name"), _join(field, "name"), default=role_display_name(tag))
        return CortexRole(tag, name)

    # -- Slack ---------------------------------------------------------------------------------------
    def channel(self, item: Any, field: str) -> None:
        if isinstance(item, str):
            name, channel_id = self.text(item, field), None
        else:
            item = self.mapping(item, field, {"name", "id"}, ("name",))
            name = self.text(item["name"], _join(field, "name"))
            channel_id = item.get("id")
            if channel_id is not None:
                channel_id = self.text(channel_id, _join(field, "id"))
                if not re.fullmatch(r"[CG][0-9A-Z]{6,}", channel_id):
                    raise self.fail(_join(field, "id"), f"{channel_id!r} is not a Slack channel id (C...)")
        if self.org.slack.resolve(name) is not None:
            raise self.fail(field, f"channel {name!r} is already declared")
        self.org.slack.add_channel(name, id=channel_id)


def role_display_name(tag: str) -> str:
    """`oncall-manager` -> `Oncall Manager`."""
    return " ".join(word.capitalize() for word in re.split(r"[-_.\s]+", tag) if word)


def _or_empty(value: Any) -> Any:
    return {} if value is None else value


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number"}.get(
        type(value), type(value).__name__
    )
