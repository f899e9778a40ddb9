"""Incremental refresh: read what changed in PagerDuty since the last refresh instead of the whole account.

A full snapshot reads every team's members: over 5,000 requests an hour for a 5,000-team account.
PagerDuty's audit records (`GET /audit/records`) list each change with the team or user it touched, so a
refresh can read the records since its cursor and then only what they name. This module is the pure half:
when to read everything (`choose_refresh`), what a batch of records asks for (`plan_incremental_read`),
how the answers fold into the previous snapshot (`merge_snapshot`), and where the next refresh starts
(`cursor_after_full`, `cursor_after_incremental`). The reads live in `resources/pagerduty/audit.py`.

How records are read:

- A membership change is patched from its records when they state the outcome: a `members` reference
  added or removed on the team, and a `team_role` (or `members.role`) field with its value on the user,
  joined on `execution_context.request_id`. The team's members are read again when they do not (a member
  added without a role, a reference or field this module does not know, two changes to one member in the
  same millisecond by different requests, whose order the records cannot tell).
- A team created, deleted, renamed or re-described: the teams are listed again (a request per 100 teams),
  and a created team's members are read.
- A user created or renamed, or whose email changed: that user is read again (`GET /users/{id}`), or all
  users are listed again past `max_user_reads`. A deleted user is dropped with their memberships.
- Records of other resources (services, schedules, escalation policies) change nothing the snapshot holds.

Our own writes (told apart by the token's last four characters in `method.truncated_token`, or by the
ledger's applied changes) are not drift, but they change PagerDuty all the same: they are applied to the
snapshot like any other change, so the next plan sees them done, and flagged in `own_record_ids` so a
report can count only the changes made outside nthlayer (`foreign_record_ids`).

A full snapshot is read instead when there is no cursor, the cursor is older than `max_cursor_age`
(PagerDuty keeps audit records for 12 months, later documented as 18; a week-old cursor is far inside
either and bounds how much history one refresh replays), PagerDuty refused the records (402: the plan
lacks Audit Trail; 403: the token is not an admin's), a periodic full refresh is due, or the run is the
nightly audit, which always reads everything.

The stored snapshot is trusted only for the account it was read from (`SnapshotAccount`: the API URL and
the subdomain PagerDuty names in every object's `html_url`). Before an incremental read, a probe of the
listing totals (`AccountProbe`) says which account the token reads now; `account_mismatch` refuses a
snapshot of another account, another API URL, or one saved before snapshots named their account, and
`totals_mismatch` refuses a patched snapshot whose users or teams do not number what PagerDuty lists.
Either way the refresh reads everything instead.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import ChangeKind, ChangeStatus, Role
from nthlayer_pipelines.resources.pagerduty.models import AuditRecord
from nthlayer_pipelines.resources.pagerduty.observed import (
    USERS_LISTING,
    USERS_TEAM_MEMBERS,
    ObservedState,
    memberships_frame,
    teams_frame,
    users_frame,
)

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")

PROVIDER = "pagerduty"
AUDIT_RETENTION = timedelta(days=365)  # PagerDuty: 12 months (18 in later docs); the shorter one holds
DEFAULT_MAX_CURSOR_AGE = timedelta(days=7)
DEFAULT_FULL_REFRESH_EVERY = timedelta(hours=24)
# Audit records may become visible a little after the change, and clocks differ: the next read starts this
# much before the end of the last one, skipping the records it already applied.
DEFAULT_SETTLE = timedelta(minutes=5)
DEFAULT_MAX_USER_READS = 50
OWN_WRITE_WINDOW = timedelta(minutes=10)  # a record this close to a ledger outcome can be that write

MEMBERS_REFERENCE = "members"
ROLE_FIELDS = frozenset({"team_role", "members.role"})
USER_FIELDS_IN_SNAPSHOT = frozenset({"name", "email"})
TOKEN_METHODS = frozenset({"api_token", "oauth", "other"})  # methods that carry a truncated token


class IncrementalReadError(Exception):
    """The records and the answers do not add up to a snapshot: take a full one instead."""


# ---- when to read everything ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshPolicy:
    """How far an incremental refresh may reach before a full snapshot is read instead."""

    max_cursor_age: timedelta = DEFAULT_MAX_CURSOR_AGE
    full_refresh_every: timedelta = DEFAULT_FULL_REFRESH_EVERY
    settle: timedelta = DEFAULT_SETTLE
    max_user_reads: int = DEFAULT_MAX_USER_READS
    patch_memberships: bool = True  # False: read again every team a record touches

    def __post_init__(self) -> None:
        if not timedelta(0) < self.max_cursor_age <= AUDIT_RETENTION:
            raise ValueError(
                f"max_cursor_age must be above 0 and at most {AUDIT_RETENTION.days} days (PagerDuty's "
                f"audit retention), not {self.max_cursor_age}"
            )
        if self.full_refresh_every <= timedelta(0):
            raise ValueError(f"full_refresh_every must be above 0, not {self.full_refresh_every}")
        if not timedelta(0) <= self.settle < self.max_cursor_age:
            raise ValueError(f"settle must be at least 0 and below max_cursor_age, not {self.settle}")
        if self.max_user_reads < 0:
            raise ValueError(f"max_user_reads must not be negative, not {self.max_user_reads}")


@dataclass(frozen=True)
class RefreshCursor:
    """Where the next incremental refresh of a provider starts (stored in the ledger)."""

    provider: str
    cursor_time: datetime  # audit records from this moment on (inclusive) are still to be applied
    last_full_refresh_at: datetime
    last_record_id: str | None = None  # the newest record applied so far
    seen_record_ids: tuple[str, ...] = ()  # records at or after cursor_time that were already applied
    updated_at: datetime | None = None


class RefreshMode(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"


@dataclass(frozen=True)
class RefreshDecision:
    mode: RefreshMode
    reason: str
    since: datetime | None = None  # where an incremental read starts

    @property
    def full(self) -> bool:
        return self.mode is RefreshMode.FULL


_REFUSALS = {
    402: "PagerDuty answered 402: the account's plan lacks Audit Trail",
    403: "PagerDuty answered 403: only an admin's or a global API token may list audit records",
}


def choose_refresh(
    cursor: RefreshCursor | None,
    *,
    now: datetime,
    policy: RefreshPolicy | None = None,
    nightly: bool = False,
    audit_refused: int | None = None,
) -> RefreshDecision:
    """Full or incremental, and why. `audit_refused` is the status PagerDuty refused the audit records
    with (402, 403), for the second call after an incremental read was refused."""
    policy = policy or RefreshPolicy()

    def full(reason: str) -> RefreshDecision:
        return RefreshDecision(RefreshMode.FULL, reason)

    if nightly:
        return full("the nightly audit always reads everything")
    if audit_refused is not None:
        return full(_REFUSALS.get(audit_refused, f"PagerDuty refused the audit records ({audit_refused})"))
    if cursor is None:
        return full("no refresh cursor yet: the first refresh reads everything")
    if cursor.cursor_time > now:
        return full(f"the cursor ({cursor.cursor_time.isoformat()}) is in the future: the clock moved")
    age = now - cursor.cursor_time
    if age > policy.max_cursor_age:
        return full(f"the cursor is {_span(age)} old, more than the {_span(policy.max_cursor_age)} allowed")
    since_full = now - cursor.last_full_refresh_at
    if since_full >= policy.full_refresh_every:
        return full(
            f"the last full refresh was {_span(since_full)} ago; one is due every "
            f"{_span(policy.full_refresh_every)}"
        )
    return RefreshDecision(
        RefreshMode.INCREMENTAL, f"audit records since {cursor.cursor_time.isoformat()}", cursor.cursor_time
    )


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours >= 48:
        return f"{round(hours / 24, 1):g} days"
    if hours >= 1:
        return f"{round(hours, 1):g} h"
    return f"{round(hours * 60):g} min"


def cursor_after_full(
    provider: str, started_at: datetime, policy: RefreshPolicy | None = None
) -> RefreshCursor:
    """The cursor after a full snapshot that began at `started_at`: changes made while it was read are
    applied again by the next refresh, which is harmless (every patch and read is idempotent)."""
    policy = policy or RefreshPolicy()
    return RefreshCursor(provider, started_at - policy.settle, started_at, updated_at=started_at)


def cursor_after_incremental(
    previous: RefreshCursor,
    records: Sequence[AuditRecord],
    read_until: datetime,
    policy: RefreshPolicy | None = None,
) -> RefreshCursor:
    """The cursor after applying `records`, every record with `previous.cursor_time <= t < read_until`.

    The next read starts `settle` before `read_until` (never before the previous cursor), so a record that
    shows up late is still read; the ones already applied from there on are remembered and skipped."""
    policy = policy or RefreshPolicy()
    cursor_time = max(previous.cursor_time, read_until - policy.settle)
    seen = sorted({r.id for r in records if r.execution_time >= cursor_time})
    newest = max(records, key=lambda r: (r.execution_time, r.id), default=None)
    return replace(
        previous,
        cursor_time=cursor_time,
        last_record_id=newest.id if newest is not None else previous.last_record_id,
        seen_record_ids=tuple(seen),
        updated_at=read_until,
    )


# ---- which account the snapshot belongs to -------------------------------------------------------------

PAGERDUTY_WEB_DOMAIN = "pagerduty.com"


def subdomain_from_html_url(html_url: object) -> str | None:
    """The account's subdomain as PagerDuty names it in an object's `html_url`:
    `https://acme.pagerduty.com/users/PXXX` (or `https://acme.eu.pagerduty.com/...`) is `acme`.
    None when the value names no account (absent, not a URL, another domain)."""
    if not isinstance(html_url, str):
        return None
    try:
        host = urlsplit(html_url.strip()).hostname
    except ValueError:
        return None
    suffix = "." + PAGERDUTY_WEB_DOMAIN
    if not host or not host.endswith(suffix):
        return None
    label = host.removesuffix(suffix).split(".")[0]
    return label or None


def normalized_api_url(api_url: str) -> str:
    """The API URL as compared between refreshes: scheme and host in lowercase, no trailing slash."""
    parts = urlsplit(api_url.strip())
    if not parts.scheme or not parts.netloc:
        return api_url.strip().rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class SnapshotAccount:
    """The account a stored snapshot was read from, and its listing totals then (the ledger's `account`).

    `subdomain` None: the answers named none (an account without users or teams), so a later refresh
    cannot tell whether it reads the same account and reads everything. `users_read` says how the
    snapshot's users were read (`observed.USERS_LISTING` or `USERS_TEAM_MEMBERS`); `users` is the users
    listing's total either way."""

    api_url: str
    subdomain: str | None
    users: int
    teams: int
    users_read: str = USERS_LISTING

    def to_json(self) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "api_url": self.api_url,
            "subdomain": self.subdomain,
            "users": self.users,
            "teams": self.teams,
        }
        if self.users_read != USERS_LISTING:  # absent: the listing, as every account stored before
            stored["users_read"] = self.users_read
        return stored

    @classmethod
    def from_json(cls, value: object) -> SnapshotAccount | None:
        """The stored value, or None when there is none or it is not one (then nothing is trusted)."""
        if not isinstance(value, dict):
            return None
        api_url, subdomain = value.get("api_url"), value.get("subdomain")
        users, teams = _count(value.get("users")), _count(value.get("teams"))
        if not isinstance(api_url, str) or not (subdomain is None or isinstance(subdomain, str)):
            return None
        users_read = value.get("users_read", USERS_LISTING)
        if users is None or teams is None or users_read not in (USERS_LISTING, USERS_TEAM_MEMBERS):
            return None
        return cls(api_url, subdomain, users, teams, users_read)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def single_subdomain(subdomains: Collection[str]) -> str | None:
    """The account's subdomain when the answers named exactly one; None when none or several."""
    return next(iter(subdomains)) if len(set(subdomains)) == 1 else None


