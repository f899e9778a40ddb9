"""The reads of the services kind's refresh, on `PagerDutyClient`'s plumbing: in full, or the audit records
since its cursor and what they name (see `services_incremental` for what is read and why).

Every request goes through the client's own methods and `_request`, so retries, the rate limit and the
request counters are the client's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from nthlayer_pipelines.resources.pagerduty.audit import read_audit_records
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient, parse_body
from nthlayer_pipelines.resources.pagerduty.incremental import (
    IncrementalReadError,
    RefreshCursor,
    RefreshPolicy,
    cursor_after_incremental,
    subdomain_from_html_url,
)
from nthlayer_pipelines.resources.pagerduty.models import ObservedServices
from nthlayer_pipelines.resources.pagerduty.services_incremental import (
    DEFAULT_MAX_OBJECT_READS,
    ROOT_RESOURCE_TYPES,
    ObjectKind,
    PagerDutyObject,
    ServicesAnswers,
    ServicesRead,
    dependent_reads,
    merge_services,
    plan_services_read,
    subdomains_of,
)

PROBE_PATH = "/services"
PROBE_API_CALLS = 1


def read_services_full(client: PagerDutyClient) -> ObservedServices:
    """Every service, escalation policy and schedule: a listing of each."""
    return ObservedServices(
        services=tuple(client.list_services()),
        policies=tuple(client.list_escalation_policies()),
        schedules=tuple(client.list_schedules()),
    )


def _listing(client: PagerDutyClient, kind: ObjectKind) -> tuple[PagerDutyObject, ...]:
    reads: dict[ObjectKind, Callable[[], Sequence[PagerDutyObject]]] = {
        ObjectKind.SERVICE: client.list_services,
        ObjectKind.ESCALATION_POLICY: client.list_escalation_policies,
        ObjectKind.SCHEDULE: client.list_schedules,
    }
    return tuple(reads[kind]())


def read_by_id(
    client: PagerDutyClient, kind: ObjectKind, ids: Sequence[str]
) -> dict[str, PagerDutyObject | None]:
    """Each object by id (None: PagerDuty answered 404, it is gone), up to the client's `max_concurrency`
    at a time."""
    gets: dict[ObjectKind, Callable[[str], PagerDutyObject | None]] = {
        ObjectKind.SERVICE: client.get_service,
        ObjectKind.ESCALATION_POLICY: client.get_escalation_policy,
        ObjectKind.SCHEDULE: client.get_schedule,
    }
    unique = list(dict.fromkeys(ids))
    return dict(zip(unique, client._map_concurrently(gets[kind], unique), strict=True))


def read_planned(client: PagerDutyClient, previous: ObservedServices, plan: ServicesRead) -> ServicesAnswers:
    """What `plan` asks to read again, then what the answers ask for in turn (`dependent_reads`), round
    after round until they ask for nothing more."""
    answers = ServicesAnswers(
        listed={kind: _listing(client, kind) for kind in ObjectKind if plan.of(kind).relist}
    )
    wanted = {kind: plan.of(kind).reads for kind in ObjectKind if not plan.of(kind).relist}
    while any(wanted.values()):
        for kind, ids in wanted.items():
            if ids:
                answers.add(kind, read_by_id(client, kind, sorted(ids)))
        wanted = dependent_reads(previous, plan, answers)
    return answers


@dataclass(frozen=True)
class ServicesProbe:
    """What one call to the services listing (`limit=1&total=true`) says: how many services the account
    has, and the subdomain the one it returned names."""

    total: int
    subdomains: frozenset[str]


def probe_services(client: PagerDutyClient) -> ServicesProbe:
    """The account the token reads and its services' total, in `PROBE_API_CALLS` call. Raises
    `IncrementalReadError` when the answer holds no listing or no total."""
    response = client._request("GET", PROBE_PATH, params={"limit": 1, "offset": 0, "total": "true"})
    body = parse_body(response, "GET", PROBE_PATH)
    items, total = body.get("services"), body.get("total")
    if not isinstance(items, list) or not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise IncrementalReadError(
            f"GET {PROBE_PATH}?total=true answered without a 'services' list and a total ({total!r}): "
            "it cannot vouch for the stored snapshot"
        )
    named = (subdomain_from_html_url(i.get("html_url")) for i in items if isinstance(i, dict))
    return ServicesProbe(total, frozenset(s for s in named if s is not None))


@dataclass(frozen=True)
class IncrementalServices:
    """An incremental services refresh's outcome, before it is checked against the account."""

    state: ObservedServices
    plan: ServicesRead
    cursor: RefreshCursor
    records: int  # audit records read, those already applied included
    objects_read: int  # objects read again by id
    kinds_listed: tuple[ObjectKind, ...]  # kinds listed again in full
    subdomains: frozenset[str]  # the accounts the objects read again name
    api_calls: int


def incremental_services(
    client: PagerDutyClient,
    previous: ObservedServices,
    cursor: RefreshCursor,
    *,
    own_token_suffixes: Sequence[str] = (),
    policy: RefreshPolicy | None = None,
    until: datetime | None = None,
    max_reads: int = DEFAULT_MAX_OBJECT_READS,
) -> IncrementalServices:
    """Read the records of services, policies and schedules since the cursor (up to `until`, default now),
    read again what they name, and fold it into `previous`. Decide first with `incremental.choose_refresh`;
    on `AuditRecordsUnavailableError` or `IncrementalReadError` read everything instead."""
    policy = policy or RefreshPolicy()
    calls = client.api_calls
    until = until or datetime.now(UTC)
    records = read_audit_records(
        client, cursor.cursor_time, until=until, root_resource_types=ROOT_RESOURCE_TYPES
    )
    plan = plan_services_read(
        records,
        since=cursor.cursor_time,
        own_token_suffixes=own_token_suffixes,
        already_applied=cursor.seen_record_ids,
        max_reads=max_reads,
    )
    answers = read_planned(client, previous, plan)
    return IncrementalServices(
        state=merge_services(previous, plan, answers),
        plan=plan,
        cursor=cursor_after_incremental(cursor, records, until, policy),
        records=len(records),
        objects_read=answers.objects_read,
        kinds_listed=tuple(answers.listed),
        subdomains=subdomains_of(answers.objects()),
        api_calls=client.api_calls - calls,
    )
