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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from nthlayer_pipelines.sandbox.pagerduty.audit import (
    AuditOrigin,
    AuditRef,
    AuditTrail,
    audit_value,
    format_time,
)
from nthlayer_pipelines.sandbox.pagerduty.models import (
    DEFAULT_LAYER_START,
    DEFAULT_TURN_SECONDS,
    PAGERDUTY_TEAM_ROLES,
    PAGERDUTY_USER_ROLES,
    TARGET_TYPES,
    USER_TARGET,
    EscalationPolicy,
    EscalationRule,
    EscalationTarget,
    PagerDutyTeam,
    PagerDutyUser,
    RuleSpec,
    Schedule,
    ScheduleLayer,
    Service,
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


PREHISTORY = "2024-01-01T00:00:00.000Z"
# Service fields a caller may set besides its name and policy (`created_at` and the id are the org's).
SERVICE_SETTINGS = frozenset(f.name for f in fields(Service)) - {
    "id",
    "name",
    "escalation_policy_id",
    "created_at",
}


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """A schedule layer as a caller asks for it: users in rotation order."""

    user_ids: tuple[str, ...]
    name: str = ""
    rotation_turn_length_seconds: int = DEFAULT_TURN_SECONDS
    start: str = DEFAULT_LAYER_START


def _check_user_role(role: str) -> None:
    if role not in PAGERDUTY_USER_ROLES:
        raise ValueError(f"user role {role!r} is not one of {', '.join(PAGERDUTY_USER_ROLES)}")


class PagerDutyOrg:
    """Users, teams, memberships, schedules, escalation policies and services, with the indexes the API
    needs."""

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
        self.schedules: dict[str, Schedule] = {}
        self.services: dict[str, Service] = {}
        # team id -> {user id: team role}, in the order members joined.
        self.memberships: dict[str, dict[str, str]] = {}
        self._user_teams: dict[str, dict[str, None]] = {}
        self._users_by_email: dict[str, PagerDutyUser] = {}
        self._teams_by_name: dict[str, PagerDutyTeam] = {}
        self._policies_by_team: dict[str, list[str]] = {}
        self._policies_by_user: dict[str, set[str]] = {}  # users targeted directly
        self._policies_by_name: dict[str, EscalationPolicy] = {}
        self._policies_by_schedule: dict[str, set[str]] = {}
        self._services_by_policy: dict[str, dict[str, None]] = {}  # in the order services joined
        self._schedules_by_name: dict[str, Schedule] = {}
        self._services_by_name: dict[str, Service] = {}
        # Lists kept sorted by name, as PagerDuty lists them, so a page is a slice.
        self.users_by_name: list[PagerDutyUser] = []
        self.teams_by_name: list[PagerDutyTeam] = []
        self.policies_by_name: list[EscalationPolicy] = []
        self.schedules_by_name: list[Schedule] = []
        self.services_by_name: list[Service] = []

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
                _rename(team, name, self._teams_by_name, self.teams_by_name)
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
            for schedule in self.schedules.values():
                if team_id in schedule.team_ids:
                    schedule.team_ids.remove(team_id)
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

    # -- schedules -----------------------------------------------------------------------------------
    def add_schedule(
        self,
        name: str,
        time_zone: str,
        layers: Iterable[LayerSpec],
        *,
        id: str | None = None,
        description: str = "",
        team_ids: Iterable[str] = (),
        origin: AuditOrigin | None = None,
    ) -> Schedule:
        """A schedule whose layers rotate through users, in the order given."""
        team_ids, layers = list(team_ids), list(layers)
        with self.lock:
            for team_id in team_ids:
                self._require_team(team_id)
            for layer in layers:
                for user_id in layer.user_ids:
                    self._require_user(user_id)
            if name.casefold() in self._schedules_by_name:
                raise ValueError("Name has already been taken")
            schedule_id = self._take_id(id)
            built = [
                ScheduleLayer(
                    self._ids.next(),
                    layer.name or f"Layer {index + 1}",
                    list(layer.user_ids),
                    layer.rotation_turn_length_seconds,
                    layer.start,
                    layer.start,
                )
                for index, layer in enumerate(layers)
            ]
            schedule = Schedule(schedule_id, name, time_zone, built, description, team_ids)
            self.schedules[schedule_id] = schedule
            self._schedules_by_name[name.casefold()] = schedule
            bisect.insort(self.schedules_by_name, schedule, key=lambda s: s.sort_key)
            fields = {"name": name, "time_zone": time_zone}
            self.audit.record_create(origin, AuditRef.schedule(schedule_id, name), fields)
            return schedule

    def schedule_by_name(self, name: str) -> Schedule | None:
        return self._schedules_by_name.get(name.casefold())

    def policies_using_schedule(self, schedule_id: str) -> list[EscalationPolicy]:
        policies = (self.escalation_policies[p] for p in self._policies_by_schedule.get(schedule_id, ()))
        return sorted(policies, key=lambda p: p.sort_key)

    # -- escalation policies -------------------------------------------------------------------------
    def add_escalation_policy(
        self,
        name: str,
        team_ids: Iterable[str],
        target_user_ids: Iterable[str] = (),
        *,
        rules: Sequence[RuleSpec] = (),
        id: str | None = None,
        description: str = "",
        num_loops: int = 0,
        on_call_handoff_notifications: str = "if_has_services",
        origin: AuditOrigin | None = None,
    ) -> EscalationPolicy:
        """A policy with these rules, or (without rules) one rule targeting these users.

        Raises ValueError with PagerDuty's reason for a policy it would refuse."""
        if not rules:
            rules = [RuleSpec(tuple(EscalationTarget(USER_TARGET, u) for u in target_user_ids))]
        team_ids = list(team_ids)
        with self.lock:
            self._check_policy(None, name, team_ids, rules)
            policy_id = self._take_id(id)
            policy = EscalationPolicy(
                policy_id,
                name,
                team_ids,
                self._build_rules(rules, []),
                description,
                num_loops,
                on_call_handoff_notifications,
            )
            self.escalation_policies[policy_id] = policy
            self._policies_by_name[name.casefold()] = policy
            self._index_policy(policy)
            bisect.insort(self.policies_by_name, policy, key=lambda p: p.sort_key)
            self.audit.record_create(origin, _policy_ref(policy), _policy_fields(policy))
            return policy

    def update_escalation_policy(
        self,
        policy_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        num_loops: int | None = None,
        on_call_handoff_notifications: str | None = None,
        team_ids: Iterable[str] | None = None,
        rules: Sequence[RuleSpec] | None = None,
        origin: AuditOrigin | None = None,
    ) -> EscalationPolicy:
        """Change what is given; a rule keeps its id when the caller names it. Raises ValueError with
        PagerDuty's reason for a change it would refuse, KeyError for an unknown policy."""
        with self.lock:
            policy = self._require_policy(policy_id)
            if rules is not None and not rules:
                raise ValueError("Cannot Delete Only Rule For Escalation Policy")
            new_teams = policy.team_ids if team_ids is None else list(team_ids)
            self._check_policy(policy, name or policy.name, new_teams, rules or ())
            before = _policy_fields(policy)
            self._unindex_policy(policy)
            if name is not None and name != policy.name:
                _rename(policy, name, self._policies_by_name, self.policies_by_name)
            if description is not None:
                policy.description = description
            if num_loops is not None:
                policy.num_loops = num_loops
            if on_call_handoff_notifications is not None:
                policy.on_call_handoff_notifications = on_call_handoff_notifications
            policy.team_ids = new_teams
            if rules is not None:
                policy.rules = self._build_rules(rules, policy.rules)
            self._index_policy(policy)
            after = _policy_fields(policy)
            changes = {key: (before[key], after[key]) for key in after}
            self.audit.record_update(origin, _policy_ref(policy), changes)
            return policy

    def policy_by_name(self, name: str) -> EscalationPolicy | None:
        return self._policies_by_name.get(name.casefold())

    def policies_of_team(self, team_id: str) -> list[str]:
        return list(self._policies_by_team.get(team_id, ()))

    def policies_targeting(self, user_id: str) -> set[str]:
        return set(self._policies_by_user.get(user_id, ()))

    def _check_policy(
        self, policy: EscalationPolicy | None, name: str, team_ids: list[str], rules: Sequence[RuleSpec]
    ) -> None:
        holder = self._policies_by_name.get(name.casefold())
        if holder is not None and holder is not policy:
            raise ValueError("Escalation Policy has already been taken")
        if len(team_ids) > 1:
            raise ValueError("Only one team may be associated with an escalation policy")
        for team_id in team_ids:
            if team_id not in self.teams:
                raise ValueError(f"Team {team_id} not found")
        for rule in rules:
            if not 1 <= len(rule.targets) <= 10:
                raise ValueError("An escalation rule must have between 1 and 10 targets")
            for target in rule.targets:
                known = self.users if target.type == USER_TARGET else self.schedules
                if target.type not in TARGET_TYPES or target.id not in known:
                    raise ValueError(f"Escalation rule target {target.id} ({target.type}) not found")

    def _build_rules(self, specs: Sequence[RuleSpec], current: list[EscalationRule]) -> list[EscalationRule]:
        kept = {rule.id for rule in current}
        return [
            EscalationRule(
                spec.id if spec.id in kept else self._ids.next(),
                sorted(dict.fromkeys(spec.targets), key=lambda t: (t.id, t.type)),
                spec.escalation_delay_in_minutes,
            )
            for spec in specs
        ]

    def _index_policy(self, policy: EscalationPolicy) -> None:
        for team_id in policy.team_ids:
            self._policies_by_team[team_id].append(policy.id)
        for user_id in policy.target_user_ids:
            self._policies_by_user.setdefault(user_id, set()).add(policy.id)
        for schedule_id in policy.target_schedule_ids:
            self._policies_by_schedule.setdefault(schedule_id, set()).add(policy.id)

    def _unindex_policy(self, policy: EscalationPolicy) -> None:
        for team_id in policy.team_ids:
            self._policies_by_team[team_id].remove(policy.id)
        for user_id in policy.target_user_ids:
            self._policies_by_user[user_id].discard(policy.id)
        for schedule_id in policy.target_schedule_ids:
            self._policies_by_schedule[schedule_id].discard(policy.id)

    # -- services ------------------------------------------------------------------------------------
    def add_service(
        self,
        name: str,
        escalation_policy_id: str,
        *,
        id: str | None = None,
        origin: AuditOrigin | None = None,
        **settings: Any,
    ) -> Service:
        """A service on this policy; `settings` are Service's other fields (description, timeouts,
        urgency rule, status, tier...). Raises ValueError with PagerDuty's reason for a refusal."""
        unknown = set(settings) - SERVICE_SETTINGS
        if unknown:
            raise TypeError(f"not service settings: {', '.join(sorted(unknown))}")
        with self.lock:
            if name.casefold() in self._services_by_name:
                raise ValueError("Name has already been taken")
            if escalation_policy_id not in self.escalation_policies:
                raise ValueError(f"Escalation Policy {escalation_policy_id} not found")
            service_id = self._take_id(id)
            # Objects of the org's pre-history (a seed, a generator) share one creation time, so the same
            # seed gives the same org; a service created while the sandbox serves is created now.
            created_at = format_time(self.audit.clock()) if self.audit.recording else PREHISTORY
            service = Service(service_id, name, escalation_policy_id, created_at, **settings)
            self.services[service_id] = service
            self._services_by_name[name.casefold()] = service
            self._services_by_policy.setdefault(escalation_policy_id, {})[service_id] = None
            bisect.insort(self.services_by_name, service, key=lambda s: s.sort_key)
            self.audit.record_create(origin, _service_ref(service), _service_fields(service))
            return service

    def update_service(
        self, service_id: str, *, origin: AuditOrigin | None = None, **changes: Any
    ) -> Service:
        """Change these fields of the service (name, escalation_policy_id and SERVICE_SETTINGS)."""
        unknown = set(changes) - SERVICE_SETTINGS - {"name", "escalation_policy_id"}
        if unknown:
            raise TypeError(f"not service fields: {', '.join(sorted(unknown))}")
        with self.lock:
            service = self.services.get(service_id)
            if service is None:
                raise KeyError(f"no service with id {service_id}")
            name = changes.get("name", service.name)
            holder = self._services_by_name.get(name.casefold())
            if holder is not None and holder is not service:
                raise ValueError("Name has already been taken")
            policy_id = changes.get("escalation_policy_id", service.escalation_policy_id)
            if policy_id not in self.escalation_policies:
                raise ValueError(f"Escalation Policy {policy_id} not found")
            before = _service_fields(service)
            if name != service.name:
                _rename(service, name, self._services_by_name, self.services_by_name)
            self._services_by_policy[service.escalation_policy_id].pop(service.id)
            for key, value in changes.items():
                setattr(service, key, value)
            self._services_by_policy.setdefault(service.escalation_policy_id, {})[service.id] = None
            after = _service_fields(service)
            self.audit.record_update(origin, _service_ref(service), {k: (before[k], after[k]) for k in after})
            return service

    def service_by_name(self, name: str) -> Service | None:
        return self._services_by_name.get(name.casefold())

    def services_on_policy(self, policy_id: str) -> list[Service]:
        services = (self.services[s] for s in self._services_by_policy.get(policy_id, ()))
        return sorted(services, key=lambda s: s.sort_key)

    def service_team_ids(self, service: Service) -> list[str]:
        """A service's teams are its escalation policy's: PagerDuty derives them."""
        return list(self.escalation_policies[service.escalation_policy_id].team_ids)

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

    def _require_policy(self, policy_id: str) -> EscalationPolicy:
        policy = self.escalation_policies.get(policy_id)
        if policy is None:
            raise KeyError(f"no escalation policy with id {policy_id}")
        return policy

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
                        "rules": [
                            {
                                "escalation_delay_in_minutes": rule.escalation_delay_in_minutes,
                                "targets": [{"type": t.type, "id": t.id} for t in rule.targets],
                            }
                            for rule in p.rules
                        ],
                        "num_loops": p.num_loops,
                    }
                    for p in self.policies_by_name
                ],
                "schedules": [
                    {
                        "id": s.id,
                        "name": s.name,
                        "time_zone": s.time_zone,
                        "team_ids": list(s.team_ids),
                        "layers": [
                            {"name": layer.name, "user_ids": list(layer.user_ids)} for layer in s.layers
                        ],
                    }
                    for s in self.schedules_by_name
                ],
                "services": [asdict(s) for s in self.services_by_name],
            }


