"""The services kind's refresh over loopback: a full read first, then incremental ones that read the audit
records of services, escalation policies and schedules and only what they name, and a full one whenever an
incremental read cannot be trusted; a read-only plan reads the stored snapshot and writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from nthlayer_pipelines.assets.pagerduty.services.assets import pagerduty_services
from nthlayer_pipelines.core.model import DesiredState, Service, Tier
from nthlayer_pipelines.resources.ledger import Ledger, LedgerResource
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from nthlayer_pipelines.resources.pagerduty.incremental import PROVIDER
from nthlayer_pipelines.resources.pagerduty.models import (
    EscalationRuleSpec,
    ObservedServices,
    PagerDutyTarget,
)
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.resources.pagerduty.services_audit import read_services_full
from nthlayer_pipelines.sandbox import RunningSandbox, generate_org, running_sandbox
from nthlayer_pipelines.sandbox.pagerduty.models import USER_TARGET, EscalationTarget, RuleSpec

TOKEN = "nthlayer-services-key-5c3e"
OTHER_TOKEN = "nthlayer-services-other-key-9a41"
TEAMS = 150
DECLARED = DesiredState(
    services=(Service(name="api", team="any", tier=Tier.CRITICAL, display_name="Alpha 0001 API"),)
)
SERVICES_KEY = dg.AssetKey("pagerduty_services")
FIRST = "no refresh cursor yet: the first refresh reads everything"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(generate_org(TEAMS, 3, seed=17), tokens={"pagerduty": TOKEN}) as running:
        yield running


def refresh(
    sandbox: RunningSandbox,
    ledger_url: str,
    *,
    desired: DesiredState = DECLARED,
    token: str = TOKEN,
    read_only: bool = False,
    tags: dict[str, str] | None = None,
    **config: Any,
) -> dg.ExecuteInProcessResult:
    """The asset, after one that gives it the desired state."""

    @dg.asset(name="desired_state")
    def given_desired_state() -> DesiredState:
        return desired

    return dg.materialize(
        [given_desired_state, pagerduty_services],
        resources={
            "pagerduty": PagerDutyResource(
                api_url=sandbox.pagerduty_url, api_token=token, read_only=read_only, **config
            ),
            "ledger": LedgerResource(url=ledger_url, read_only=read_only),
            "io_manager": dg.mem_io_manager,
        },
        tags=tags,
    )


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == SERVICES_KEY]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def output(result: dg.ExecuteInProcessResult) -> ObservedServices:
    return result.output_for_node("pagerduty_services")


def full_read(sandbox: RunningSandbox, token: str = TOKEN) -> ObservedServices:
    with PagerDutyClient(sandbox.pagerduty_url, token) as client:
        return read_services_full(client)


def assert_same(actual: ObservedServices, expected: ObservedServices) -> None:
    """The same objects, in whatever order they were read."""
    for kind in ("services", "policies", "schedules"):
        got = sorted(getattr(actual, kind), key=lambda o: o.id)
        want = sorted(getattr(expected, kind), key=lambda o: o.id)
        assert got == want, kind


def served(sandbox: RunningSandbox) -> list[tuple[str, str]]:
    """The requests PagerDuty served since the last clear: endpoint and the path's last part."""
    return [(r["endpoint"], r["path"].rsplit("/", 1)[-1]) for r in sandbox.requests("pagerduty")]