@dataclass(frozen=True)
class AccountProbe:
    """What the totals probe read (`GET /users` and `GET /teams`, `limit=1&total=true`): the listings'
    totals, and the subdomains their answers named in `html_url`."""

    api_url: str
    subdomains: frozenset[str]
    users: int
    teams: int

    @property
    def subdomain(self) -> str | None:
        return single_subdomain(self.subdomains)

    def account(self, users_read: str = USERS_LISTING) -> SnapshotAccount:
        """The account to store with a snapshot the probe vouched for, its users read as `users_read`."""
        return SnapshotAccount(self.api_url, self.subdomain, self.users, self.teams, users_read)


def _domain(subdomain: str) -> str:
    return f"{subdomain}.{PAGERDUTY_WEB_DOMAIN}"


def account_mismatch(stored: SnapshotAccount | None, probe: AccountProbe) -> str | None:
    """Why the stored snapshot may not be patched with this account's audit records, or None when it may.

    Checked before the records are read: a snapshot of another account (a token of another account, a
    sandbox started afresh, a ledger restored beside another deployment) patched with this account's
    records would be neither, and its plan would contradict a full read."""
    if stored is None:
        return (
            "the stored snapshot names no account (it was saved before snapshots were bound to one): "
            "reading everything once"
        )
    return account_change(stored.api_url, stored.subdomain, probe.api_url, probe.subdomains)


