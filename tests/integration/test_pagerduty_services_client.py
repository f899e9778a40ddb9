"""PagerDutyClient's services, escalation policies and schedules over real loopback HTTP, against the
sandbox: a seed of services on policies on schedules, and a generated org past one page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nthlayer_pipelines.resources.pagerduty.client import (
    PagerDutyClient,
)
from nthlayer_pipelines.resources.pagerduty.models import PagerDutyService, PagerDutyUrgencyRule
from nthlayer_pipelines.sandbox import (
    RunningSandbox,
    SandboxOrg,
    generate_org,
    org_from_seed,
    running_sandbox,
)

TOKEN = "pd-services-secret-5c1e"
TOKENS = {"pagerduty": TOKEN, "cortex": "cortex-services-secret-0b2d"}

SEED: dict[str, Any] = {
    "pagerduty": {
        "users": [
            {"name": "Alice Example", "email": "alice@example.com"},
            {"name": "Bob Example", "email": "bob@example.com"},
            {"name": "Carol Example", "email": "carol@example.com"},
        ],
        "teams": [
            {"name": "Payments", "members": [{"email": "alice@example.com", "role": "manager"}]},
            {"name": "Search", "members": [{"email": "bob@example.com", "role": "manager"}]},
        ],
        "schedules": [
            {"name": "Payments Primary", "teams": ["Payments"], "users": ["carol@example.com"]},
        ],
        "escalation_policies": [
            {
                "name": "Payments (critical)",
                "teams": ["Payments"],
                "num_loops": 2,
                "rules": [
                    {"escalation_delay_in_minutes": 10, "targets": [{"schedule": "Payments Primary"}]},
                    {
                        "escalation_delay_in_minutes": 20,
                        "targets": ["bob@example.com", {"schedule": "Payments Primary"}, "alice@example.com"],
                    },
                ],
            },
            # Look-alikes of the name above: a query for it finds them all.
            {"name": "Payments (critical) old", "teams": ["Payments"], "targets": ["alice@example.com"]},
            {"name": "Old Payments (critical)", "targets": ["alice@example.com"]},
            {"name": "Search On-Call", "teams": ["Search"], "targets": ["bob@example.com"]},
        ],
        "services": [
            {
                "name": "Payment API",
                "escalation_policy": "Payments (critical)",
                "urgency": "high",
                "acknowledgement_timeout": 1800,
            },
            {
                "name": "Ledger",
                "escalation_policy": "Payments (critical)",
                "auto_resolve_timeout": None,
                "status": "critical",  # open incidents: a status no client may echo back
            },
            {"name": "Search API", "escalation_policy": "Search On-Call", "urgency": "low"},
        ],
    }
}


@pytest.fixture
def org() -> SandboxOrg:
    return org_from_seed(SEED, source="test_pagerduty_services_client")


@pytest.fixture
def sandbox(org: SandboxOrg) -> Iterator[RunningSandbox]:
    with running_sandbox(org, tokens=TOKENS) as running:
        yield running


def client_for(sandbox: RunningSandbox, **options: Any) -> PagerDutyClient:
    options = {"backoff_base_seconds": 0.001, "max_backoff_seconds": 2.0, **options}
    return PagerDutyClient(sandbox.pagerduty_url, TOKEN, **options)


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[PagerDutyClient]:
    with client_for(sandbox) as opened:
        yield opened


def ids(org: SandboxOrg) -> dict[str, str]:
    """Every object's id by its name (users by email)."""
    pd = org.pagerduty
    found = {u.email: u.id for u in pd.users.values()}
    for objects in (pd.teams, pd.schedules, pd.escalation_policies, pd.services):
        found |= {item.name: item.id for item in objects.values()}
    return found