def test_a_timeout_changed_by_someone_else_costs_the_audit_read_and_one_get(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    sandbox.clear_requests()
    first = metadata(refresh(sandbox, ledger_url))
    assert (first["refresh"], first["refresh_reason"]) == ("full", FIRST)
    assert first["api_calls"] == len(served(sandbox)) == 6, "150 of each kind in pages of 100"
    assert (first["services"], first["escalation_policies"], first["schedules"]) == (TEAMS,) * 3

    org = sandbox.state.pagerduty
    service = sorted(org.services)[7]
    org.update_service(service, acknowledgement_timeout=120)  # a person, in the web UI: drift
    sandbox.clear_requests()
    result = refresh(sandbox, ledger_url)

    assert served(sandbox) == [("GET /audit/records", "records"), ("GET /services/{id}", service)]
    second = metadata(result)
    assert (second["refresh"], second["api_calls"], second["probe_api_calls"]) == ("incremental", 2, 0)
    assert (second["audit_records_read"], second["objects_reread"]) == (1, 1)
    assert (second["drift_records"], second["own_write_records"], second["kinds_relisted"]) == (1, 0, "")
    assert second["account"] == f"{org.subdomain}.pagerduty.com via {sandbox.pagerduty_url}"
    state = output(result)
    assert next(s for s in state.services if s.id == service).acknowledgement_timeout == 120
    assert_same(state, full_read(sandbox))


def test_a_policy_changed_by_someone_else_costs_the_audit_read_and_one_get(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    refresh(sandbox, ledger_url)
    org = sandbox.state.pagerduty
    policy = sorted(org.escalation_policies)[3]
    user = sorted(org.users)[0]
    org.update_escalation_policy(
        policy, num_loops=3, rules=[RuleSpec((EscalationTarget(USER_TARGET, user),), 7)]
    )
    sandbox.clear_requests()
    result = refresh(sandbox, ledger_url)
    assert served(sandbox) == [("GET /audit/records", "records"), ("GET /escalation_policies/{id}", policy)]
    changed = next(p for p in output(result).policies if p.id == policy)
    assert (changed.num_loops, [r.escalation_delay_in_minutes for r in changed.rules]) == (3, [7])
    assert metadata(result)["objects_reread"] == 1
    assert_same(output(result), full_read(sandbox))


def test_our_own_writes_are_read_and_a_repointed_service_reads_both_policies(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    refresh(sandbox, ledger_url)
    org = sandbox.state.pagerduty
    service = sorted(org.services)[0]
    left = org.services[service].escalation_policy_id
    joined = next(p for p in sorted(org.escalation_policies) if p != left)
    with PagerDutyClient(sandbox.pagerduty_url, TOKEN) as client:  # nthlayer's own token: not drift
        client.update_service(service, escalation_policy_id=joined)
        rule = EscalationRuleSpec(
            escalation_delay_in_minutes=9,
            targets=(PagerDutyTarget(id=sorted(org.users)[1], type=USER_TARGET),),
        )
        created = client.create_escalation_policy("Made by nthlayer", team_id=None, num_loops=1, rules=[rule])
    sandbox.clear_requests()
    result = refresh(sandbox, ledger_url)
    assert sorted(served(sandbox)) == sorted(
        [
            ("GET /audit/records", "records"),
            ("GET /services/{id}", service),
            ("GET /escalation_policies/{id}", created.id),
            ("GET /escalation_policies/{id}", left),
            ("GET /escalation_policies/{id}", joined),
        ]
    )
    facts = metadata(result)
    assert (facts["own_write_records"], facts["drift_records"], facts["objects_reread"]) == (2, 0, 4)
    state = output(result)
    assert service in next(p for p in state.policies if p.id == joined).service_ids
    assert service not in next(p for p in state.policies if p.id == left).service_ids
    assert_same(state, full_read(sandbox))


def test_a_quiet_refresh_checks_the_account_with_one_call_and_changes_nothing(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    before = output(refresh(sandbox, ledger_url))
    sandbox.clear_requests()
    result = refresh(sandbox, ledger_url)
    assert served(sandbox) == [("GET /audit/records", "records"), ("GET /services", "services")]
    assert sandbox.requests("pagerduty")[1]["query"]["limit"] == ["1"]
    facts = metadata(result)
    assert (facts["refresh"], facts["api_calls"], facts["probe_api_calls"]) == ("incremental", 2, 1)
    assert output(result) == before


def test_without_a_declared_service_nothing_is_read_or_stored(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    sandbox.clear_requests()
    result = refresh(sandbox, ledger_url, desired=DesiredState())
    assert metadata(result) == {"read": False, "api_calls": 0}
    assert output(result) == ObservedServices()
    assert served(sandbox) == []
    with Ledger(ledger_url) as ledger:
        assert ledger.stored_services(PROVIDER) is None


# ---- every way back to a full read -------------------------------------------------------------------


def test_the_nightly_audit_reads_everything(sandbox: RunningSandbox, ledger_url: str) -> None:
    refresh(sandbox, ledger_url)
    facts = metadata(refresh(sandbox, ledger_url, tags={"nthlayer/mode": "audit"}))
    assert (facts["refresh"], facts["refresh_reason"]) == (
        "full",
        "the nightly audit always reads everything",
    )


@pytest.mark.parametrize(
    ("audit_records", "reason"),
    [
        ("payment_required", "PagerDuty answered 402: the account's plan lacks Audit Trail"),
        ("forbidden", "PagerDuty answered 403: only an admin's or a global API token may list audit records"),
    ],
)
def test_refused_audit_records_fall_back_to_a_full_read(
    ledger_url: str, audit_records: str, reason: str
) -> None:
    org = generate_org(10, 3, seed=3)
    with running_sandbox(org, tokens={"pagerduty": TOKEN}, audit_records=audit_records) as sandbox:
        refresh(sandbox, ledger_url)
        org.pagerduty.update_service(sorted(org.pagerduty.services)[0], auto_resolve_timeout=None)
        sandbox.clear_requests()
        result = refresh(sandbox, ledger_url)
        calls = len(served(sandbox))
        assert_same(output(result), full_read(sandbox))
    facts = metadata(result)
    assert (facts["refresh"], facts["refresh_reason"]) == ("full", reason)
    assert facts["api_calls"] == calls == 1 + 3, "the refused records, then a listing of each kind"


def shift_cursor(ledger_url: str, **changes: datetime) -> None:
    with Ledger(ledger_url) as ledger:
        stored = ledger.stored_services(PROVIDER)
        assert stored is not None and stored.state is not None and stored.account is not None
        ledger.save_services_refresh(replace(stored.cursor, **changes), stored.state, account=stored.account)


def test_a_cursor_older_than_allowed_falls_back_to_a_full_read(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    refresh(sandbox, ledger_url)
    shift_cursor(ledger_url, cursor_time=datetime.now(UTC) - timedelta(days=8))
    facts = metadata(refresh(sandbox, ledger_url))
    assert facts["refresh"] == "full"
    assert facts["refresh_reason"].endswith("old, more than the 7 days allowed")


def test_a_full_refresh_is_due_after_the_configured_period(sandbox: RunningSandbox, ledger_url: str) -> None:
    refresh(sandbox, ledger_url)
    shift_cursor(ledger_url, last_full_refresh_at=datetime.now(UTC) - timedelta(hours=2))
    assert metadata(refresh(sandbox, ledger_url))["refresh"] == "incremental"
    hourly = metadata(refresh(sandbox, ledger_url, full_refresh_every_hours=1.0))
    assert (hourly["refresh"], hourly["refresh_reason"]) == (
        "full",
        "the last full refresh was 2 h ago; one is due every 1 h",
    )


def test_a_token_of_another_account_on_the_same_url_is_read_in_full(ledger_url: str) -> None:
    with running_sandbox(generate_org(10, 3, seed=3), tokens={"pagerduty": TOKEN}) as first:
        refresh(first, ledger_url)
        port, subdomain = int(first.url.rsplit(":", 1)[1]), first.state.pagerduty.subdomain
    other = generate_org(10, 3, seed=4)  # another account of the same size, and quiet since
    with running_sandbox(other, port=port, tokens={"pagerduty": OTHER_TOKEN}) as second:
        result = refresh(second, ledger_url, token=OTHER_TOKEN)
        expected = full_read(second, OTHER_TOKEN)
    facts = metadata(result)
    assert (facts["refresh"], facts["refresh_reason"]) == (
        "full",
        f"the stored snapshot is from another account ({subdomain}.pagerduty.com); the token now reads "
        f"{other.pagerduty.subdomain}.pagerduty.com",
    )
    assert facts["probe_api_calls"] == 1, "no record named an object: the listing probe named the account"
    assert_same(output(result), expected)


def test_a_service_whose_record_was_lost_is_caught_by_the_total(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    refresh(sandbox, ledger_url)
    org = sandbox.state.pagerduty
    org.audit.recording = False  # a service created whose record PagerDuty has yet to show
    org.add_service("Unrecorded API", sorted(org.escalation_policies)[0])
    org.audit.recording = True
    result = refresh(sandbox, ledger_url)
    facts = metadata(result)
    assert (facts["refresh"], facts["refresh_reason"]) == (
        "full",
        f"the listing total does not add up: PagerDuty lists {TEAMS + 1} services, the snapshot brought up "
        f"to date from the audit records holds {TEAMS}",
    )
    assert_same(output(result), full_read(sandbox))


# ---- read-only: `nthlayer plan` ---------------------------------------------------------------------------


def test_a_read_only_refresh_starts_from_the_stored_snapshot_and_writes_nothing(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    refresh(sandbox, ledger_url)
    with Ledger(ledger_url) as ledger:
        stored = ledger.stored_services(PROVIDER)
    org = sandbox.state.pagerduty
    service = sorted(org.services)[2]
    org.update_service(service, acknowledgement_timeout=300)
    sandbox.clear_requests()
    result = refresh(sandbox, ledger_url, read_only=True)
    assert served(sandbox) == [("GET /audit/records", "records"), ("GET /services/{id}", service)]
    facts = metadata(result)
    assert (facts["refresh"], facts["snapshot_stored"]) == ("incremental", False)
    assert_same(output(result), full_read(sandbox))
    with Ledger(ledger_url) as ledger:
        assert ledger.stored_services(PROVIDER) == stored, "neither the snapshot nor its cursor moved"


def test_a_read_only_refresh_without_a_stored_snapshot_reads_in_full_and_stores_nothing(
    sandbox: RunningSandbox, ledger_url: str
) -> None:
    Ledger(ledger_url).dispose()  # an empty ledger at the head revision
    facts = metadata(refresh(sandbox, ledger_url, read_only=True))
    assert (facts["refresh"], facts["refresh_reason"], facts["snapshot_stored"]) == ("full", FIRST, False)
    with Ledger(ledger_url) as ledger:
        assert ledger.stored_services(PROVIDER) is None