def account_change(
    stored_api_url: str, stored_subdomain: str | None, api_url: str, subdomains: Collection[str]
) -> str | None:
    """Why a snapshot read through `stored_api_url` from the account `stored_subdomain` is not the account
    whose answers now name `subdomains` through `api_url`; None when it is the same one."""
    if normalized_api_url(stored_api_url) != normalized_api_url(api_url):
        return f"the stored snapshot was read from another API URL ({stored_api_url}), not {api_url}"
    named = set(subdomains)
    if len(named) > 1:
        listed = ", ".join(_domain(s) for s in sorted(named))
        return f"PagerDuty's answers name more than one account ({listed}): the snapshot cannot be checked"
    subdomain = single_subdomain(named)
    if subdomain is None:
        return (
            "PagerDuty's answers name no account (no html_url to read a subdomain from): the stored "
            "snapshot cannot be checked"
        )
    if stored_subdomain is None:
        return "the stored snapshot names no account subdomain: it cannot be checked against this account"
    if stored_subdomain != subdomain:
        return (
            f"the stored snapshot is from another account ({_domain(stored_subdomain)}); the token now "
            f"reads {_domain(subdomain)}"
        )
    return None


def totals_mismatch(
    probe: AccountProbe, *, users: int, teams: int, users_read: str = USERS_LISTING
) -> str | None:
    """Why a snapshot patched from the audit records is not the account's, by its row counts; or None.

    The records do not cover every change (a record PagerDuty lost or has yet to show, a row lost from
    the stored snapshot): counts that differ from the listings' totals prove the patch wrong. Users read
    through their teams (`USERS_TEAM_MEMBERS`) are fewer than the listing by design: only the teams
    count is checked then."""
    if users_read != USERS_LISTING:
        users = probe.users
    if (probe.users, probe.teams) == (users, teams):
        return None
    return (
        f"the listing totals do not add up: PagerDuty lists {probe.users} users and {probe.teams} teams, "
        f"the snapshot patched from the audit records holds {users} and {teams}"
    )