# ---- reads -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4])
def test_services_policies_and_schedules_are_read_past_one_page(concurrency: int) -> None:
    org = generate_org(130, 4, seed=5)
    with (
        running_sandbox(org, tokens=TOKENS) as sandbox,
        client_for(sandbox, max_concurrency=concurrency) as client,
    ):
        services = client.list_services()
        policies = client.list_escalation_policies()
        schedules = client.list_schedules()
        requests = sandbox.requests("pagerduty")
    pd = org.pagerduty
    assert sorted(s.id for s in services) == sorted(pd.services)
    assert sorted(p.id for p in policies) == sorted(pd.escalation_policies)
    assert sorted(s.id for s in schedules) == sorted(pd.schedules)
    assert [s.name for s in services] == sorted((s.name for s in services), key=str.casefold)
    # Two pages of 100 each, never more, whether read one after the other or at once:
    for path in ("/services", "/escalation_policies", "/schedules"):
        pages = [r for r in requests if r["path"] == "/pagerduty" + path]
        assert sorted(r["query"]["offset"][0] for r in pages) == ["0", "100"]
        assert {r["query"]["limit"][0] for r in pages} == {"100"}
        assert all("include[]" not in r["query"] for r in pages)

    by_policy = {p.id: p for p in policies}
    for service in services:
        policy = by_policy[service.escalation_policy_id]
        assert service.id in policy.service_ids
        assert service.team_ids == policy.team_ids
    first = pd.escalation_policies[policies[0].id]
    assert [[(t.type, t.id) for t in r.targets] for r in policies[0].rules] == [
        [(t.type, t.id) for t in rule.targets] for rule in first.rules
    ]
    assert {t.type for p in policies for r in p.rules for t in r.targets} == {
        "user_reference",
        "schedule_reference",
    }
    assert client.account_subdomains == {pd.subdomain}  # every object's html_url names the account


def test_a_service_policy_and_schedule_are_read_as_pagerduty_holds_them(
    client: PagerDutyClient, org: SandboxOrg
) -> None:
    known = ids(org)
    payment = client.get_service(known["Payment API"])
    assert payment == PagerDutyService(
        id=known["Payment API"],
        name="Payment API",
        status="active",
        escalation_policy_id=known["Payments (critical)"],
        team_ids=(known["Payments"],),
        acknowledgement_timeout=1800,
        auto_resolve_timeout=14400,
        urgency_rule=PagerDutyUrgencyRule(type="constant", urgency="high"),
        html_url=f"{org.pagerduty.html_base}/services/{known['Payment API']}",
    )
    ledger = client.get_service(known["Ledger"])
    assert ledger is not None
    assert (ledger.status, ledger.auto_resolve_timeout) == ("critical", None)
    assert client.list_services(team_ids=[known["Search"]]) == [client.get_service(known["Search API"])]

    policy = client.get_escalation_policy(known["Payments (critical)"])
    assert policy is not None
    assert (policy.num_loops, policy.team_ids) == (2, (known["Payments"],))
    assert policy.service_ids == (known["Ledger"], known["Payment API"])
    assert [r.escalation_delay_in_minutes for r in policy.rules] == [10, 20]
    assert all(r.id for r in policy.rules)
    assert [{(t.type, t.id) for t in r.targets} for r in policy.rules] == [
        {("schedule_reference", known["Payments Primary"])},
        {
            ("user_reference", known["alice@example.com"]),
            ("user_reference", known["bob@example.com"]),
            ("schedule_reference", known["Payments Primary"]),
        },
    ]
    assert set(policy.user_ids) == {known["alice@example.com"], known["bob@example.com"]}
    assert policy in client.list_escalation_policies(team_ids=[known["Payments"]])

    (primary,) = client.list_schedules()
    assert (primary.name, primary.team_ids) == ("Payments Primary", (known["Payments"],))
    assert client.get_schedule(primary.id) == primary


def test_unknown_ids_are_none(client: PagerDutyClient, sandbox: RunningSandbox) -> None:
    assert client.get_service("PNOSUCH") is None
    assert client.get_escalation_policy("PNOSUCH") is None
    assert client.get_schedule("PNOSUCH") is None
    assert [r["status"] for r in sandbox.requests("pagerduty")] == [404, 404, 404]
    assert client.retries == 0


def test_policies_are_found_by_their_exact_name_among_look_alikes(
    client: PagerDutyClient, org: SandboxOrg, sandbox: RunningSandbox
) -> None:
    known = ids(org)
    (found,) = client.find_escalation_policies_by_name("Payments (critical)")
    assert found.id == known["Payments (critical)"]
    (old,) = client.find_escalation_policies_by_name("  payments (CRITICAL) old ")
    assert old.id == known["Payments (critical) old"]
    assert client.find_escalation_policies_by_name("Payments") == []
    assert client.find_escalation_policies_by_name("Nothing Like It") == []
    queries = [r["query"]["query"] for r in sandbox.requests("pagerduty") if r["query"].get("query")]
    # The longest word narrows the listing; the exact comparison is the client's.
    assert queries == [["(critical)"], ["(critical)"], ["payments"], ["nothing"]]

    # A name that differs only in case or spacing is the same name: both are returned, for the caller to
    # refuse the ambiguity rather than pick one.
    org.pagerduty.add_escalation_policy(" PAYMENTS  (Critical)", [], [known["alice@example.com"]])
    twins = client.find_escalation_policies_by_name("Payments (critical)")
    assert sorted(p.name for p in twins) == [" PAYMENTS  (Critical)", "Payments (critical)"]
