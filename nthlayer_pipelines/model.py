"""The domain model every layer speaks: desired teams, services and standards, observed snapshots,
divergences, changes, plans.

Pure data, no I/O. Emails are the join key across providers and are always stored in one form
(`normalize_email`); team names are compared in one form (`team_name_key`).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from enum import StrEnum
from typing import Annotated, Any

import idna
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator


def normalize_email(value: str) -> str:
    """The email as it is joined across providers: trimmed, lowercased, its domain in IDNA's Unicode form,
    so `user@bücher.example` and `user@xn--bcher-kva.example` are one person.

    A domain that is not valid IDNA is only lowercased: refusing it is the sources' validation's job, which
    says where the address was written.
    """
    email = value.strip().lower()
    local, at, domain = email.rpartition("@")
    if not at or (domain.isascii() and "xn--" not in domain):
        return email  # an ASCII domain without punycode labels is already in its one form
    try:
        return f"{local}@{idna.decode(idna.encode(domain, uts46=True))}"
    except UnicodeError:  # idna.IDNAError is one
        return email


Email = Annotated[str, AfterValidator(normalize_email)]


def team_name_key(name: str) -> str:
    """A team name as names are compared: NFKC-normalised and case-folded, invisible format characters
    (zero-width spaces, soft hyphens) dropped, whitespace trimmed and collapsed. 'Payments', ' payments ',
    'Pay\u200bments' and 'Payments' in full-width letters read as one name, so they are one name here."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    visible = "".join(c for c in folded if unicodedata.category(c) != "Cf")
    return " ".join(visible.split())


class Role(StrEnum):
    """PagerDuty team roles, from least to most privileged."""

    OBSERVER = "observer"
    RESPONDER = "responder"
    MANAGER = "manager"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Member(Frozen):
    email: Email
    role: Role


class ScheduleRef(Frozen):
    """A PagerDuty schedule a team declares for its standards to target: referenced, never managed."""

    key: str  # the name standards use, e.g. "primary"
    ref: str  # a PagerDuty schedule's id or name, as written


class Team(Frozen):
    """A team as declared by a desired-state source."""

    name: str  # the key: a lowercase slug, unique across all sources after precedence
    display_name: str  # the team's name in PagerDuty; also how an unpinned team is matched
    members: tuple[Member, ...] = ()
    prune: bool = False
    pagerduty_team_id: str | None = None
    schedules: tuple[ScheduleRef, ...] = ()  # sorted by key; keys are unique
    source: str = "git"  # which source declared it: git | cortex
    origin: str = ""  # where in that source: a file path, a Cortex team tag

    def schedule(self, key: str) -> ScheduleRef | None:
        return next((s for s in self.schedules if s.key == key), None)