# ---- our own writes ------------------------------------------------------------------------------------


class AppliedOutcome(Protocol):
    """What `own_writes_from_outcomes` reads of the ledger's `ChangeOutcome`."""

    kind: ChangeKind
    status: ChangeStatus
    team_id: str | None
    team_name: str
    user_id: str | None
    updated_at: datetime


@dataclass(frozen=True)
class OwnWrite:
    """A change the ledger shows nthlayer applied: the records it left are our own writes."""

    kind: ChangeKind
    team_id: str | None
    team_name: str
    user_id: str | None
    at: datetime

    def matches(self, record: AuditRecord, window: timedelta = OWN_WRITE_WINDOW) -> bool:
        root = record.root_resource
        if root.type != "team_reference" or abs(record.execution_time - self.at) > window:
            return False
        if self.kind is ChangeKind.CREATE_TEAM:
            if record.action != "create":
                return False
            if self.team_id is not None:
                return root.id == self.team_id
            names = {root.summary or ""} | {f.value or "" for f in record.details.fields if f.name == "name"}
            return self.team_name.casefold() in {name.casefold() for name in names}
        if self.user_id is None or not self._same_team(root.id, root.summary):
            return False
        details = record.details
        on_user = details.resource is not None and details.resource.id == self.user_id
        members = [c for c in details.references if c.name == MEMBERS_REFERENCE]
        added = any(self.user_id == ref.id for c in members for ref in c.added)
        removed = any(self.user_id == ref.id for c in members for ref in c.removed)
        if self.kind is ChangeKind.ADD_MEMBER:
            return added or on_user
        if self.kind is ChangeKind.SET_ROLE:
            return on_user
        return removed  # REMOVE_MEMBER

    def _same_team(self, team_id: str, name: str | None) -> bool:
        # A change to a team created in the same apply has no team id in the ledger: go by its name.
        if self.team_id is not None:
            return team_id == self.team_id
        return name is not None and name.casefold() == self.team_name.casefold()


