"""Snapshots of PagerDuty: users, teams, and every team's members with their roles.

One multi-asset reads the three tables together, because an incremental refresh reads them together: the
audit records since the last refresh say which users and teams changed, and only those are read again.

Where the previous snapshot comes from: the ledger, beside the refresh cursor, written in the same
transaction (`Ledger.save_refresh`). Not the IO manager's copy of these assets' last outputs: Dagster
offers no supported way for an unpartitioned asset to read its own previous value (self-dependencies
need partitions), and a pickle written by the IO manager after the step cannot be committed together
with the cursor, so a crash between the two would move the cursor past changes the snapshot lacks.

The snapshot is trusted only for the account it was read from: the ledger keeps the API URL and the
account's subdomain beside it, and before an incremental read a probe of the listing totals (two calls)
checks both, then checks the patched snapshot's row counts against the totals (see `incremental`).

PagerDuty lists at most 10,000 of anything and `GET /users` has no cursor, so the users listing's first
page (`total=true`) chooses the read: within the limit, the listing (every user); past it, each team's
members with their users (`include[]=users`), so the snapshot holds the users on some team. Which one is
`users_read`, in every table's metadata, on the users frame (`observed.mark_users_read`) and in the
stored account; the compares look up the desired emails such a snapshot lacks (`teams.lookups`).

The `read_*` and `refresh_pagerduty` functions work without Dagster (the benchmark calls them too).
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import dagster as dg

from nthlayer_pipelines.assets.tables import Table
from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.resources.ledger import Ledger, LedgerResource, StoredSnapshot
from nthlayer_pipelines.resources.pagerduty.audit import (
    AuditRecordsUnavailableError,
    incremental_snapshot,
    probe_account,
)
from nthlayer_pipelines.resources.pagerduty.client import OFFSET_LIMIT, PagerDutyClient
from nthlayer_pipelines.resources.pagerduty.incremental import (
    OWN_WRITE_WINDOW,
    PROVIDER,
    IncrementalReadError,
    RefreshCursor,
    RefreshDecision,
    RefreshMode,
    RefreshPolicy,
    SnapshotAccount,
    account_mismatch,
    choose_refresh,
    cursor_after_full,
    own_writes_from_outcomes,
    single_subdomain,
    token_suffix,
    totals_mismatch,
)
from nthlayer_pipelines.resources.pagerduty.observed import (
    USERS_LISTING,
    USERS_TEAM_MEMBERS,
    ObservedState,
    mark_users_read,
    memberships_frame,
    teams_frame,
    users_frame,
)
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.resources.pagerduty.services_incremental import ServicesAccount

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")

POOL = "pagerduty_api"  # one pool per provider key, so concurrent runs share its rate limit
AUDIT_MODE_TAG = ("nthlayer/mode", "audit")  # the nightly audit job's tag: it always reads everything
TABLES = ("pagerduty_users", "pagerduty_teams", "pagerduty_memberships")
R = TypeVar("R")


def _page_minimum(rows: int, page_size: int = 100) -> int:
    """Requests a paginated listing needs at the least: an empty listing still costs one."""
    return max(1, -(-rows // page_size))


def read_users(client: PagerDutyClient) -> Table:
    return users_frame([{"user_id": u.id, "email": u.email, "name": u.name} for u in client.list_users()])


def read_teams(client: PagerDutyClient) -> Table:
    return teams_frame(
        [{"team_id": t.id, "name": t.name, "description": t.description} for t in client.list_teams()]
    )


def read_memberships(client: PagerDutyClient, team_ids: Sequence[str]) -> tuple[Table, int]:
    """Every team's members, up to the client's `max_concurrency` teams at a time, in the order of
    `team_ids`; with the fewest calls their pages allow."""
    by_team = client.list_members_of_teams(team_ids)
    frame = memberships_frame(
        [
            {"team_id": m.team_id, "user_id": m.user_id, "role": m.role}
            for members in by_team.values()
            for m in members
        ]
    )
    return frame, sum(_page_minimum(len(members)) for members in by_team.values())


@dataclass(frozen=True)
class ObservedRefresh:
    """A refresh's snapshot and what it cost. `api_calls` and `api_calls_minimum` are per table for a full
    read; an incremental one cannot split its calls by table and reports them as `total_api_calls`."""

    state: ObservedState
    decision: RefreshDecision
    total_api_calls: int
    api_calls: dict[str, int] = field(default_factory=dict)
    api_calls_minimum: dict[str, int] = field(default_factory=dict)
    audit_records_read: int = 0
    teams_reread: int = 0  # teams whose members were read
    teams_relisted: bool = False
    drift_records: int = 0  # changes made outside nthlayer
    own_write_records: int = 0
    probe_api_calls: int = 0  # the totals probe's, part of total_api_calls
    account: SnapshotAccount | None = None  # the account the snapshot was read from, as stored

    @property
    def users_read(self) -> str:
        """How the users snapshot was read (`observed.USERS_LISTING` or `USERS_TEAM_MEMBERS`)."""
        return self.account.users_read if self.account is not None else USERS_LISTING


def read_memberships_with_users(client: PagerDutyClient, team_ids: Sequence[str]) -> tuple[Table, Table, int]:
    """Every team's members and, from the same pages (`include[]=users`), the users on at least one team:
    the memberships, those users, and the members' page minimum (as `read_memberships`)."""
    by_team = client.list_members_with_users_of_teams(team_ids)
    memberships = memberships_frame(
        [
            {"team_id": m.team_id, "user_id": m.user_id, "role": m.role}
            for members in by_team.values()
            for m, _ in members
        ]
    )
    users = {u.id: u for members in by_team.values() for _, u in members}
    frame = users_frame([{"user_id": u.id, "email": u.email, "name": u.name} for u in users.values()])
    return memberships, frame, sum(_page_minimum(len(members)) for members in by_team.values())


