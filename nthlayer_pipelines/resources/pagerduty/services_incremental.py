"""Incremental refresh of PagerDuty's services, escalation policies and schedules: the pure half.

A full read lists the three in full: a request per 100 of each. Between full reads, a refresh reads the
audit records since its cursor whose root is a service, an escalation policy or a schedule (PagerDuty
audits all three: `root_resource_types[]` services, escalation_policies, schedules), reads again by id
what they name, and keeps the stored snapshot for everything else. This module decides what a batch of
records asks for (`plan_services_read`), what the answers ask for in turn (`dependent_reads`), and how
the answers fold into the stored snapshot (`merge_services`). The reads live in `services_audit.py`; when
to read everything and where the next refresh starts are membership's rules (`incremental.choose_refresh`,
`cursor_after_full`, `cursor_after_incremental`), so both kinds fall back to a full read alike.

How records are read:

- A record of an object (its `root_resource`) sends that object to be read again (`GET /services/{id}`,
  `/escalation_policies/{id}`, `/schedules/{id}`), whatever part of it changed (a policy's rule, a
  service's integration): the snapshot holds the object as PagerDuty answers for it, not a patch.
  The exception: a record of the object itself whose every field is one the snapshot does not hold (a
  description, support hours, a notification setting) changes nothing and is ignored.
- A deletion of the object itself (`action: delete`, `details.resource` the root) drops it without a read;
  a deletion of a part of it (an integration) is an update of the object.
- More than `max_reads` objects of one kind: that kind is listed again in full instead.
- Our own writes (by the token's last four characters) are applied like any other, and counted apart.

What an object's answer says of others (`dependent_reads`): a service's teams are its policy's, and a
policy lists the services on it, so a service that joined or left a policy sends both policies to be read,
and a policy whose teams changed sends its services. Records are not needed for those: PagerDuty derives
the values, and may write no record of the other object.

Team records are not read: PagerDuty deletes a team only once no escalation policy, service or schedule
is associated with it, so a team's changes change nothing this snapshot holds. (The sandbox lets a team
with policies be deleted, detaching them without a record; the next full refresh reads that.)

The stored snapshot is trusted for the account it was read from (`ServicesAccount`): the objects read
again name the account in their `html_url`, and when none was read, one listing call
(`GET /services?limit=1&total=true`) names it and counts the services.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from nthlayer_pipelines.resources.pagerduty.incremental import (
    account_change,
    by_request,
    fresh_records,
    is_own_record,
    subdomain_from_html_url,
)
from nthlayer_pipelines.resources.pagerduty.models import (
    AuditRecord,
    ObservedServices,
    PagerDutyEscalationPolicy,
    PagerDutySchedule,
    PagerDutyService,
)

DEFAULT_MAX_OBJECT_READS = 50  # of one kind, one by one; past it the kind is listed again

PagerDutyObject = PagerDutyService | PagerDutyEscalationPolicy | PagerDutySchedule


class ObjectKind(StrEnum):
    """The three kinds of object the services snapshot holds, as the audit records name them."""

    SERVICE = "service"
    ESCALATION_POLICY = "escalation_policy"
    SCHEDULE = "schedule"

    @property
    def reference_type(self) -> str:
        """What a record's `root_resource.type` is for an object of this kind."""
        return f"{self.value}_reference"

    @property
    def collection(self) -> str:
        """The kind's listing, and its `root_resource_types[]` value: `services`, ..."""
        return _COLLECTIONS[self]

    def of(self, snapshot: ObservedServices) -> tuple[PagerDutyObject, ...]:
        """The snapshot's objects of this kind."""
        if self is ObjectKind.SERVICE:
            return snapshot.services
        if self is ObjectKind.ESCALATION_POLICY:
            return snapshot.policies
        return snapshot.schedules


_COLLECTIONS = {
    ObjectKind.SERVICE: "services",
    ObjectKind.ESCALATION_POLICY: "escalation_policies",
    ObjectKind.SCHEDULE: "schedules",
}
KINDS = tuple(ObjectKind)
ROOT_RESOURCE_TYPES = tuple(kind.collection for kind in KINDS)  # the audit records this refresh reads
_KIND_OF_ROOT = {kind.reference_type: kind for kind in KINDS}

# Fields of an object's own records that the snapshot does not hold: a record naming only these changes
# nothing in it. Any other field (or none named) reads the object again.
FIELDS_NOT_IN_SNAPSHOT: Mapping[ObjectKind, frozenset[str]] = {
    ObjectKind.SERVICE: frozenset(
        {
            "description",
            "support_hours",
            "scheduled_actions",
            "alert_creation",
            "alert_grouping_parameters",
            "auto_pause_notifications_parameters",
            "last_incident_timestamp",
        }
    ),
    ObjectKind.ESCALATION_POLICY: frozenset({"description", "on_call_handoff_notifications"}),
    ObjectKind.SCHEDULE: frozenset({"description", "time_zone"}),
}


# ---- what a batch of records asks for ------------------------------------------------------------------