def own_writes_from_outcomes(outcomes: Iterable[AppliedOutcome]) -> tuple[OwnWrite, ...]:
    """The applied changes of the ledger's intent log (`Ledger.audit(since=...)`) as own writes."""
    return tuple(
        OwnWrite(o.kind, o.team_id, o.team_name, o.user_id, o.updated_at)
        for o in outcomes
        if o.status is ChangeStatus.APPLIED
    )


def token_suffix(api_token: str) -> str:
    """What PagerDuty keeps of a token in `method.truncated_token`: its last four characters."""
    return api_token.strip()[-4:]


# ---- what a batch of records asks for ------------------------------------------------------------------


@dataclass(frozen=True)
class MembershipChange:
    """A member's state after a change, as its records state it: `role` None means removed."""

    team_id: str
    user_id: str
    role: Role | None
    at: datetime
    record_id: str


@dataclass(frozen=True)
class IncrementalRead:
    """What to read again after a batch of audit records, and what to patch without reading."""

    since: datetime
    relist_teams: bool = False
    relist_users: bool = False
    team_member_reads: frozenset[str] = frozenset()  # teams whose members are read again in full
    user_reads: frozenset[str] = frozenset()  # users read again one by one (unless relist_users)
    deleted_team_ids: frozenset[str] = frozenset()
    deleted_user_ids: frozenset[str] = frozenset()
    membership_changes: tuple[MembershipChange, ...] = ()  # oldest first, for teams not read again
    # Every record counts once: in own, foreign or ignored.
    own_record_ids: frozenset[str] = frozenset()  # our writes: not drift, applied all the same
    foreign_record_ids: frozenset[str] = frozenset()  # changes made outside nthlayer: drift
    ignored_record_ids: frozenset[str] = frozenset()  # records of nothing the snapshot holds, by anyone
    newest_record_id: str | None = None
    record_team_ids: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def record_count(self) -> int:
        return len(self.own_record_ids) + len(self.foreign_record_ids) + len(self.ignored_record_ids)

    @property
    def changes_nothing(self) -> bool:
        return not (
            self.relist_teams
            or self.relist_users
            or self.team_member_reads
            or self.user_reads
            or self.deleted_team_ids
            or self.deleted_user_ids
            or self.membership_changes
        )

    @property
    def foreign_team_ids(self) -> frozenset[str]:
        """Teams changed outside nthlayer, per the records (for a drift report)."""
        teams = self.record_team_ids
        return frozenset(teams[r] for r in self.foreign_record_ids if r in teams)


@dataclass
class _Pending:
    """What one request's records say about one member of one team."""

    added: bool = False
    removed: bool = False
    role: str | None = None
    role_unknown: bool = False
    record_id: str = ""