class Tier(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    STANDARD = "standard"
    LOW = "low"


class Urgency(StrEnum):
    """How a service's incidents page: PagerDuty's constant urgencies, or by the event's severity."""

    HIGH = "high"
    LOW = "low"
    SEVERITY_BASED = "severity_based"


class StandardTarget(Frozen):
    """Whom an escalation rule pages: exactly one of a team's declared schedule (by its key) or the team's
    members with a role, as users."""

    schedule: str | None = None  # a key of the team's declared schedules (e.g. "primary")
    team_role: Role | None = None  # the team's members with that role, as users (e.g. manager)

    @model_validator(mode="after")
    def _exactly_one(self) -> StandardTarget:
        if (self.schedule is None) == (self.team_role is None):
            raise ValueError("a target is either a schedule or a team role: exactly one of the two is set")
        return self


class StandardRule(Frozen):
    targets: tuple[StandardTarget, ...] = Field(min_length=1, max_length=10)
    escalate_after_minutes: int = Field(ge=1)


Minutes = Annotated[int, Field(ge=1)]


class ServiceStandard(Frozen):
    """What a service of the tier is set to; a timeout of None is off."""

    urgency: Urgency
    acknowledgement_timeout_minutes: Minutes | None
    auto_resolve_timeout_minutes: Minutes | None


class Standard(Frozen):
    """The escalation policy and service settings every service of one tier is held to."""

    tier: Tier
    loops: int = Field(default=0, ge=0, le=9)  # PagerDuty num_loops
    rules: tuple[StandardRule, ...] = Field(min_length=1)  # in order; the first is paged at once
    service: ServiceStandard
    origin: str = ""  # the file that declared it


class Service(Frozen):
    name: str
    team: str
    tier: Tier
    display_name: str  # the PagerDuty service's name: how an unpinned service is found
    pagerduty_service_id: str | None = None
    origin: str = ""


class DesiredState(Frozen):
    teams: tuple[Team, ...] = ()
    services: tuple[Service, ...] = ()
    standards: tuple[Standard, ...] = ()  # at most one per tier, in tier order
    sources: tuple[str, ...] = ()  # the sources that contributed, in precedence order

    def team(self, name: str) -> Team | None:
        return next((t for t in self.teams if t.name == name), None)

    def standard(self, tier: Tier) -> Standard | None:
        return next((s for s in self.standards if s.tier == tier), None)


class DivergenceKind(StrEnum):
    AMBIGUOUS_TEAM = "ambiguous_team"  # several PagerDuty teams carry an unpinned team's name
    PINNED_TEAM_NAME_MISMATCH = "pinned_team_name_mismatch"  # the pinned team has another name
    MISSING_TEAM = "missing_team"
    MISSING_MEMBER = "missing_member"
    ROLE_MISMATCH = "role_mismatch"
    EXTRA_MEMBER = "extra_member"
    UNRESOLVED_USER = "unresolved_user"
    UNMANAGED_TEAM = "unmanaged_team"


class ChangeAction(StrEnum):
    """What a change does to the object it names, whatever the kind."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class Risk(StrEnum):
    """How much a change can hurt, for the policy and the reader: a low one adds, a privileged one grants
    or changes who is paged, a destructive one takes something away."""

    LOW = "low"
    PRIVILEGED = "privileged"
    DESTRUCTIVE = "destructive"


TEAM_MEMBERSHIP = "team_membership"  # the resource kinds PagerDuty's changes belong to
SERVICE_STANDARD = "service_standard"


class ChangeKind(StrEnum):
    """In plan order: teams and escalation policies are created first, a policy's rules are set before a
    service is pointed at it, removals come last."""

    CREATE_TEAM = "create_team"
    CREATE_ESCALATION_POLICY = "create_escalation_policy"
    ADD_MEMBER = "add_member"
    SET_ROLE = "set_role"
    UPDATE_ESCALATION_POLICY = "update_escalation_policy"
    SET_SERVICE_POLICY = "set_service_policy"
    UPDATE_SERVICE = "update_service"
    REMOVE_MEMBER = "remove_member"

    @property
    def order(self) -> int:
        return list(ChangeKind).index(self)

    @property
    def action(self) -> ChangeAction:
        if self in (ChangeKind.CREATE_TEAM, ChangeKind.CREATE_ESCALATION_POLICY, ChangeKind.ADD_MEMBER):
            return ChangeAction.CREATE
        if self is ChangeKind.REMOVE_MEMBER:
            return ChangeAction.DELETE
        return ChangeAction.UPDATE

    @property
    def resource(self) -> str:
        """The resource kind (one folder of `assets/pagerduty/`) that plans, decides and writes it."""
        membership = (
            ChangeKind.CREATE_TEAM,
            ChangeKind.ADD_MEMBER,
            ChangeKind.SET_ROLE,
            ChangeKind.REMOVE_MEMBER,
        )
        return TEAM_MEMBERSHIP if self in membership else SERVICE_STANDARD

    @property
    def symbol(self) -> str:
        return {ChangeAction.CREATE: "+", ChangeAction.UPDATE: "~", ChangeAction.DELETE: "-"}[self.action]


class FieldChange(Frozen):
    """One attribute a change sets: what the provider held when the plan was made, and what it writes.
    Values are JSON (a number, a string, a list of rules), as the provider's API speaks them."""

    name: str
    before: JsonValue = None
    after: JsonValue = None


# Fields the envelope gained after membership changes were first recorded: a membership change leaves
# them at their defaults, and they are left out of its stored body (and so of an approval's digest).
_LATER_FIELDS = {"provider": "pagerduty", "target_id": None, "target_name": None, "fields": []}


class Change(Frozen):
    """One write a plan proposes: the envelope every kind's changes share. `id` is stable: the same drift
    seen twice is the same change, and a change that would write anything else has another id.

    `team` is the change's scope (what the blast radius and the audit group by); a membership change names
    the member (`email`, `user_id`, `role`), a change of another kind the object it writes (`target_id`,
    `target_name`) and the attributes it sets (`fields`)."""

    id: str
    kind: ChangeKind
    team: str  # desired team name (slug); for a removal from an unpinned team, still the slug
    team_name: str  # the PagerDuty team's name; for a team the plan creates, the name it is created with
    team_id: str | None = None  # None until the team exists
    email: str | None = None
    user_id: str | None = None
    role: Role | None = None
    from_role: Role | None = None
    provider: str = "pagerduty"
    target_id: str | None = None  # the service or escalation policy written to; None while it is created
    target_name: str | None = None
    fields: tuple[FieldChange, ...] = ()

    @property
    def action(self) -> ChangeAction:
        return self.kind.action

    @property
    def resource(self) -> str:
        return self.kind.resource

    @property
    def scope(self) -> str:
        return self.team

    @property
    def subject(self) -> str:
        """What the change is about, e.g. `payments/alice@example.com` or `payments/Payment API`."""
        if self.resource == TEAM_MEMBERSHIP:
            who = self.email or self.user_id
            return f"{self.team}/{who}" if who else self.team
        return f"{self.team}/{self.target_name or self.target_id}"

    @property
    def risk(self) -> Risk:
        if self.action is ChangeAction.DELETE:
            return Risk.DESTRUCTIVE
        if self.kind in (ChangeKind.CREATE_TEAM, ChangeKind.CREATE_ESCALATION_POLICY):
            return Risk.LOW
        if self.kind is ChangeKind.ADD_MEMBER and self.role is not Role.MANAGER:
            return Risk.LOW
        return Risk.PRIVILEGED  # a manager granted, a role changed, or who is paged changed

    def field(self, name: str) -> FieldChange | None:
        return next((f for f in self.fields if f.name == name), None)

    def body(self) -> dict[str, Any]:
        """The change as the ledger stores it and an approval's digest covers it: every field, except the
        envelope's later fields while they are at their defaults (so a membership change recorded before
        they existed reads back, and digests, as it was written)."""
        body = self.model_dump(mode="json")
        for name, default in _LATER_FIELDS.items():
            if body.get(name) == default:
                del body[name]
        return body

    @staticmethod
    def make_id(
        provider: str,
        kind: ChangeKind,
        *,
        team: str,
        team_id: str | None,
        team_name: str,
        email: str | None,
        user_id: str | None,
        role: Role | None,
    ) -> str:
        """A hash of everything the apply writes or writes to. The team's name counts only while the team
        has no id (its creation, and members of a team the plan creates): the apply then finds it by name.
        """
        by_name = team_name if team_id is None else ""
        fields = [provider, kind.value, team, team_id or "", by_name, email or "", user_id or ""]
        key = json.dumps([*fields, role.value if role else ""])  # JSON: no separator a value could hold
        return "chg-" + hashlib.sha256(key.encode()).hexdigest()[:12]

    @classmethod
    def planned(
        cls,
        provider: str,
        kind: ChangeKind,
        *,
        team: str,
        team_name: str,
        team_id: str | None = None,
        email: str | None = None,
        user_id: str | None = None,
        role: Role | None = None,
        from_role: Role | None = None,
    ) -> Change:
        """A membership change with its id made from its own fields."""
        change_id = cls.make_id(
            provider,
            kind,
            team=team,
            team_id=team_id,
            team_name=team_name,
            email=email,
            user_id=user_id,
            role=role,
        )
        return cls(
            id=change_id,
            kind=kind,
            team=team,
            team_name=team_name,
            team_id=team_id,
            email=email,
            user_id=user_id,
            role=role,
            from_role=from_role,
        )

    @classmethod
    def of_fields(
        cls,
        provider: str,
        kind: ChangeKind,
        *,
        team: str,
        team_name: str,
        team_id: str | None,
        target_id: str | None,
        target_name: str,
        fields: tuple[FieldChange, ...],
    ) -> Change:
        """A change that sets attributes of an object. Its id covers the object (by id, or by name while it
        has none) and every value written; the values it found (`before`) count in the plan's id instead."""
        written = {f.name: f.after for f in fields}
        by_name = target_name if target_id is None else ""
        key = json.dumps(
            [provider, kind.value, team, team_id or "", target_id or "", by_name, written], sort_keys=True
        )
        return cls(
            id="chg-" + hashlib.sha256(key.encode()).hexdigest()[:12],
            kind=kind,
            team=team,
            team_name=team_name,
            team_id=team_id,
            provider=provider,
            target_id=target_id,
            target_name=target_name,
            fields=fields,
        )

    @property
    def observed_basis(self) -> str:
        """What the change was computed from, for the plan instance's id: the role a membership change
        found, or the values an attribute change found."""
        if self.fields:
            found = {f.name: f.before for f in self.fields}
            return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:12]
        return self.from_role.value if self.from_role else ""