@dataclass(frozen=True)
class KindRead:
    """What the records ask of one kind: objects to read again by id, objects deleted, or a listing."""

    reads: frozenset[str] = frozenset()
    deleted: frozenset[str] = frozenset()
    relist: bool = False  # read the kind's whole listing instead of `reads` one by one


@dataclass(frozen=True)
class ServicesRead:
    """What to read again after a batch of audit records; every record counts once, in own, foreign or
    ignored."""

    since: datetime
    kinds: Mapping[ObjectKind, KindRead] = field(default_factory=dict)
    own_record_ids: frozenset[str] = frozenset()  # our writes: not drift, read all the same
    foreign_record_ids: frozenset[str] = frozenset()  # changes made outside nthlayer: drift
    ignored_record_ids: frozenset[str] = frozenset()  # records of nothing the snapshot holds
    newest_record_id: str | None = None

    def of(self, kind: ObjectKind) -> KindRead:
        return self.kinds.get(kind, KindRead())

    @property
    def record_count(self) -> int:
        return len(self.own_record_ids) + len(self.foreign_record_ids) + len(self.ignored_record_ids)

    @property
    def changes_nothing(self) -> bool:
        return not any(read.reads or read.deleted or read.relist for read in self.kinds.values())


def plan_services_read(
    records: Iterable[AuditRecord],
    *,
    since: datetime,
    own_token_suffixes: Collection[str] = (),
    already_applied: Collection[str] = (),
    max_reads: int = DEFAULT_MAX_OBJECT_READS,
) -> ServicesRead:
    """What the records since `since` (less those in `already_applied`, the cursor's `seen_record_ids`)
    ask a refresh to read again. A record is our own write when its token's last four characters are in
    `own_token_suffixes`; every record of a request with one own record is own."""
    if max_reads < 0:
        raise ValueError(f"max_reads must not be negative, not {max_reads}")
    suffixes = {s for s in own_token_suffixes if s}
    unique = fresh_records(records, since=since, already_applied=already_applied)
    reads: dict[ObjectKind, set[str]] = {kind: set() for kind in KINDS}
    deleted: dict[ObjectKind, set[str]] = {kind: set() for kind in KINDS}
    ignored: set[str] = set()
    own: set[str] = set()
    for group in by_request(unique.values()).values():
        for record in group:
            kind = _KIND_OF_ROOT.get(record.root_resource.type)
            if kind is None:
                ignored.add(record.id)  # another root (a team, a user): nothing this snapshot holds
                continue
            object_id = record.root_resource.id
            if _deletes_the_object(record):
                deleted[kind].add(object_id)
            elif _changes_the_snapshot(kind, record):
                reads[kind].add(object_id)
            else:
                ignored.add(record.id)
        if any(is_own_record(record, suffixes) for record in group):
            own.update(record.id for record in group)
    kinds = {}
    for kind in KINDS:
        wanted = reads[kind] - deleted[kind]  # PagerDuty never gives a deleted object's id to another
        read = KindRead(frozenset(wanted), frozenset(deleted[kind]), relist=len(wanted) > max_reads)
        if read != KindRead():
            kinds[kind] = read
    newest = max(unique.values(), key=lambda r: (r.execution_time, r.id), default=None)
    return ServicesRead(
        since=since,
        kinds=kinds,
        own_record_ids=frozenset(own - ignored),
        foreign_record_ids=frozenset(set(unique) - own - ignored),
        ignored_record_ids=frozenset(ignored),
        newest_record_id=newest.id if newest is not None else None,
    )


def _on_the_object(record: AuditRecord) -> bool:
    """The record is of the root object itself, not of a part of it (a rule, an integration, a layer)."""
    resource = record.details.resource
    return resource is None or resource.id == record.root_resource.id


def _deletes_the_object(record: AuditRecord) -> bool:
    return record.action == "delete" and _on_the_object(record)


def _changes_the_snapshot(kind: ObjectKind, record: AuditRecord) -> bool:
    if record.action != "update" or not _on_the_object(record) or record.details.references:
        return True
    names = {f.name for f in record.details.fields}
    return not names or not names <= FIELDS_NOT_IN_SNAPSHOT[kind]


# ---- what the answers ask for in turn --------------------------------------------------------------------


@dataclass
class ServicesAnswers:
    """What a refresh read again: kinds listed in full, and objects by id (None: PagerDuty answered 404,
    the object is gone)."""

    listed: dict[ObjectKind, tuple[PagerDutyObject, ...]] = field(default_factory=dict)
    found: dict[ObjectKind, dict[str, PagerDutyObject | None]] = field(default_factory=dict)

    def add(self, kind: ObjectKind, answers: Mapping[str, PagerDutyObject | None]) -> None:
        self.found.setdefault(kind, {}).update(answers)

    @property
    def objects_read(self) -> int:
        """Objects read again by id (the listings not counted)."""
        return sum(len(answers) for answers in self.found.values())

    def objects(self) -> Iterator[PagerDutyObject]:
        """Every object read again, listed or by id."""
        for listed in self.listed.values():
            yield from listed
        for answers in self.found.values():
            yield from (obj for obj in answers.values() if obj is not None)