@dataclass
class _Planner:
    patch_memberships: bool
    relist_teams: bool = False
    team_reads: set[str] = field(default_factory=set)
    user_reads: set[str] = field(default_factory=set)
    deleted_teams: set[str] = field(default_factory=set)
    deleted_users: set[str] = field(default_factory=set)
    changes: list[MembershipChange] = field(default_factory=list)
    ignored: set[str] = field(default_factory=set)
    record_teams: dict[str, str] = field(default_factory=dict)
    # (team, user) -> (time, request) of the last change applied to that member
    last_change: dict[tuple[str, str], tuple[datetime, str]] = field(default_factory=dict)

    def apply_request(self, request: str, records: list[AuditRecord]) -> None:
        pending: dict[tuple[str, str], _Pending] = {}
        for record in records:
            root = record.root_resource
            if root.type == "team_reference":
                self.record_teams[record.id] = root.id
                self._team_record(record, pending)
            elif root.type == "user_reference":
                self._user_record(record)
            else:
                self.ignored.add(record.id)
        moment = min(r.execution_time for r in records)
        for (team_id, user_id), state in pending.items():
            self._settle_member(team_id, user_id, state, moment, request)

    def _team_record(self, record: AuditRecord, pending: dict[tuple[str, str], _Pending]) -> None:
        team_id = record.root_resource.id
        if record.action == "create":
            self.relist_teams = True
            self.team_reads.add(team_id)
            return
        if record.action == "delete":
            self.relist_teams = True
            self.deleted_teams.add(team_id)
            return
        resource = record.details.resource
        if resource is None or record.action != "update":
            self._unknown_team_change(team_id)
            return
        if resource.type == "team_reference" and resource.id == team_id:
            if record.details.fields:
                self.relist_teams = True  # the team's own fields: name, description, ...
            for change in record.details.references:
                if change.name != MEMBERS_REFERENCE:
                    self._unknown_team_change(team_id)
                    continue
                for ref in change.added:
                    member = pending.setdefault((team_id, ref.id), _Pending(record_id=record.id))
                    member.added = True
                for ref in change.removed:
                    member = pending.setdefault((team_id, ref.id), _Pending(record_id=record.id))
                    member.removed = True
        elif resource.type == "user_reference":
            if record.details.references:
                self._unknown_team_change(team_id)
            for team_field in record.details.fields:
                if team_field.name not in ROLE_FIELDS:
                    self._unknown_team_change(team_id)
                    continue
                member = pending.setdefault((team_id, resource.id), _Pending(record_id=record.id))
                member.record_id = record.id
                if team_field.value in {role.value for role in Role}:
                    member.role = team_field.value
                else:
                    member.role_unknown = True
        # Other resources of the team's aggregate (its escalation policies, services) are not in the snapshot.

    def _user_record(self, record: AuditRecord) -> None:
        user_id = record.root_resource.id
        if record.action == "create":
            self.user_reads.add(user_id)
            self.deleted_users.discard(user_id)
            return
        if record.action == "delete":
            self.deleted_users.add(user_id)
            self.user_reads.discard(user_id)
            return
        resource = record.details.resource
        if resource is None or resource.id == user_id:
            names = {f.name for f in record.details.fields}
            if not names or names & USER_FIELDS_IN_SNAPSHOT:
                self.user_reads.add(user_id)
            else:
                self.ignored.add(record.id)
        else:
            self.ignored.add(record.id)  # contact methods, notification rules
        for change in record.details.references:
            if change.name == "teams":  # the user's teams, changed from the user's side
                for ref in (*change.added, *change.removed):
                    self.team_reads.add(ref.id)

    def _unknown_team_change(self, team_id: str) -> None:
        # A change this module cannot read exactly: read the team and its members again.
        self.relist_teams = True
        self.team_reads.add(team_id)

    def _settle_member(
        self, team_id: str, user_id: str, state: _Pending, moment: datetime, request: str
    ) -> None:
        key = (team_id, user_id)
        last = self.last_change.get(key)
        self.last_change[key] = (moment, request)
        if not self.patch_memberships:
            self.team_reads.add(team_id)
            return
        if last is not None and last[0] == moment and last[1] != request:
            self.team_reads.add(team_id)  # two requests in one millisecond: their order is unknown
            return
        if state.removed and not state.added and state.role is None:
            role: Role | None = None
        elif state.role is not None and not state.removed and not state.role_unknown:
            role = Role(state.role)
        else:
            self.team_reads.add(team_id)  # added without a role, or a state the records leave open
            return
        self.changes.append(MembershipChange(team_id, user_id, role, moment, state.record_id))