class FullRead(NamedTuple):
    """A full snapshot, its calls and page minimum per table, and the account subdomains its answers
    named (one for a sound account); how its users were read and how many the account lists."""

    state: ObservedState
    api_calls: dict[str, int]
    api_calls_minimum: dict[str, int]
    subdomains: frozenset[str]
    users_read: str = USERS_LISTING
    account_users: int = 0


def read_full(client: PagerDutyClient) -> FullRead:
    """Every team and membership, and the users: every one from the listing when its total is within
    PagerDuty's offset limit, else those on some team, read with their teams' members. Calls and the
    minimum per table for the read chosen: the listing's pages; or for users the one page that counted
    them, for memberships each team's member pages (which carry the users too)."""
    calls: dict[str, int] = {}
    start = client.api_calls
    listed, total = client.list_users_within_limit()
    calls["pagerduty_users"], start = client.api_calls - start, client.api_calls
    teams = read_teams(client)
    calls["pagerduty_teams"], start = client.api_calls - start, client.api_calls
    team_ids = [str(t) for t in teams["team_id"]]
    if listed is not None:
        users = users_frame([{"user_id": u.id, "email": u.email, "name": u.name} for u in listed])
        memberships, members_minimum = read_memberships(client, team_ids)
        users_read, users_minimum = USERS_LISTING, _page_minimum(len(users))
    else:
        memberships, users, members_minimum = read_memberships_with_users(client, team_ids)
        users_read, users_minimum = USERS_TEAM_MEMBERS, 1
    calls["pagerduty_memberships"] = client.api_calls - start
    minimum = {
        "pagerduty_users": users_minimum,
        "pagerduty_teams": _page_minimum(len(teams)),
        "pagerduty_memberships": members_minimum,
    }
    account_users = len(users) if listed is not None or total is None else total
    mark_users_read(users, users_read, account_users)
    state = ObservedState(users=users, teams=teams, memberships=memberships)
    # The client notes the subdomain of every object it parses: the account comes at no extra call.
    return FullRead(state, calls, minimum, client.account_subdomains, users_read, account_users)


def refresh_pagerduty(
    client: PagerDutyClient,
    ledger: Ledger,
    *,
    api_token: str,
    policy: RefreshPolicy | None = None,
    nightly: bool = False,
    store: bool = True,
) -> ObservedRefresh:
    """The snapshot after the last one: incremental when the cursor, the stored snapshot, its account and
    the audit records allow it (see `incremental.choose_refresh` and `incremental.account_mismatch`), else
    full. Stores the snapshot, its account and the next cursor in the ledger before returning, unless
    `store` is false (a read-only plan: it may start from the stored snapshot, and leaves it and the
    cursor as they were)."""
    policy = policy or RefreshPolicy()
    started = client.api_calls
    now = datetime.now(UTC)
    cursor = ledger.refresh_cursor(PROVIDER)
    decision = choose_refresh(cursor, now=now, policy=policy, nightly=nightly)
    stored = None if decision.full else ledger.stored_snapshot(PROVIDER)
    if not decision.full and stored is None:
        decision = RefreshDecision(RefreshMode.FULL, "no stored snapshot to read changes into")
    probe_calls = 0
    if cursor is not None and stored is not None and not decision.full:
        attempt = _incremental(client, ledger, cursor, stored, decision, api_token, policy, now, store)
        if isinstance(attempt.result, ObservedRefresh):
            return replace(attempt.result, total_api_calls=client.api_calls - started)
        decision, probe_calls = attempt.result, attempt.probe_calls
    full_started = datetime.now(UTC)
    state, calls, minimum, subdomains, users_read, account_users = read_full(client)
    account = SnapshotAccount(
        client.api_url, single_subdomain(subdomains), account_users, len(state.teams), users_read
    )
    if store:
        ledger.save_refresh(cursor_after_full(PROVIDER, full_started, policy), state, account=account)
    return ObservedRefresh(
        state=state,
        decision=decision,
        total_api_calls=client.api_calls - started,
        api_calls=calls,
        api_calls_minimum=minimum,
        teams_reread=len(state.teams),
        teams_relisted=True,
        probe_api_calls=probe_calls,
        account=account,
    )