def _before_and_after(
    kind: ObjectKind, previous: ObservedServices, plan: ServicesRead, answers: ServicesAnswers
) -> Iterator[tuple[Any, Any]]:
    """(stored, now) of every object of the kind whose answer may differ from the stored one; None where
    there is none (created, deleted)."""
    stored = {obj.id: obj for obj in kind.of(previous)}
    if kind in answers.listed:
        now = {obj.id: obj for obj in answers.listed[kind]}
        for object_id in stored.keys() | now.keys():
            yield stored.get(object_id), now.get(object_id)
        return
    for object_id, obj in answers.found.get(kind, {}).items():
        yield stored.get(object_id), obj
    for object_id in plan.of(kind).deleted:
        yield stored.get(object_id), None


def dependent_reads(
    previous: ObservedServices, plan: ServicesRead, answers: ServicesAnswers
) -> dict[ObjectKind, frozenset[str]]:
    """The objects whose stored values the answers so far contradict, not yet read: the policies a
    service left or joined, and the services of a policy whose teams changed. Read them, add them to
    `answers`, and ask again until nothing is left (each round reads only what no round read before)."""
    policies: set[str] = set()
    services: set[str] = set()
    for before, after in _before_and_after(ObjectKind.SERVICE, previous, plan, answers):
        was = before.escalation_policy_id if before is not None else None
        now = after.escalation_policy_id if after is not None else None
        if was != now:
            policies.update(p for p in (was, now) if p is not None)
    for before, after in _before_and_after(ObjectKind.ESCALATION_POLICY, previous, plan, answers):
        if before is not None and after is not None and set(before.team_ids) != set(after.team_ids):
            services.update(before.service_ids, after.service_ids)
    wanted = {ObjectKind.ESCALATION_POLICY: policies, ObjectKind.SERVICE: services}
    pending = {}
    for kind, ids in wanted.items():
        if kind in answers.listed:
            continue
        ids = ids - answers.found.get(kind, {}).keys() - plan.of(kind).deleted
        if ids:
            pending[kind] = frozenset(ids)
    return pending


# ---- folding the answers into the stored snapshot -------------------------------------------------------


def merge_services(
    previous: ObservedServices, plan: ServicesRead, answers: ServicesAnswers
) -> ObservedServices:
    """The snapshot after the records: per kind, the listing when it was listed again, else the stored
    objects less those deleted or read again, with what the reads found. In PagerDuty's order (by name)."""
    merged: dict[ObjectKind, list[Any]] = {}
    for kind in KINDS:
        if kind in answers.listed:
            objects = list(answers.listed[kind])
        else:
            found = answers.found.get(kind, {})
            dropped = plan.of(kind).deleted | found.keys()
            objects = [obj for obj in kind.of(previous) if obj.id not in dropped]
            objects += [obj for obj in found.values() if obj is not None]
        merged[kind] = sorted(objects, key=lambda obj: (obj.name.casefold(), obj.id))
    return ObservedServices(
        services=tuple(merged[ObjectKind.SERVICE]),
        policies=tuple(merged[ObjectKind.ESCALATION_POLICY]),
        schedules=tuple(merged[ObjectKind.SCHEDULE]),
    )


# ---- which account the snapshot belongs to -------------------------------------------------------------


@dataclass(frozen=True)
class ServicesAccount:
    """The account a stored services snapshot was read from: the API URL and the subdomain its objects
    named in `html_url` (None: they named none, or several)."""

    api_url: str
    subdomain: str | None

    def to_json(self) -> dict[str, Any]:
        return {"api_url": self.api_url, "subdomain": self.subdomain}

    @classmethod
    def from_json(cls, value: object) -> ServicesAccount | None:
        """The stored value, or None when it is not one (then the snapshot is not trusted)."""
        if not isinstance(value, dict):
            return None
        api_url, subdomain = value.get("api_url"), value.get("subdomain")
        if not isinstance(api_url, str) or not (subdomain is None or isinstance(subdomain, str)):
            return None
        return cls(api_url, subdomain)


def subdomains_of(objects: Iterable[PagerDutyObject]) -> frozenset[str]:
    """The account subdomains the objects' `html_url` name (one for a sound account)."""
    named = (subdomain_from_html_url(obj.html_url) for obj in objects)
    return frozenset(s for s in named if s is not None)


def services_account_mismatch(
    stored: ServicesAccount | None, api_url: str, subdomains: Collection[str]
) -> str | None:
    """Why the stored snapshot is not of the account whose answers now name `subdomains`, or None."""
    if stored is None:
        return "the stored services snapshot names no account it was read from"
    return account_change(stored.api_url, stored.subdomain, api_url, subdomains)


def services_total_mismatch(total: int, snapshot: ObservedServices) -> str | None:
    """Why a snapshot brought up to date from the records is not the account's, by its services; or None."""
    if total == len(snapshot.services):
        return None
    return (
        f"the listing total does not add up: PagerDuty lists {total} services, the snapshot brought up to "
        f"date from the audit records holds {len(snapshot.services)}"
    )
