"""The PagerDuty account the sandbox serves: users, teams, memberships and escalation policies.

Plain data and in-memory indexes, kept sorted by name so that a page is a slice. Reads and writes happen
under the lock the whole sandbox org shares (`SandboxOrg.lock`).

Every change leaves audit records (`PagerDutyOrg.audit`, see audit.py) once the sandbox serves it. A
change made through these methods is a person's change in PagerDuty's web UI unless the caller passes
the `origin` of an API request.
"""

from __future__ import annotations

import bisect
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nthlayer_pipelines.sandbox.pagerduty.audit import AuditOrigin, AuditRef, AuditTrail

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

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ID_SPACE = 36**6
# Coprime with 36**6 (odd, not a multiple of 3), so counter -> id is a bijection: ids never repeat.
_ID_STRIDE = 1_234_567_891


# A PagerDuty account's subdomain, the `acme` of https://acme.pagerduty.com: a DNS label.
_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def is_subdomain(value: str) -> bool:
    return bool(_SUBDOMAIN.match(value))


def new_subdomain() -> str:
    """A subdomain for an account created now: `sandbox-` and a token of this instance.

    Why random and not fixed: a real account never changes its subdomain, and nthlayer binds its stored
    snapshot to it. An org built afresh (from a seed or a generator) is a new account, even with the same
    users, teams and ids (ids are deterministic for a seed) on the same URL; only a fresh subdomain lets a
    client tell it from the account an earlier start served, whose snapshot it may still hold. A seed
    that wants a fixed identity pins `pagerduty.subdomain`."""
    return f"sandbox-{secrets.token_hex(4)}"


def is_pagerduty_id(value: str) -> bool:
    return len(value) == 7 and value[0] == "P" and all(c in _ID_ALPHABET for c in value[1:])


class IdAllocator:
    """PagerDuty-style ids (P + 6 of [0-9A-Z]), deterministic for a seed and never handed out twice."""

    def __init__(self, seed: int = 0) -> None:
        self._offset = (seed * 2_654_435_761 + 0x5EED) % _ID_SPACE
        self._counter = 0
        self._used: set[str] = set()

    def claim(self, value: str) -> None:
        """Reserve an id given by a seed file, so no generated id ever collides with it."""
        if value in self._used:
            raise ValueError(f"id {value} is already in use")
        self._used.add(value)

    def next(self) -> str:
        while True:
            number = (self._counter * _ID_STRIDE + self._offset) % _ID_SPACE
            self._counter += 1
            chars = []
            for _ in range(6):
                number, digit = divmod(number, 36)
                chars.append(_ID_ALPHABET[digit])
            value = "P" + "".join(reversed(chars))
            if value not in self._used:
                self._used.add(value)
                return value


def _name_key(name: str, object_id: str) -> tuple[str, str]:
    return (name.casefold(), object_id)


def _check_user_role(role: str) -> None:
    if role not in PAGERDUTY_USER_ROLES:
        raise ValueError(f"user role {role!r} is not one of {', '.join(PAGERDUTY_USER_ROLES)}")


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


@dataclass(slots=True)
class EscalationRule:
    id: str
    target_user_ids: list[str]
    escalation_delay_in_minutes: int = 30


@dataclass(slots=True)
class EscalationPolicy:
    id: str
    name: str
    team_ids: list[str]
    rules: list[EscalationRule]
    description: str = ""
    num_loops: int = 0

    @property
    def sort_key(self) -> tuple[str, str]:
        return _name_key(self.name, self.id)

    @property
    def target_user_ids(self) -> set[str]:
        return {user_id for rule in self.rules for user_id in rule.target_user_ids}