def plan_incremental_read(
    records: Iterable[AuditRecord],
    *,
    own_token_suffixes: Collection[str] = (),
    since: datetime,
    own_writes: Collection[OwnWrite] = (),
    already_applied: Collection[str] = (),
    policy: RefreshPolicy | None = None,
) -> IncrementalRead:
    """What the records since `since` ask a refresh to read again or patch.

    Records before `since` and those in `already_applied` (the cursor's `seen_record_ids`) are left out.
    A record is our own write when its token's last four characters are in `own_token_suffixes` or it
    matches one of `own_writes` (the ledger's applied changes); every record of a request with one own
    record is own. Own writes are applied like any other change (see the module docstring)."""
    policy = policy or RefreshPolicy()
    suffixes = {s for s in own_token_suffixes if s}
    unique = fresh_records(records, since=since, already_applied=already_applied)
    planner = _Planner(policy.patch_memberships)
    own: set[str] = set()
    for request, group in by_request(unique.values()).items():
        planner.apply_request(request, group)
        if any(_is_own(record, suffixes, own_writes) for record in group):
            own.update(record.id for record in group)

    # A team read again in full needs no patches; a deleted team needs neither.
    team_reads = planner.team_reads - planner.deleted_teams
    changes = tuple(
        c for c in planner.changes if c.team_id not in team_reads and c.team_id not in planner.deleted_teams
    )
    user_reads = planner.user_reads - planner.deleted_users
    relist_users = len(user_reads) > policy.max_user_reads
    ignored = planner.ignored
    newest = max(unique.values(), key=lambda r: (r.execution_time, r.id), default=None)
    return IncrementalRead(
        since=since,
        relist_teams=planner.relist_teams,
        relist_users=relist_users,
        team_member_reads=frozenset(team_reads),
        user_reads=frozenset() if relist_users else frozenset(user_reads),
        deleted_team_ids=frozenset(planner.deleted_teams),
        deleted_user_ids=frozenset(planner.deleted_users),
        membership_changes=changes,
        own_record_ids=frozenset(own - ignored),
        foreign_record_ids=frozenset(set(unique) - own - ignored),
        ignored_record_ids=frozenset(ignored),
        newest_record_id=newest.id if newest is not None else None,
        record_team_ids=planner.record_teams,
    )


def fresh_records(
    records: Iterable[AuditRecord], *, since: datetime, already_applied: Collection[str] = ()
) -> dict[str, AuditRecord]:
    """The records at or after `since` not in `already_applied`, each once, by id, oldest first."""
    skip = set(already_applied)
    unique: dict[str, AuditRecord] = {}
    for record in sorted(records, key=lambda r: (r.execution_time, r.id)):
        if record.execution_time >= since and record.id not in skip:
            unique.setdefault(record.id, record)
    return unique


def by_request(records: Iterable[AuditRecord]) -> dict[str, list[AuditRecord]]:
    """The records grouped by the request that wrote them, in the order given; a record without a
    request id stands alone."""
    grouped: dict[str, list[AuditRecord]] = {}
    for record in records:
        grouped.setdefault(record.request_id or f"record:{record.id}", []).append(record)
    return grouped


def is_own_record(record: AuditRecord, suffixes: Collection[str]) -> bool:
    """Written with a token ending in one of `suffixes` (PagerDuty's `method.truncated_token`)."""
    method = record.method
    return bool(
        method.type in TOKEN_METHODS and method.truncated_token and method.truncated_token in suffixes
    )


def _is_own(record: AuditRecord, suffixes: Collection[str], own_writes: Collection[OwnWrite]) -> bool:
    return is_own_record(record, suffixes) or any(write.matches(record) for write in own_writes)


# ---- folding the answers into the previous snapshot ----------------------------------------------------