def _rename(item: Any, name: str, by_name: dict[str, Any], ordered: list[Any]) -> None:
    """Rename a team, policy or service, keeping its name index and its place in the sorted list."""
    del by_name[item.name.casefold()]
    ordered.remove(item)
    item.name = name
    by_name[name.casefold()] = item
    bisect.insort(ordered, item, key=lambda o: o.sort_key)


def _team_ref(team: PagerDutyTeam) -> AuditRef:
    return AuditRef.team(team.id, team.name)


def _user_ref(user: PagerDutyUser) -> AuditRef:
    return AuditRef.user(user.id, user.name)


def _policy_ref(policy: EscalationPolicy) -> AuditRef:
    return AuditRef.escalation_policy(policy.id, policy.name)


def _service_ref(service: Service) -> AuditRef:
    return AuditRef.service(service.id, service.name)


def _policy_fields(policy: EscalationPolicy) -> dict[str, str | None]:
    """What an audit record shows of a policy: its settings, rules and targets as PagerDuty names them."""
    rules = [
        {
            "escalation_delay_in_minutes": rule.escalation_delay_in_minutes,
            "targets": [{"id": t.id, "type": t.type} for t in rule.targets],
        }
        for rule in policy.rules
    ]
    return {
        "name": policy.name,
        "description": policy.description,
        "num_loops": audit_value(policy.num_loops),
        "on_call_handoff_notifications": policy.on_call_handoff_notifications,
        "teams": audit_value(policy.team_ids),
        "escalation_rules": audit_value(rules),
    }


def _service_fields(service: Service) -> dict[str, str | None]:
    """What an audit record shows of a service (its tier is the sandbox's, not PagerDuty's: left out)."""
    return {
        "name": service.name,
        "description": service.description,
        "escalation_policy": service.escalation_policy_id,
        "acknowledgement_timeout": audit_value(service.acknowledgement_timeout),
        "auto_resolve_timeout": audit_value(service.auto_resolve_timeout),
        "incident_urgency_rule": audit_value(service.incident_urgency_rule),
        "support_hours": audit_value(service.support_hours),
        "scheduled_actions": audit_value(service.scheduled_actions),
        "alert_creation": service.alert_creation,
        "alert_grouping_parameters": audit_value(service.alert_grouping_parameters),
        "status": service.status,
    }