@dataclass(frozen=True)
class _Attempt:
    """An incremental attempt: the refresh it stored, or the decision to read everything instead."""

    result: ObservedRefresh | RefreshDecision
    probe_calls: int


def _incremental(
    client: PagerDutyClient,
    ledger: Ledger,
    cursor: RefreshCursor,
    stored: StoredSnapshot,
    decision: RefreshDecision,
    api_token: str,
    policy: RefreshPolicy,
    now: datetime,
    store: bool,
) -> _Attempt:
    """Probe the account, read the audit records into the stored snapshot, check its counts, store it.
    The refresh returned counts the calls from here (`refresh_pagerduty` counts them from its start)."""
    started = client.api_calls
    # The probe comes first: a snapshot of another account is refused before its records are read. The
    # records are read up to the moment the probe starts, so the totals and the records describe the
    # account at the same moment but for the probe's own round trip (a change in it reads everything).
    until = datetime.now(UTC)
    try:
        probe = probe_account(client)
    except IncrementalReadError as error:
        return _Attempt(RefreshDecision(RefreshMode.FULL, str(error)), client.api_calls - started)
    probe_calls = client.api_calls - started

    def full(reason: str) -> _Attempt:
        return _Attempt(RefreshDecision(RefreshMode.FULL, reason), probe_calls)

    mismatch = account_mismatch(stored.account, probe)
    if mismatch is not None:
        return full(mismatch)
    users_read = stored.account.users_read if stored.account is not None else USERS_LISTING
    # The read follows the account's size, as a full read would choose it.
    if users_read != USERS_LISTING and probe.users <= OFFSET_LIMIT:
        return full(f"the account lists {probe.users} users now, few enough to list them all")
    if users_read == USERS_LISTING and probe.users > OFFSET_LIMIT:
        return full(f"the account lists {probe.users} users now, more than its listing reaches")
    own_writes = own_writes_from_outcomes(ledger.audit(since=cursor.cursor_time - OWN_WRITE_WINDOW))
    try:
        result = incremental_snapshot(
            client,
            stored.state,
            cursor,
            own_token_suffixes=[token_suffix(api_token)],
            own_writes=own_writes,
            policy=policy,
            until=until,
            users_read=users_read,
        )
    except AuditRecordsUnavailableError as refused:
        return _Attempt(
            choose_refresh(cursor, now=now, policy=policy, audit_refused=refused.status), probe_calls
        )
    except IncrementalReadError as error:
        return full(f"the audit records did not add up: {error}")
    state = result.state
    mismatch = totals_mismatch(probe, users=len(state.users), teams=len(state.teams), users_read=users_read)
    if mismatch is not None:
        return full(mismatch)
    account = probe.account(users_read)
    mark_users_read(state.users, users_read, probe.users)
    if store:
        ledger.save_refresh(result.cursor, state, account=account)
    plan = result.plan
    refresh = ObservedRefresh(
        state=state,
        decision=decision,
        total_api_calls=client.api_calls - started,
        audit_records_read=result.records,
        teams_reread=len(plan.team_member_reads),
        teams_relisted=plan.relist_teams,
        drift_records=len(plan.foreign_record_ids),
        own_write_records=len(plan.own_record_ids),
        probe_api_calls=probe_calls,
        account=account,
    )
    return _Attempt(refresh, probe_calls)