class FindingKind(StrEnum):
    UNRESOLVED_USER = "unresolved_user"
    UNMANAGED_TEAM = "unmanaged_team"
    MISSING_PINNED_TEAM = (
        "missing_pinned_team"  # a pinned team id that PagerDuty does not know: a person decides
    )
    AMBIGUOUS_TEAM = "ambiguous_team"  # several PagerDuty teams match the name: the team is not planned
    PINNED_TEAM_NAME_MISMATCH = "pinned_team_name_mismatch"  # its removals wait for a person
    POSSIBLE_EMAIL_RENAME = "possible_email_rename"  # a removal beside an unresolved addition: waits too
    # Services held to their tier's standard: nothing is planned for what these name.
    MISSING_SERVICE = "missing_service"  # a declared service PagerDuty does not have: never created here
    AMBIGUOUS_SERVICE = "ambiguous_service"  # several services match one definition, or one matches two
    PINNED_SERVICE_NAME_MISMATCH = "pinned_service_name_mismatch"  # planned by its pin, said aloud
    UNMANAGED_SERVICE = "unmanaged_service"  # a service of a declared team that no definition claims
    MISSING_SCHEDULE = "missing_schedule"  # a declared schedule PagerDuty does not have, or has twice
    STANDARD_UNMET = "standard_unmet"  # the standard cannot be met as declared (e.g. no managers)
    NO_STANDARD = "no_standard"  # a service's tier has no Standard: nothing is checked
    UNUSED_MANAGED_POLICY = "unused_managed_policy"  # a team's managed policy no service uses: kept

    @property
    def blocking(self) -> bool:
        """The finding's team gets no changes at all until a person settles it."""
        return self is FindingKind.AMBIGUOUS_TEAM


