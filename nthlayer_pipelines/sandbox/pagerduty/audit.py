"""PagerDuty's audit trail, emulated: the records every change to the org leaves, and their listing.

A record names the aggregate it belongs to (`root_resource`: a team, a user), the action (create,
update, delete), how the change was made (`method`: an API token, known by its last four characters, or
a person in the web UI), and what changed (`details.fields` with before and after values,
`details.references` with the references added and removed). One request may leave several records that
share `execution_context.request_id`: adding a member leaves a `members` reference on the team and a
`team_role` field on the user, both under the team's root.

`GET /audit/records` lists them newest first with cursor pagination; `since` defaults to 24 hours ago,
`until` to now, and the range may not exceed 31 days. The range is half-open: `since <= t < until`.

History starts when the sandbox serves the org (`AuditTrail.start`, called by `create_app`): building
an org from a seed or a generator records nothing, so a generated org of thousands of teams costs no
memory here.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

# `root_resource_types[]` values and the reference type of each.
ROOT_RESOURCE_TYPES = {
    "users": "user_reference",
    "teams": "team_reference",
    "schedules": "schedule_reference",
    "escalation_policies": "escalation_policy_reference",
    "services": "service_reference",
    "ip_allow_lists": "ip_allow_list_reference",
}
_COLLECTIONS = {reference: collection for collection, reference in ROOT_RESOURCE_TYPES.items()}
ACTIONS = ("create", "update", "delete")
METHOD_TYPES = ("browser", "oauth", "api_token", "identity_provider", "other")
ACTOR_TYPES = ("user_reference", "api_key_reference", "app_reference")

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
DEFAULT_WINDOW = timedelta(hours=24)
MAX_RANGE = timedelta(days=31)

MEMBERS_REFERENCE = "members"
TEAM_ROLE_FIELD = "team_role"

# Whether `GET /audit/records` answers: the account's plan may lack Audit Trail (402), and only admin
# tokens may list the whole account's records (403).
AUDIT_ACCESS = ("available", "payment_required", "forbidden")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as PagerDuty writes `execution_time`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _to_millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True, slots=True)
class AuditRef:
    """A reference inside a record: the object's id, reference type and name at the time."""

    id: str
    type: str
    summary: str

    @classmethod
    def team(cls, team_id: str, name: str) -> AuditRef:
        return cls(team_id, "team_reference", name)

    @classmethod
    def user(cls, user_id: str, name: str) -> AuditRef:
        return cls(user_id, "user_reference", name)

    @classmethod
    def escalation_policy(cls, policy_id: str, name: str) -> AuditRef:
        return cls(policy_id, "escalation_policy_reference", name)

    @classmethod
    def service(cls, service_id: str, name: str) -> AuditRef:
        return cls(service_id, "service_reference", name)

    @classmethod
    def schedule(cls, schedule_id: str, name: str) -> AuditRef:
        return cls(schedule_id, "schedule_reference", name)