class PagerDutyOrg:
    """Users, teams, memberships and escalation policies, with the indexes the API needs."""

    def __init__(self, ids: IdAllocator, lock: threading.RLock, subdomain: str | None = None) -> None:
        subdomain = new_subdomain() if subdomain is None else subdomain
        if not is_subdomain(subdomain):
            raise ValueError(
                f"subdomain {subdomain!r} is not a DNS label (lowercase letters, digits and inner hyphens)"
            )
        self._ids = ids
        self.lock = lock
        self.subdomain = subdomain  # the account's: every object's html_url names it
        self.audit = AuditTrail(lock)
        self.users: dict[str, PagerDutyUser] = {}
        self.teams: dict[str, PagerDutyTeam] = {}
        self.escalation_policies: dict[str, EscalationPolicy] = {}
        # team id -> {user id: team role}, in the order members joined.
        self.memberships: dict[str, dict[str, str]] = {}
        self._user_teams: dict[str, dict[str, None]] = {}
        self._users_by_email: dict[str, PagerDutyUser] = {}
        self._teams_by_name: dict[str, PagerDutyTeam] = {}
        self._policies_by_team: dict[str, list[str]] = {}
        self._policies_by_user: dict[str, set[str]] = {}
        # Lists kept sorted by name, as PagerDuty lists them, so a page is a slice.
        self.users_by_name: list[PagerDutyUser] = []
        self.teams_by_name: list[PagerDutyTeam] = []
        self.policies_by_name: list[EscalationPolicy] = []

    @property
    def html_base(self) -> str:
        """Where the account's web UI lives: the base of every object's `html_url`."""
        return f"https://{self.subdomain}.pagerduty.com"

    # -- users ---------------------------------------------------------------------------------------
    def add_user(
        self,
        name: str,
        email: str,
        role: str = "user",
        *,
        id: str | None = None,
        time_zone: str = "Etc/UTC",
        job_title: str = "",
        origin: AuditOrigin | None = None,
    ) -> PagerDutyUser:
        _check_user_role(role)
        with self.lock:
            if email.casefold() in self._users_by_email:
                raise ValueError(f"a user with email {email} already exists")
            user_id = self._take_id(id)
            user = PagerDutyUser(user_id, name, email, role, time_zone, job_title)
            self.users[user_id] = user
            self._users_by_email[email.casefold()] = user
            self._user_teams[user_id] = {}
            bisect.insort(self.users_by_name, user, key=lambda u: u.sort_key)
            self.audit.record_create(origin, _user_ref(user), {"name": name, "email": email, "role": role})
            return user

    def update_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        email: str | None = None,
        role: str | None = None,
        origin: AuditOrigin | None = None,
    ) -> PagerDutyUser:
        """Rename the user, change their email or account role."""
        if role is not None:
            _check_user_role(role)
        with self.lock:
            user = self._require_user(user_id)
            changes: dict[str, tuple[str, str]] = {}
            if email is not None and email.casefold() != user.email.casefold():
                if email.casefold() in self._users_by_email:
                    raise ValueError(f"a user with email {email} already exists")
                del self._users_by_email[user.email.casefold()]
                self._users_by_email[email.casefold()] = user
            if email is not None:
                changes["email"] = (user.email, email)
                user.email = email
            if role is not None:
                changes["role"] = (user.role, role)
                user.role = role
            if name is not None:
                changes["name"] = (user.name, name)
                self.users_by_name.remove(user)
                user.name = name
                bisect.insort(self.users_by_name, user, key=lambda u: u.sort_key)
            self.audit.record_update(origin, _user_ref(user), changes)
            return user

    def remove_user(self, user_id: str, *, origin: AuditOrigin | None = None) -> None:
        """Delete the user, which takes them off every team. Refused while an escalation policy targets
        them, as PagerDuty refuses it."""
        with self.lock:
            user = self._require_user(user_id)
            targeting = self._policies_by_user.get(user_id, ())
            policies = sorted(self.escalation_policies[policy_id].name for policy_id in targeting)
            if policies:
                raise ValueError(f"user {user_id} is a target of escalation policies: {', '.join(policies)}")
            for team_id in self._user_teams.pop(user_id, {}):
                self.memberships[team_id].pop(user_id, None)
            del self.users[user_id]
            del self._users_by_email[user.email.casefold()]
            self.users_by_name.remove(user)
            self.audit.record_delete(origin, _user_ref(user), {"name": user.name, "email": user.email})

    def user_by_email(self, email: str) -> PagerDutyUser | None:
        return self._users_by_email.get(email.casefold())

    def teams_of(self, user_id: str) -> list[str]:
        return list(self._user_teams.get(user_id, ()))

    # -- teams ---------------------------------------------------------------------------------------
    def add_team(
        self, name: str, description: str = "", *, id: str | None = None, origin: AuditOrigin | None = None
    ) -> PagerDutyTeam:
        with self.lock:
            if name.casefold() in self._teams_by_name:
                raise ValueError(f"a team named {name!r} already exists")
            team_id = self._take_id(id)
            team = PagerDutyTeam(team_id, name, description)
            self.teams[team_id] = team
            self._teams_by_name[name.casefold()] = team
            self.memberships[team_id] = {}
            self._policies_by_team[team_id] = []
            bisect.insort(self.teams_by_name, team, key=lambda t: t.sort_key)
            fields = {"name": name, "description": description, "default_role": team.default_role}
            self.audit.record_create(origin, _team_ref(team), fields)
            return team

    def update_team(
        self,
        team_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        origin: AuditOrigin | None = None,
    ) -> PagerDutyTeam:
        """Rename the team or change its description."""
        with self.lock:
            team = self._require_team(team_id)
            changes: dict[str, tuple[str, str]] = {}
            if name is not None:
                holder = self._teams_by_name.get(name.casefold())
                if holder is not None and holder.id != team_id:
                    raise ValueError(f"a team named {name!r} already exists")
                changes["name"] = (team.name, name)
                del self._teams_by_name[team.name.casefold()]
                self.teams_by_name.remove(team)
                team.name = name
                self._teams_by_name[name.casefold()] = team
                bisect.insort(self.teams_by_name, team, key=lambda t: t.sort_key)
            if description is not None:
                changes["description"] = (team.description, description)
                team.description = description
            self.audit.record_update(origin, _team_ref(team), changes)
            return team

    def remove_team(self, team_id: str, *, origin: AuditOrigin | None = None) -> None:
        """Delete the team: its memberships go, and its escalation policies no longer name it."""
        with self.lock:
            team = self._require_team(team_id)
            for user_id in self.memberships.pop(team_id):
                self._user_teams[user_id].pop(team_id, None)
            for policy_id in self._policies_by_team.pop(team_id):
                self.escalation_policies[policy_id].team_ids.remove(team_id)
            del self.teams[team_id]
            del self._teams_by_name[team.name.casefold()]
            self.teams_by_name.remove(team)
            fields = {"name": team.name, "description": team.description}
            self.audit.record_delete(origin, _team_ref(team), fields)

    def team_by_name(self, name: str) -> PagerDutyTeam | None:
        return self._teams_by_name.get(name.casefold())

    def set_membership(
        self, team_id: str, user_id: str, role: str, *, origin: AuditOrigin | None = None
    ) -> None:
        """Add the user to the team with this role, or change their role."""
        if role not in PAGERDUTY_TEAM_ROLES:
            raise ValueError(f"team role {role!r} is not one of {', '.join(PAGERDUTY_TEAM_ROLES)}")
        with self.lock:
            self._require(team_id, user_id)
            before = self.memberships[team_id].get(user_id)
            self.memberships[team_id][user_id] = role
            self._user_teams[user_id][team_id] = None
            team, user = _team_ref(self.teams[team_id]), _user_ref(self.users[user_id])
            if before is None:
                self.audit.record_member_added(origin, team, user, role)
            elif before != role:
                self.audit.record_member_role_changed(origin, team, user, before, role)

    def remove_membership(self, team_id: str, user_id: str, *, origin: AuditOrigin | None = None) -> bool:
        """Remove without PagerDuty's escalation-policy guard (for setting up drift); True if removed."""
        with self.lock:
            self._require(team_id, user_id)
            removed = self.memberships[team_id].pop(user_id, None) is not None
            self._user_teams[user_id].pop(team_id, None)
            if removed:
                team, user = _team_ref(self.teams[team_id]), _user_ref(self.users[user_id])
                self.audit.record_member_removed(origin, team, user)
            return removed

    def blocking_policies(self, team_id: str, user_id: str) -> list[EscalationPolicy]:
        """The team's escalation policies that target the user: PagerDuty refuses the removal then."""
        policy_ids = self._policies_by_user.get(user_id, set())
        return [
            self.escalation_policies[policy_id]
            for policy_id in self._policies_by_team.get(team_id, ())
            if policy_id in policy_ids
        ]

    # -- escalation policies -------------------------------------------------------------------------
    def add_escalation_policy(
        self,
        name: str,
        team_ids: Iterable[str],
        target_user_ids: Iterable[str],
        *,
        id: str | None = None,
        description: str = "",
        num_loops: int = 0,
        origin: AuditOrigin | None = None,
    ) -> EscalationPolicy:
        """A policy with one rule targeting these users."""
        team_ids = list(team_ids)
        targets = list(target_user_ids)
        with self.lock:
            for team_id in team_ids:
                if team_id not in self.teams:
                    raise KeyError(f"no team with id {team_id}")
            for user_id in targets:
                if user_id not in self.users:
                    raise KeyError(f"no user with id {user_id}")
            policy_id = self._take_id(id)
            rule = EscalationRule(self._ids.next(), targets)
            policy = EscalationPolicy(policy_id, name, team_ids, [rule], description, num_loops)
            self.escalation_policies[policy_id] = policy
            for team_id in team_ids:
                self._policies_by_team[team_id].append(policy_id)
            for user_id in targets:
                self._policies_by_user.setdefault(user_id, set()).add(policy_id)
            bisect.insort(self.policies_by_name, policy, key=lambda p: p.sort_key)
            self.audit.record_create(origin, AuditRef.escalation_policy(policy_id, name), {"name": name})
            return policy

    def policies_of_team(self, team_id: str) -> list[str]:
        return list(self._policies_by_team.get(team_id, ()))

    def policies_targeting(self, user_id: str) -> set[str]:
        return set(self._policies_by_user.get(user_id, ()))

    # -- helpers -------------------------------------------------------------------------------------
    def _take_id(self, requested: str | None) -> str:
        if requested is None:
            return self._ids.next()
        if not is_pagerduty_id(requested):
            raise ValueError(f"id {requested!r} is not a PagerDuty id (P and 6 of 0-9, A-Z)")
        self._ids.claim(requested)
        return requested

    def _require(self, team_id: str, user_id: str) -> None:
        self._require_team(team_id)
        self._require_user(user_id)

    def _require_team(self, team_id: str) -> PagerDutyTeam:
        team = self.teams.get(team_id)
        if team is None:
            raise KeyError(f"no team with id {team_id}")
        return team

    def _require_user(self, user_id: str) -> PagerDutyUser:
        user = self.users.get(user_id)
        if user is None:
            raise KeyError(f"no user with id {user_id}")
        return user

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "users": [
                    {"id": u.id, "name": u.name, "email": u.email, "role": u.role} for u in self.users_by_name
                ],
                "teams": [
                    {"id": t.id, "name": t.name, "description": t.description} for t in self.teams_by_name
                ],
                "memberships": [
                    {"team_id": team_id, "user_id": user_id, "role": role}
                    for team_id, members in self.memberships.items()
                    for user_id, role in members.items()
                ],
                "escalation_policies": [
                    {
                        "id": p.id,
                        "name": p.name,
                        "team_ids": list(p.team_ids),
                        "target_user_ids": [u for rule in p.rules for u in rule.target_user_ids],
                    }
                    for p in self.policies_by_name
                ],
            }


def _team_ref(team: PagerDutyTeam) -> AuditRef:
    return AuditRef.team(team.id, team.name)


def _user_ref(user: PagerDutyUser) -> AuditRef:
    return AuditRef.user(user.id, user.name)
