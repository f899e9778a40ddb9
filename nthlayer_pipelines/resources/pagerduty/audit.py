"""PagerDuty's audit records and the reads of an incremental refresh, on `PagerDutyClient`'s plumbing.

`GET /audit/records` lists the account's changes newest first with cursor pagination; a range may span at
most 31 days, so a longer one is read in windows of 30 days, newest first. Only admin (or global) tokens may
list them and only on plans with Audit Trail: a 402 or 403 raises `AuditRecordsUnavailableError`, and the
caller reads a full snapshot instead (see `incremental.choose_refresh`).

`CursorPager` and `audit_windows` are pure; the rest sends through the client's `_request`, so retries,
the rate limit and the request counters are the client's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import ValidationError

from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient, PagerDutyError, parse_body
from nthlayer_pipelines.resources.pagerduty.incremental import (
    AccountProbe,
    IncrementalRead,
    IncrementalReadError,
    RefreshCursor,
    RefreshPolicy,
    cursor_after_incremental,
    merge_snapshot,
    plan_incremental_read,
    subdomain_from_html_url,
)
from nthlayer_pipelines.resources.pagerduty.models import AuditPage, AuditRecord, PagerDutyUser
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

AUDIT_PATH = "/audit/records"
AUDIT_PAGE_SIZE = 100
# PagerDuty: `until` may not be more than 31 days after `since`; a day less keeps clear of it after rounding.
AUDIT_WINDOW = timedelta(days=30)
SNAPSHOT_ROOT_TYPES = ("teams", "users")  # the records that can change a users/teams/members snapshot
# The totals probe: the snapshot's two listings that PagerDuty counts (`total=true`); members have no
# account-wide listing to count.
PROBE_LISTINGS = (("/users", "users"), ("/teams", "teams"))
PROBE_API_CALLS = len(PROBE_LISTINGS)


class AuditRecordsUnavailableError(PagerDutyError):
    """402 (the plan lacks Audit Trail) or 403 (not an admin's token): read a full snapshot instead."""

    hint = "; incremental refresh needs the audit records, so read a full snapshot"


def audit_windows(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """[since, until) cut into ranges PagerDuty accepts (`AUDIT_WINDOW` at most), newest first."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware datetimes")
    if since > until:
        raise ValueError(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
    windows: list[tuple[datetime, datetime]] = []
    end = until
    while True:
        start = max(since, end - AUDIT_WINDOW)
        windows.append((start, end))
        if start <= since:
            return windows
        end = start


def _time_param(moment: datetime, *, round_up: bool = False) -> str:
    """Milliseconds, as PagerDuty keeps `execution_time`; an `until` is rounded up so that records of
    its own millisecond are not left out of a half-open range."""
    moment = moment.astimezone(UTC)
    if round_up and moment.microsecond % 1000:
        moment += timedelta(microseconds=1000 - moment.microsecond % 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class CursorPager:
    """PagerDuty's cursor pagination as a state machine without I/O: `params()`, then `accept(body)` until
    `done`. Refuses an answer without `next_cursor`, and a cursor handed out twice (a loop)."""

    path: str
    params_base: dict[str, Any]
    cursor: str | None = None
    page_size: int = AUDIT_PAGE_SIZE
    done: bool = False
    pages: int = 0
    _cursors: set[str] = field(default_factory=set, repr=False)

    def params(self) -> dict[str, Any]:
        params = {**self.params_base, "limit": self.page_size}
        if self.cursor is not None:
            params["cursor"] = self.cursor
        return params

    def accept(self, body: dict[str, Any]) -> AuditPage:
        records = body.get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise self._error("the answer has no 'records' list of objects")
        if "next_cursor" not in body:
            raise self._error("the answer has no 'next_cursor': it does not paginate by cursor")
        next_cursor = body.get("next_cursor")
        if next_cursor is not None and not isinstance(next_cursor, str):
            raise self._error(f"next_cursor is {type(next_cursor).__name__}, not a string")
        page = AuditPage(
            records=tuple(self._record(item) for item in records),
            limit=body.get("limit") if isinstance(body.get("limit"), int) else None,
            next_cursor=next_cursor or None,
        )
        self.pages += 1
        if page.next_cursor is None:
            self.done = True
        elif page.next_cursor in self._cursors or page.next_cursor == self.cursor:
            raise self._error(f"next_cursor {page.next_cursor!r} was handed out before: the listing loops")
        else:
            self._cursors.add(page.next_cursor)
            self.cursor = page.next_cursor
        return page

    def _record(self, item: dict[str, Any]) -> AuditRecord:
        try:
            return AuditRecord.from_api(item)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors()
            )
            raise self._error(f"record {item.get('id')!r} does not parse: {problems}") from error

    def _error(self, message: str) -> PagerDutyError:
        return PagerDutyError(None, None, message, (), "GET", self.path)


def list_audit_records(
    client: PagerDutyClient,
    since: datetime,
    cursor: str | None = None,
    *,
    until: datetime | None = None,
    root_resource_types: Sequence[str] = SNAPSHOT_ROOT_TYPES,
    page_size: int = AUDIT_PAGE_SIZE,
) -> Iterator[AuditPage]:
    """Every page of the records with `since <= execution_time < until` (until: now), newest first.

    `cursor` resumes the newest window's listing from a `next_cursor` PagerDuty handed out for the same
    query. Raises `AuditRecordsUnavailableError` on 402 or 403."""
    until = until or datetime.now(UTC)
    for index, (start, end) in enumerate(audit_windows(since, until)):
        query = {"since": _time_param(start), "until": _time_param(end, round_up=True)}
        if root_resource_types:
            query["root_resource_types[]"] = list(root_resource_types)
        pager = CursorPager(AUDIT_PATH, query, cursor if index == 0 else None, page_size)
        while not pager.done:
            try:
                response = client._request("GET", AUDIT_PATH, params=pager.params())
            except PagerDutyError as error:
                if error.status in (402, 403):
                    raise AuditRecordsUnavailableError(
                        error.status, error.code, error.message, error.errors, "GET", AUDIT_PATH
                    ) from error
                raise
            yield pager.accept(parse_body(response, "GET", AUDIT_PATH))


def read_audit_records(
    client: PagerDutyClient,
    since: datetime,
    *,
    until: datetime,
    root_resource_types: Sequence[str] = SNAPSHOT_ROOT_TYPES,
) -> list[AuditRecord]:
    """All records of [since, until), newest first, each once."""
    records: dict[str, AuditRecord] = {}
    for page in list_audit_records(client, since, until=until, root_resource_types=root_resource_types):
        for record in page.records:
            records.setdefault(record.id, record)
    return list(records.values())


def get_user(client: PagerDutyClient, user_id: str) -> PagerDutyUser | None:
    """The user, or None when PagerDuty does not know the id (404: deleted)."""
    return client._get_one(f"/users/{quote(user_id, safe='')}", "user", PagerDutyUser.model_validate)


# ---- the reads of an incremental refresh -------------------------------------------------------------


def probe_account(client: PagerDutyClient) -> AccountProbe:
    """The account the token reads and its listing totals: `GET /users` and `GET /teams` with `limit=1`
    and `total=true`, read at once when the client allows (`PROBE_API_CALLS` calls). The one object each
    answer holds names the account's subdomain in its `html_url`.

    Raises `IncrementalReadError` when an answer holds no listing or no total: the probe cannot vouch for
    the stored snapshot, so only a full snapshot is sure."""

    def read(listing: tuple[str, str]) -> tuple[int, set[str]]:
        path, collection = listing
        response = client._request("GET", path, params={"limit": 1, "offset": 0, "total": "true"})
        body = parse_body(response, "GET", path)
        items, total = body.get(collection), body.get("total")
        if not isinstance(items, list) or not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise IncrementalReadError(
                f"GET {path}?total=true answered without a {collection!r} list and a total ({total!r}): "
                "the listing totals cannot vouch for the stored snapshot"
            )
        named: set[str] = set()
        for item in items:
            client.note_account(item)
            subdomain = subdomain_from_html_url(item.get("html_url")) if isinstance(item, dict) else None
            if subdomain is not None:
                named.add(subdomain)
        return total, named

    (users, from_users), (teams, from_teams) = client._map_concurrently(read, PROBE_LISTINGS)
    return AccountProbe(client.api_url, frozenset(from_users | from_teams), users, teams)


def read_planned(
    client: PagerDutyClient, plan: IncrementalRead, *, users_read: str = USERS_LISTING
) -> ObservedState:
    """What `plan` asks to read again, in the shape `merge_snapshot` takes.

    Raises `IncrementalReadError` when a team whose members are read is gone and the plan did not list the
    teams again: the records have not caught up, so only a full snapshot is sure. So too when the plan
    would list every user again but the snapshot's users were read through their teams: that account's
    listing is past the offset limit, and a full snapshot reads it the way it can."""
    if plan.relist_users and users_read != USERS_LISTING:
        raise IncrementalReadError(
            "more users changed than are read one by one, and this account's users cannot be listed in "
            "full: reading every team's members with their users"
        )
    teams = client.list_teams() if plan.relist_teams else []
    team_ids = {team.id for team in teams}
    if plan.relist_users:
        users = client.list_users()
    else:
        found = (get_user(client, user_id) for user_id in sorted(plan.user_reads))
        users = [user for user in found if user is not None]
    members: list[dict[str, object]] = []
    for team_id in sorted(plan.team_member_reads):
        if plan.relist_teams and team_id not in team_ids:
            continue  # deleted since: it has no members to read
        try:
            read = client.list_team_members(team_id)
        except PagerDutyError as error:
            if error.status == 404:
                raise IncrementalReadError(
                    f"team {team_id} is gone but no record says so yet: take a full snapshot"
                ) from error
            raise
        members.extend({"team_id": m.team_id, "user_id": m.user_id, "role": m.role.value} for m in read)
    return ObservedState(
        users=users_frame([{"user_id": u.id, "email": u.email, "name": u.name} for u in users]),
        teams=teams_frame([{"team_id": t.id, "name": t.name, "description": t.description} for t in teams]),
        memberships=memberships_frame(members),
    )


def members_users(client: PagerDutyClient, state: ObservedState, *, max_reads: int) -> ObservedState:
    """`state` with exactly the users its memberships name, as a full read through the teams holds them:
    a user who joined their first team since is read (`GET /users/{id}`, one call each), one who left
    their last team is dropped. A member PagerDuty no longer knows (404) means the records are behind;
    more newcomers than `max_reads` are cheaper read with every team's members."""
    users, members = state.users, state.memberships
    member_ids = set(members["user_id"])
    joined = sorted(member_ids - set(users["user_id"]))
    if len(joined) > max_reads:
        raise IncrementalReadError(
            f"{len(joined)} users joined their first team, more than are read one by one ({max_reads})"
        )
    found = {user_id: get_user(client, user_id) for user_id in joined}
    gone = sorted(user_id for user_id, user in found.items() if user is None)
    if gone:
        raise IncrementalReadError(
            f"members {', '.join(gone)} are not PagerDuty users but no record says they were deleted"
        )
    rows = [{"user_id": u.id, "email": u.email, "name": u.name} for u in found.values() if u is not None]
    kept = users[users["user_id"].isin(member_ids)]
    merged = pd.concat([kept, users_frame(rows)], ignore_index=True)
    typed = merged[list(users.columns)].astype(users_frame().dtypes.to_dict()).reset_index(drop=True)
    return ObservedState(users=typed, teams=state.teams, memberships=members)


@dataclass(frozen=True)
class IncrementalSnapshot:
    """An incremental refresh's outcome: the new snapshot, what the records asked for, the next cursor."""

    state: ObservedState
    plan: IncrementalRead
    cursor: RefreshCursor
    records: int  # audit records read, those already applied included
    api_calls: int


def incremental_snapshot(
    client: PagerDutyClient,
    previous: ObservedState,
    cursor: RefreshCursor,
    *,
    own_token_suffixes: Sequence[str] = (),
    policy: RefreshPolicy | None = None,
    until: datetime | None = None,
    users_read: str = USERS_LISTING,
    **plan_options: Any,
) -> IncrementalSnapshot:
    """Read the records since the cursor, read again what they name, and fold it into `previous`.

    Decide first with `incremental.choose_refresh`; on `AuditRecordsUnavailableError` or
    `IncrementalReadError` read a full snapshot instead. Records are read up to `until` (default: now).
    `plan_options` go to `plan_incremental_read` (`own_writes`). `users_read` is how `previous` holds its
    users: read through their teams, the snapshot stays the users on some team (`members_users`)."""
    policy = policy or RefreshPolicy()
    calls = client.api_calls
    until = until or datetime.now(UTC)
    records = read_audit_records(client, cursor.cursor_time, until=until)
    plan = plan_incremental_read(
        records,
        own_token_suffixes=own_token_suffixes,
        since=cursor.cursor_time,
        already_applied=cursor.seen_record_ids,
        policy=policy,
        **plan_options,
    )
    state = merge_snapshot(previous, read_planned(client, plan, users_read=users_read), plan)
    if users_read == USERS_TEAM_MEMBERS:
        state = members_users(client, state, max_reads=policy.max_user_reads)
    return IncrementalSnapshot(
        state=state,
        plan=plan,
        cursor=cursor_after_incremental(cursor, records, until, policy),
        records=len(records),
        api_calls=client.api_calls - calls,
    )
