"""The services kind's refresh: PagerDuty's services, escalation policies and schedules after the last read,
incremental from the audit records between full reads, as membership's snapshot is (`snapshot.py`).

The previous snapshot and its cursor come from the ledger (`Ledger.stored_services`), written in one row,
for the reasons `snapshot.py` gives. It reads everything when membership would: no cursor yet, the audit
records refused or the cursor too old, a full refresh due (`full_refresh_every_hours`), the nightly audit,
and the stored snapshot of another account. The account is checked on the objects the records sent to be
read again (their `html_url` names it), or, when they named none, on one call to the services listing,
whose total must also equal the services the snapshot holds.

`refresh_services` works without Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from nthlayer_pipelines.resources.ledger import Ledger, StoredServices
from nthlayer_pipelines.resources.pagerduty.audit import AuditRecordsUnavailableError
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from nthlayer_pipelines.resources.pagerduty.incremental import (
    PROVIDER,
    IncrementalReadError,
    RefreshCursor,
    RefreshDecision,
    RefreshMode,
    RefreshPolicy,
    choose_refresh,
    cursor_after_full,
    single_subdomain,
    token_suffix,
)
from nthlayer_pipelines.resources.pagerduty.models import ObservedServices
from nthlayer_pipelines.resources.pagerduty.services_audit import (
    incremental_services,
    probe_services,
    read_services_full,
)
from nthlayer_pipelines.resources.pagerduty.services_incremental import (
    ServicesAccount,
    services_account_mismatch,
    services_total_mismatch,
    subdomains_of,
)


@dataclass(frozen=True)
class ServicesRefresh:
    """A services refresh's snapshot and what it cost."""

    state: ObservedServices
    decision: RefreshDecision
    api_calls: int
    audit_records_read: int = 0
    objects_reread: int = 0  # objects read again by id
    kinds_relisted: tuple[str, ...] = ()  # kinds listed again in full by an incremental refresh
    drift_records: int = 0  # changes made outside nthlayer
    own_write_records: int = 0
    probe_api_calls: int = 0  # part of api_calls
    account: ServicesAccount | None = None
    stored: bool = False  # written to the ledger


def refresh_services(
    client: PagerDutyClient,
    ledger: Ledger,
    *,
    api_token: str,
    policy: RefreshPolicy | None = None,
    nightly: bool = False,
    store: bool = True,
) -> ServicesRefresh:
    """The services snapshot after the last one: incremental when the stored snapshot, its cursor, its
    account and the audit records allow it, else full. Stores it with its account and the next cursor
    unless `store` is false (a read-only plan starts from the stored snapshot and leaves it as it was)."""
    policy = policy or RefreshPolicy()
    started = client.api_calls
    now = datetime.now(UTC)
    stored = ledger.stored_services(PROVIDER)
    decision = choose_refresh(stored.cursor if stored else None, now=now, policy=policy, nightly=nightly)
    probe_calls = 0
    if stored is not None and not decision.full:
        if stored.state is None:
            decision = RefreshDecision(
                RefreshMode.FULL, "the stored services snapshot does not parse as this release reads it"
            )
        else:
            attempt = _incremental(
                client, ledger, stored, stored.state, decision, api_token, policy, now, store
            )
            if isinstance(attempt, ServicesRefresh):
                return replace(attempt, api_calls=client.api_calls - started)
            decision, probe_calls = attempt
    full_started = datetime.now(UTC)
    state = read_services_full(client)
    objects = (*state.services, *state.policies, *state.schedules)
    account = ServicesAccount(client.api_url, single_subdomain(subdomains_of(objects)))
    if store:
        ledger.save_services_refresh(
            cursor_after_full(PROVIDER, full_started, policy), state, account=account
        )
    return ServicesRefresh(
        state=state,
        decision=decision,
        api_calls=client.api_calls - started,
        probe_api_calls=probe_calls,
        account=account,
        stored=store,
    )


def _incremental(
    client: PagerDutyClient,
    ledger: Ledger,
    stored: StoredServices,
    previous: ObservedServices,
    decision: RefreshDecision,
    api_token: str,
    policy: RefreshPolicy,
    now: datetime,
    store: bool,
) -> ServicesRefresh | tuple[RefreshDecision, int]:
    """Read the records into the stored snapshot, check the account, store it; or the decision to read
    everything instead, with the calls the probe cost."""
    cursor: RefreshCursor = stored.cursor
    try:
        result = incremental_services(
            client,
            previous,
            cursor,
            own_token_suffixes=[token_suffix(api_token)],
            policy=policy,
            until=datetime.now(UTC),
        )
    except AuditRecordsUnavailableError as refused:
        return choose_refresh(cursor, now=now, policy=policy, audit_refused=refused.status), 0
    except IncrementalReadError as error:
        return RefreshDecision(RefreshMode.FULL, f"the audit records did not add up: {error}"), 0
    subdomains, probe_calls, mismatch = result.subdomains, 0, None
    if not subdomains:  # nothing read again names the account: one call to the listing does
        before = client.api_calls
        try:
            probe = probe_services(client)
        except IncrementalReadError as error:
            return RefreshDecision(RefreshMode.FULL, str(error)), client.api_calls - before
        probe_calls, subdomains = client.api_calls - before, probe.subdomains
        mismatch = services_total_mismatch(probe.total, result.state)
    mismatch = services_account_mismatch(stored.account, client.api_url, subdomains) or mismatch
    if mismatch is not None:
        return RefreshDecision(RefreshMode.FULL, mismatch), probe_calls
    account = ServicesAccount(client.api_url, single_subdomain(subdomains))
    if store:
        ledger.save_services_refresh(result.cursor, result.state, account=account)
    plan = result.plan
    return ServicesRefresh(
        state=result.state,
        decision=decision,
        api_calls=result.api_calls + probe_calls,
        audit_records_read=result.records,
        objects_reread=result.objects_read,
        kinds_relisted=tuple(kind.collection for kind in result.kinds_listed),
        drift_records=len(plan.foreign_record_ids),
        own_write_records=len(plan.own_record_ids),
        probe_api_calls=probe_calls,
        account=account,
        stored=store,
    )