class Finding(Frozen):
    """Something a person should know that the plan will not change."""

    kind: FindingKind
    team: str | None = None
    email: str | None = None
    detail: str = ""
    subject: str | None = None  # what else it is about: a service, a policy, a schedule

    @property
    def blocking(self) -> bool:
        return self.kind.blocking


class Plan(Frozen):
    """The changes one refresh calls for. `id` names an instance of them: the same changes seen again
    after an instance was applied, rejected or superseded are a new instance (see `instance_id`), which
    approvals, the policy and the intent log treat afresh; `content_id` is what instances of the same
    drift share."""

    id: str
    changes: tuple[Change, ...] = ()
    findings: tuple[Finding, ...] = ()
    provider: str = "pagerduty"

    @staticmethod
    def make_id(changes: tuple[Change, ...]) -> str:
        """The content id: the changes and the observed state each was computed from (`observed_basis`)."""
        lines = (f"{c.id} {c.observed_basis}".rstrip() for c in changes)
        digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
        return "plan-" + digest

    @staticmethod
    def instance_id(content_id: str, generation: int) -> str:
        """The first instance of some changes is named by their content id; each later one by both."""
        if generation == 1:
            return content_id
        return "plan-" + hashlib.sha256(f"{content_id}#{generation}".encode()).hexdigest()[:12]

    @property
    def content_id(self) -> str:
        return Plan.make_id(self.changes)

    @property
    def has_drift(self) -> bool:
        return bool(self.changes)

    @property
    def blocking_findings(self) -> tuple[Finding, ...]:
        """Teams the plan leaves out because their identity is not settled."""
        return tuple(f for f in self.findings if f.blocking)

    def count(self, kind: ChangeKind) -> int:
        return sum(1 for c in self.changes if c.kind is kind)


class ValidationProblem(Frozen):
    """One reason a definitions file (or a source's payload) was refused."""

    file: str
    path: str = Field(description="where inside the file, e.g. spec.members[2].role")
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class DefinitionsError(Exception):
    """Raised with every problem found, never just the first."""

    def __init__(self, problems: list[ValidationProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SourceError(Exception):
    """A desired-state source failed, answered nothing, or stopped short: never an empty desired state."""


class ChangeStatus(StrEnum):
    """Where one change of an approved plan stands in the intent log."""

    PENDING = "pending"  # about to be attempted, or a run died while attempting it
    APPLIED = "applied"  # written by nthlayer
    SKIPPED = "skipped"  # already as desired when re-read: nothing to write
    STALE = "stale"  # moved under the plan: left alone for a new plan
    BLOCKED = "blocked"  # the provider refused for a reason a person must resolve
    SUPERSEDED = "superseded"  # the definitions no longer want it: written nowhere
    FAILED = "failed"  # an error; may be attempted again

    @property
    def terminal(self) -> bool:
        """Never attempted again for the same plan; pending and failed changes are."""
        return self not in (ChangeStatus.PENDING, ChangeStatus.FAILED)