def merge_snapshot(previous: ObservedState, reread: ObservedState, plan: IncrementalRead) -> ObservedState:
    """The snapshot after the records: `previous` with `reread` folded in and the patches applied.

    `reread` holds what the plan asked for: every team when `plan.relist_teams` (else nothing), every user
    when `plan.relist_users` (else the users of `plan.user_reads` that still exist: one missing was
    deleted), and the members of exactly the teams of `plan.team_member_reads` that still exist.
    Raises `IncrementalReadError` when they do not fit (a team appeared without a record of its creation).
    """
    _check_reread(previous, reread, plan)
    teams = _merged_teams(previous.teams, reread.teams, plan)
    users, deleted_users = _merged_users(previous.users, reread.users, plan)

    members = previous.memberships
    members = members[~members["team_id"].isin(plan.team_member_reads)]
    members = _patched(members, plan.membership_changes)
    members = pd.concat([members, reread.memberships], ignore_index=True)
    members = members[members["team_id"].isin(teams["team_id"]) & ~members["user_id"].isin(deleted_users)]
    return ObservedState(
        users=_typed(users, users_frame()),
        teams=_typed(teams, teams_frame()),
        memberships=_typed(members, memberships_frame()),
    )


def _check_reread(previous: ObservedState, reread: ObservedState, plan: IncrementalRead) -> None:
    if not plan.relist_teams and len(reread.teams):
        raise IncrementalReadError("teams were read again although the plan did not ask for it")
    strays = sorted(set(reread.memberships["team_id"]) - plan.team_member_reads)
    if strays:
        raise IncrementalReadError(
            f"members of teams the plan did not ask for were read: {', '.join(strays)}"
        )
    if plan.relist_teams:
        appeared = set(reread.teams["team_id"]) - set(previous.teams["team_id"]) - plan.team_member_reads
        if appeared:
            raise IncrementalReadError(
                f"teams {', '.join(sorted(appeared))} appeared without a record of their creation, so their "
                "members are unknown: take a full snapshot"
            )


def _merged_teams(previous: pd.DataFrame, reread: pd.DataFrame, plan: IncrementalRead) -> pd.DataFrame:
    if plan.relist_teams:
        return reread
    return previous[~previous["team_id"].isin(plan.deleted_team_ids)]


def _merged_users(
    previous: pd.DataFrame, reread: pd.DataFrame, plan: IncrementalRead
) -> tuple[pd.DataFrame, set[str]]:
    if plan.relist_users:
        deleted = set(previous["user_id"]) - set(reread["user_id"])
        return reread, deleted | set(plan.deleted_user_ids)
    stray = set(reread["user_id"]) - plan.user_reads
    if stray:
        raise IncrementalReadError(f"users the plan did not ask for were read: {', '.join(sorted(stray))}")
    deleted = (plan.user_reads - set(reread["user_id"])) | plan.deleted_user_ids
    kept = previous[~previous["user_id"].isin(plan.user_reads | deleted)]
    return pd.concat([kept, reread], ignore_index=True), deleted


def _patched(members: pd.DataFrame, changes: Sequence[MembershipChange]) -> pd.DataFrame:
    """Each touched member as its last change left them; the others as they were."""
    final: dict[tuple[str, str], Role | None] = {}
    for change in changes:
        final[(change.team_id, change.user_id)] = change.role
    if not final:
        return members
    keys = pd.MultiIndex.from_frame(members[["team_id", "user_id"]].astype(object))
    untouched = members[~keys.isin(list(final))]
    rows: list[dict[str, Any]] = [
        {"team_id": team_id, "user_id": user_id, "role": role.value}
        for (team_id, user_id), role in final.items()
        if role is not None
    ]
    return pd.concat([untouched, memberships_frame(rows)], ignore_index=True)


def _typed(frame: pd.DataFrame, empty: pd.DataFrame) -> pd.DataFrame:
    """The snapshot's columns and string dtypes, whatever concat made of them."""
    return frame[list(empty.columns)].astype(empty.dtypes.to_dict()).reset_index(drop=True)
