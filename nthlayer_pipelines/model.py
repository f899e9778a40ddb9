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
from typing import Annotated

import idna
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


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


class ChangeKind(StrEnum):
    """In plan order: creates first, removals last."""

    CREATE_TEAM = "create_team"
    ADD_MEMBER = "add_member"
    SET_ROLE = "set_role"
    REMOVE_MEMBER = "remove_member"

    @property
    def order(self) -> int:
        return list(ChangeKind).index(self)

    @property
    def symbol(self) -> str:
        return {"create_team": "+", "add_member": "+", "set_role": "~", "remove_member": "-"}[self.value]


class Change(Frozen):
    """One write a plan proposes. `id` is stable: the same drift seen twice is the same change, and a
    change that would write anything else (another team, user or role) has another id."""

    id: str
    kind: ChangeKind
    team: str  # desired team name (slug); for a removal from an unpinned team, still the slug
    team_name: str  # the PagerDuty team's name; for a team the plan creates, the name it is created with
    team_id: str | None = None  # None until the team exists
    email: str | None = None
    user_id: str | None = None
    role: Role | None = None
    from_role: Role | None = None

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
        """The change with its id made from its own fields."""
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


class FindingKind(StrEnum):
    UNRESOLVED_USER = "unresolved_user"
    UNMANAGED_TEAM = "unmanaged_team"
    MISSING_PINNED_TEAM = (
        "missing_pinned_team"  # a pinned team id that PagerDuty does not know: a person decides
    )
    AMBIGUOUS_TEAM = "ambiguous_team"  # several PagerDuty teams match the name: the team is not planned
    PINNED_TEAM_NAME_MISMATCH = "pinned_team_name_mismatch"  # its removals wait for a person
    POSSIBLE_EMAIL_RENAME = "possible_email_rename"  # a removal beside an unresolved addition: waits too

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

    @staticmethod
    def make_id(changes: tuple[Change, ...]) -> str:
        """The content id: the changes and the observed state each was computed from (`from_role`)."""
        lines = (f"{c.id} {c.from_role.value if c.from_role else ''}".rstrip() for c in changes)
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