def run_refresh(
    refresh: Callable[..., R],
    context: dg.AssetExecutionContext,
    pagerduty: PagerDutyResource,
    ledger: LedgerResource,
) -> R:
    """A kind's refresh (`refresh_pagerduty`, the services kind's `refresh_services`) as the run asks for
    it: everything in the nightly audit, and nothing stored when the ledger is read-only (`nthlayer plan`)."""
    nightly = context.run.tags.get(AUDIT_MODE_TAG[0]) == AUDIT_MODE_TAG[1]
    with ledger.open() as store, pagerduty.client() as client:
        return refresh(
            client,
            store,
            api_token=pagerduty.api_token,
            policy=pagerduty.refresh_policy(),
            nightly=nightly,
            store=not ledger.read_only,
        )


def account_label(account: SnapshotAccount | ServicesAccount | None) -> str:
    """The account a snapshot belongs to, for people: `acme.pagerduty.com via https://api...`."""
    if account is None:
        return "unknown"
    name = f"{account.subdomain}.pagerduty.com" if account.subdomain else "an account its answers do not name"
    return f"{name} via {account.api_url}"


def _metadata(refresh: ObservedRefresh, table: str, frame: Table) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "row_count": len(frame),
        "refresh": refresh.decision.mode.value,
        "refresh_reason": refresh.decision.reason,
        "refresh_api_calls": refresh.total_api_calls,
        "audit_records_read": refresh.audit_records_read,
        "teams_reread": refresh.teams_reread,
        "probe_api_calls": refresh.probe_api_calls,  # included in refresh_api_calls
        "account": account_label(refresh.account),
        "users_read": refresh.users_read,
        "account_users": refresh.account.users if refresh.account is not None else len(refresh.state.users),
    }
    if refresh.decision.full:
        metadata["api_calls"] = refresh.api_calls[table]
        metadata["api_calls_minimum"] = refresh.api_calls_minimum[table]
    else:
        metadata["api_calls"] = refresh.total_api_calls  # the whole refresh's: it reads the tables together
        metadata["drift_records"] = refresh.drift_records
        metadata["own_write_records"] = refresh.own_write_records
    return metadata


@dg.multi_asset(
    name="pagerduty_snapshot",
    outs={
        "pagerduty_users": dg.AssetOut(
            group_name="observed",
            kinds={"pagerduty"},
            description=(
                "PagerDuty's users (id, email, name); emails join users across providers. Every user when "
                "the account lists 10,000 or fewer, else those on some team (metadata `users_read`)."
            ),
        ),
        "pagerduty_teams": dg.AssetOut(
            group_name="observed",
            kinds={"pagerduty"},
            description="Every PagerDuty team (id, name, description).",
        ),
        "pagerduty_memberships": dg.AssetOut(
            group_name="observed",
            kinds={"pagerduty"},
            description="Every team's members with their roles.",
        ),
    },
    pool=POOL,
    description=(
        "PagerDuty's users, teams and memberships. Incremental between full reads: the audit records since "
        "the last refresh, then only the users and teams they name; in full on the first refresh, when the "
        "audit records are refused or too far back, when the stored snapshot is of another account or its "
        "patched counts miss the listing totals, every full_refresh_every_hours, and in the nightly audit."
    ),
)
def pagerduty_snapshot(
    context: dg.AssetExecutionContext, pagerduty: PagerDutyResource, ledger: LedgerResource
) -> Iterator[dg.Output[Table]]:
    refresh = run_refresh(refresh_pagerduty, context, pagerduty, ledger)
    concurrency = pagerduty.max_concurrency
    state = refresh.state
    context.log.info(
        "%s refresh of %s (%s): %d API calls (%d for the totals probe), %d audit records, %d teams' "
        "members read",
        refresh.decision.mode.value,
        account_label(refresh.account),
        refresh.decision.reason,
        refresh.total_api_calls,
        refresh.probe_api_calls,
        refresh.audit_records_read,
        refresh.teams_reread,
    )
    yield dg.Output(
        state.users, "pagerduty_users", metadata=_metadata(refresh, "pagerduty_users", state.users)
    )
    yield dg.Output(
        state.teams, "pagerduty_teams", metadata=_metadata(refresh, "pagerduty_teams", state.teams)
    )
    members = state.memberships
    yield dg.Output(
        members,
        "pagerduty_memberships",
        metadata={
            **_metadata(refresh, "pagerduty_memberships", members),
            "team_count": len(state.teams),
            "max_concurrency": concurrency,
            "roles": dg.MetadataValue.json(
                {str(k): int(v) for k, v in members["role"].value_counts().sort_index().items()}
            ),
        },
    )