def audit_value(value: Any) -> str | None:
    """A field's value as a record carries it: text; numbers and structures as compact JSON; None
    (a disabled timeout, a setting not set) as no value."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def api_key_id(token: str) -> str:
    """A stable PagerDuty-style id for an API key that never reveals the key."""
    digest = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big")
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    chars = []
    for _ in range(6):
        digest, digit = divmod(digest, 36)
        chars.append(alphabet[digit])
    return "P" + "".join(chars)


@dataclass(frozen=True, slots=True)
class AuditOrigin:
    """Who made a change and how: an API token (only its last four characters kept) or the web UI."""

    method: str
    truncated_token: str | None = None
    actor: AuditRef | None = None
    request_id: str | None = None
    remote_address: str | None = None

    @classmethod
    def api_token(
        cls, token: str, *, request_id: str | None = None, remote_address: str | None = None
    ) -> AuditOrigin:
        actor = AuditRef(api_key_id(token), "api_key_reference", "Sandbox API key")
        return cls("api_token", token[-4:], actor, request_id, remote_address)

    @classmethod
    def browser(cls, actor: AuditRef | None = None) -> AuditOrigin:
        """A person in the web UI: PagerDuty records no token for a browser session."""
        return cls("browser", None, actor)


@dataclass(frozen=True, slots=True)
class AuditField:
    name: str
    value: str | None = None
    before_value: str | None = None


@dataclass(frozen=True, slots=True)
class AuditReferences:
    name: str
    added: tuple[AuditRef, ...] = ()
    removed: tuple[AuditRef, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int  # order of recording: breaks ties between records of the same millisecond
    id: str
    execution_time: datetime
    origin: AuditOrigin
    request_id: str
    root: AuditRef
    action: str
    resource: AuditRef
    fields: tuple[AuditField, ...] = ()
    references: tuple[AuditReferences, ...] = ()

    @property
    def position(self) -> tuple[datetime, int]:
        return (self.execution_time, self.seq)


def _position(record: AuditRecord) -> tuple[datetime, int]:
    return record.position


_Entry = tuple[AuditRef, tuple[AuditField, ...], tuple[AuditReferences, ...]]


class AuditTrail:
    """The org's audit records, oldest first. Shares the org's lock."""

    def __init__(self, lock: threading.RLock, clock: Callable[[], datetime] = _utc_now) -> None:
        self.lock = lock
        self.recording = False
        self.clock = clock  # replaceable, so tests can age records
        self.ui_origin = AuditOrigin.browser()  # how a change made through the org's methods is recorded
        self._records: list[AuditRecord] = []
        self._seq = 0

    def start(self) -> None:
        """Record from now on; everything before is the org's pre-history."""
        self.recording = True

    def records(self) -> list[AuditRecord]:
        with self.lock:
            return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    # -- what the org reports ------------------------------------------------------------------------
    def record_create(
        self, origin: AuditOrigin | None, root: AuditRef, fields: Mapping[str, str | None]
    ) -> None:
        values = tuple(AuditField(name, value=value) for name, value in fields.items())
        self._write(origin, root, "create", [(root, values, ())])

    def record_update(
        self, origin: AuditOrigin | None, root: AuditRef, changes: Mapping[str, tuple[str | None, str | None]]
    ) -> None:
        """`changes`: field name -> (before, after). Nothing is recorded when nothing changed."""
        values = tuple(
            AuditField(name, value=after, before_value=before)
            for name, (before, after) in changes.items()
            if before != after
        )
        if values:
            self._write(origin, root, "update", [(root, values, ())])

    def record_delete(self, origin: AuditOrigin | None, root: AuditRef, fields: Mapping[str, str]) -> None:
        values = tuple(AuditField(name, before_value=value) for name, value in fields.items())
        self._write(origin, root, "delete", [(root, values, ())])

    def record_member_added(
        self, origin: AuditOrigin | None, team: AuditRef, user: AuditRef, role: str
    ) -> None:
        self._write(
            origin,
            team,
            "update",
            [
                (team, (), (AuditReferences(MEMBERS_REFERENCE, added=(user,)),)),
                (user, (AuditField(TEAM_ROLE_FIELD, value=role),), ()),
            ],
        )

    def record_member_role_changed(
        self, origin: AuditOrigin | None, team: AuditRef, user: AuditRef, before: str, after: str
    ) -> None:
        field = AuditField(TEAM_ROLE_FIELD, value=after, before_value=before)
        self._write(origin, team, "update", [(user, (field,), ())])

    def record_member_removed(self, origin: AuditOrigin | None, team: AuditRef, user: AuditRef) -> None:
        references = (AuditReferences(MEMBERS_REFERENCE, removed=(user,)),)
        self._write(origin, team, "update", [(team, (), references)])

    def _write(self, origin: AuditOrigin | None, root: AuditRef, action: str, entries: list[_Entry]) -> None:
        if not self.recording:
            return
        origin = origin or self.ui_origin
        request_id = origin.request_id or uuid.uuid4().hex
        with self.lock:
            moment = _to_millis(self.clock().astimezone(UTC))
            for resource, fields, references in entries:
                self._seq += 1
                record = AuditRecord(
                    self._seq,
                    f"PAR{self._seq:010d}",
                    moment,
                    origin,
                    request_id,
                    root,
                    action,
                    resource,
                    fields,
                    references,
                )
                bisect.insort(self._records, record, key=_position)

    # -- listing -------------------------------------------------------------------------------------
    def select(self, query: AuditQuery) -> tuple[list[AuditRecord], str | None]:
        """One page of matching records, newest first, and the cursor of the next page (None at the end)."""
        with self.lock:
            records = self._records
            end = bisect.bisect_left(records, (query.until,), key=_position)
            if query.after is not None:
                end = min(end, bisect.bisect_left(records, query.after, key=_position))
            page: list[AuditRecord] = []
            for index in range(end - 1, -1, -1):
                record = records[index]
                if record.execution_time < query.since:
                    break
                if query.matches(record):
                    page.append(record)
                    if len(page) > query.limit:
                        break
        if len(page) <= query.limit:
            return page, None
        page = page[: query.limit]
        return page, encode_cursor(query, page[-1].position)


# -- queries ---------------------------------------------------------------------------------------------


class AuditQueryError(ValueError):
    """A query PagerDuty would refuse with 400: its error code, message and details."""

    def __init__(self, code: int, message: str, *errors: str) -> None:
        super().__init__(f"{message}: {'; '.join(errors)}" if errors else message)
        self.code, self.message, self.errors = code, message, list(errors)


class QueryParams(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...

    def getlist(self, key: str) -> list[str]: ...


@dataclass(frozen=True)
class AuditQuery:
    since: datetime
    until: datetime
    limit: int = DEFAULT_LIMIT
    root_types: frozenset[str] = frozenset()  # reference types; empty: all
    root_id: str | None = None
    actions: frozenset[str] = frozenset()
    method_type: str | None = None
    truncated_token: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    after: tuple[datetime, int] | None = None  # the position of the last record already returned

    def matches(self, record: AuditRecord) -> bool:
        origin, actor = record.origin, record.origin.actor
        return (
            (not self.root_types or record.root.type in self.root_types)
            and (self.root_id is None or record.root.id == self.root_id)
            and (not self.actions or record.action in self.actions)
            and (self.method_type is None or origin.method == self.method_type)
            and (self.truncated_token is None or origin.truncated_token == self.truncated_token)
            and (self.actor_type is None or (actor is not None and actor.type == self.actor_type))
            and (self.actor_id is None or (actor is not None and actor.id == self.actor_id))
        )


_INVALID_INPUT = (2001, "Invalid Input Provided")
_INVALID_TIMES = (2004, "Invalid time values in 'since' and/or 'until' parameters")
_INVALID_RANGE = (2005, "Invalid Query Date Range")


def parse_query(
    params: QueryParams, *, now: datetime, root_id: str | None = None, filters: bool = True
) -> AuditQuery:
    """The query a request asks for. `filters=False` for the per-resource endpoints, which take only
    `limit`, `cursor`, `since` and `until`. Raises `AuditQueryError`."""
    limit = _limit(params.get("limit"))
    cursor = params.get("cursor") or None
    if cursor is not None:
        since, until, after = decode_cursor(cursor)
    else:
        since = _time(params.get("since"), "since") or now - DEFAULT_WINDOW
        until = _time(params.get("until"), "until") or now
        after = None
        if since > until:
            raise AuditQueryError(*_INVALID_RANGE, "since must not be after until")
        if until - since > MAX_RANGE:
            raise AuditQueryError(*_INVALID_RANGE, "until may not be more than 31 days after since")
    if not filters:
        return AuditQuery(since, until, limit, root_id=root_id, after=after)
    root_types = _choices(params.getlist("root_resource_types[]"), ROOT_RESOURCE_TYPES, "root_resource_types")
    actions = _choices(params.getlist("actions[]"), ACTIONS, "actions")
    method_type = _choice(params.get("method_type"), METHOD_TYPES, "method_type")
    actor_type = _choice(params.get("actor_type"), ACTOR_TYPES, "actor_type")
    truncated_token = params.get("method_truncated_token") or None
    actor_id = params.get("actor_id") or None
    if truncated_token is not None and method_type is None:
        raise AuditQueryError(*_INVALID_INPUT, "method_truncated_token must be qualified by method_type")
    if actor_id is not None and actor_type is None:
        raise AuditQueryError(*_INVALID_INPUT, "actor_id must be qualified by actor_type")
    return AuditQuery(
        since,
        until,
        limit,
        frozenset(ROOT_RESOURCE_TYPES[t] for t in root_types),
        root_id,
        frozenset(actions),
        method_type,
        truncated_token,
        actor_type,
        actor_id,
        after,
    )


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise AuditQueryError(*_INVALID_INPUT, "limit must be an integer") from None
    if limit < 1:
        raise AuditQueryError(*_INVALID_INPUT, "limit must be greater than 0")
    return min(limit, MAX_LIMIT)


def _time(raw: str | None, name: str) -> datetime | None:
    if raw is None or raw == "":
        return None
    try:
        # A '+' left unencoded in a query string arrives as a space.
        moment = datetime.fromisoformat(raw.strip().replace(" ", "+"))
    except ValueError:
        raise AuditQueryError(*_INVALID_TIMES, f"{name} is not an ISO 8601 date-time: {raw!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _choices(values: Iterable[str], allowed: Iterable[str], name: str) -> list[str]:
    allowed = tuple(allowed)
    chosen = [value for value in values if value]
    unknown = [value for value in chosen if value not in allowed]
    if unknown:
        reason = f"{name} must be among {', '.join(allowed)}; got {unknown[0]!r}"
        raise AuditQueryError(*_INVALID_INPUT, reason)
    return chosen


def _choice(value: str | None, allowed: Iterable[str], name: str) -> str | None:
    chosen = _choices([value] if value else [], allowed, name)
    return chosen[0] if chosen else None


def encode_cursor(query: AuditQuery, after: tuple[datetime, int]) -> str:
    """An opaque cursor carrying the query's range, so a defaulted `since` stays put across pages."""
    state = {
        "since": query.since.isoformat(),
        "until": query.until.isoformat(),
        "after": [after[0].isoformat(), after[1]],
    }
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, datetime, tuple[datetime, int]]:
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        since = datetime.fromisoformat(state["since"])
        until = datetime.fromisoformat(state["until"])
        after = (datetime.fromisoformat(state["after"][0]), int(state["after"][1]))
    except (binascii.Error, UnicodeError, ValueError, KeyError, IndexError, TypeError):
        raise AuditQueryError(*_INVALID_INPUT, "cursor is not a cursor this endpoint handed out") from None
    return since, until, after


# -- rendering -------------------------------------------------------------------------------------------


def render_reference(base: str, ref: AuditRef, *, html_base: str) -> dict[str, Any]:
    """`base`: the API's URL (for `self`); `html_base`: the account's web UI (for `html_url`)."""
    rendered: dict[str, Any] = {"id": ref.id, "type": ref.type, "summary": ref.summary}
    collection = _COLLECTIONS.get(ref.type)
    if collection is not None:
        rendered["self"] = f"{base}/{collection}/{ref.id}"
        rendered["html_url"] = f"{html_base}/{collection}/{ref.id}"
    return rendered


def render_record(base: str, record: AuditRecord, *, html_base: str) -> dict[str, Any]:
    """A record in PagerDuty's shape; optional parts are left out when empty, as PagerDuty does."""
    origin = record.origin

    def reference(ref: AuditRef) -> dict[str, Any]:
        return render_reference(base, ref, html_base=html_base)

    method: dict[str, Any] = {"type": origin.method}
    if origin.truncated_token is not None:
        method["truncated_token"] = origin.truncated_token
    details: dict[str, Any] = {"resource": reference(record.resource)}
    if record.fields:
        details["fields"] = [_render_field(field) for field in record.fields]
    if record.references:
        details["references"] = [_render_references(reference, change) for change in record.references]
    return {
        "id": record.id,
        "execution_time": format_time(record.execution_time),
        "execution_context": {"request_id": record.request_id, "remote_address": origin.remote_address},
        "actors": [reference(origin.actor)] if origin.actor is not None else [],
        "method": method,
        "root_resource": reference(record.root),
        "action": record.action,
        "details": details,
    }


def _render_references(
    reference: Callable[[AuditRef], dict[str, Any]], change: AuditReferences
) -> dict[str, Any]:
    rendered: dict[str, Any] = {"name": change.name}
    if change.added:
        rendered["added"] = [reference(ref) for ref in change.added]
    if change.removed:
        rendered["removed"] = [reference(ref) for ref in change.removed]
    return rendered


def _render_field(field: AuditField) -> dict[str, Any]:
    rendered: dict[str, Any] = {"name": field.name}
    if field.value is not None:
        rendered["value"] = field.value
    if field.before_value is not None:
        rendered["before_value"] = field.before_value
    return rendered
