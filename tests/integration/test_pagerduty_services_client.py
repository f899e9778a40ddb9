"""PagerDutyClient's services, escalation policies and schedules over real loopback HTTP: against the
sandbox (a seed of services on policies on schedules, and a generated org past one page), its fault plans
and hooks, and a scripted server for the refusals the sandbox's client-facing writes cannot provoke."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from nthlayer_pipelines.resources.pagerduty.client import (
    PagerDutyClient,
    PagerDutyError,
    WriteOutcomeUnknownError,
)
from nthlayer_pipelines.resources.pagerduty.models import (
    EscalationRuleSpec,
    PagerDutyService,
    PagerDutyTarget,
    PagerDutyUrgencyRule,
)
from nthlayer_pipelines.sandbox import (
    RequestContext,
    RunningSandbox,
    SandboxOrg,
    generate_org,
    org_from_seed,
    running_sandbox,
)
from nthlayer_pipelines.sandbox.faults import parse_plan
from tests.scripted_server import Reply, ScriptedServer

TOKEN = "pd-services-secret-5c1e"
TOKENS = {"pagerduty": TOKEN, "cortex": "cortex-services-secret-0b2d"}
READ_ONLY_FIELDS = {"status", "teams", "integrations", "created_at", "last_incident_timestamp"}

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


def capture_bodies(sandbox: RunningSandbox, endpoint: str) -> list[dict[str, Any]]:
    """The JSON body of every request to `endpoint` from now on, as the sandbox received it."""
    bodies: list[dict[str, Any]] = []

    async def keep(ctx: RequestContext) -> None:
        bodies.append(ctx.json_body())

    sandbox.hooks.add_before(keep, provider="pagerduty", endpoint=endpoint)
    return bodies


def user(user_id: str, kind: str = "user_reference") -> PagerDutyTarget:
    return PagerDutyTarget(id=user_id, type=kind)


def schedule(schedule_id: str, kind: str = "schedule_reference") -> PagerDutyTarget:
    return PagerDutyTarget(id=schedule_id, type=kind)


def writes(sandbox: RunningSandbox) -> list[tuple[str, str, int]]:
    return [
        (r["method"], r["endpoint"], r["status"])
        for r in sandbox.requests("pagerduty")
        if r["method"] != "GET"
    ]


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
    assert policy.service_ids == tuple(sorted((known["Ledger"], known["Payment API"]))), "by id"
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


# ---- services: writes --------------------------------------------------------------------------------


def test_update_service_sends_only_the_fields_given(
    client: PagerDutyClient, org: SandboxOrg, sandbox: RunningSandbox
) -> None:
    known = ids(org)
    payment = known["Payment API"]
    bodies = capture_bodies(sandbox, "PUT /services/{id}")

    acked = client.update_service(payment, acknowledgement_timeout=600)
    unresolved = client.update_service(payment, auto_resolve_timeout=None)
    support_hours = PagerDutyUrgencyRule(
        type="use_support_hours", during_support_hours="high", outside_support_hours="low"
    )
    moved = client.update_service(
        payment, escalation_policy_id=known["Search On-Call"], urgency_rule=support_hours
    )

    assert bodies == [
        {"service": {"type": "service", "acknowledgement_timeout": 600}},
        {"service": {"type": "service", "auto_resolve_timeout": None}},
        {
            "service": {
                "type": "service",
                "escalation_policy": {"id": known["Search On-Call"], "type": "escalation_policy_reference"},
                "incident_urgency_rule": {
                    "type": "use_support_hours",
                    "during_support_hours": {"type": "constant", "urgency": "high"},
                    "outside_support_hours": {"type": "constant", "urgency": "low"},
                },
            }
        },
    ]
    assert not any(READ_ONLY_FIELDS & body["service"].keys() for body in bodies)
    assert (acked.acknowledgement_timeout, acked.auto_resolve_timeout) == (600, 14400)
    assert (unresolved.acknowledgement_timeout, unresolved.auto_resolve_timeout) == (600, None)
    assert moved.urgency_rule == support_hours
    assert (moved.escalation_policy_id, moved.team_ids) == (known["Search On-Call"], (known["Search"],))
    held = org.pagerduty.services[payment]
    assert (held.acknowledgement_timeout, held.auto_resolve_timeout) == (600, None)
    assert held.incident_urgency_rule["type"] == "use_support_hours"
    assert client.get_service(payment) == moved


def test_a_critical_service_is_updated_without_echoing_its_status(
    client: PagerDutyClient, org: SandboxOrg, sandbox: RunningSandbox
) -> None:
    ledger = ids(org)["Ledger"]
    bodies = capture_bodies(sandbox, "PUT /services/{id}")
    updated = client.update_service(ledger, acknowledgement_timeout=900, auto_resolve_timeout=7200)
    assert bodies == [
        {"service": {"type": "service", "acknowledgement_timeout": 900, "auto_resolve_timeout": 7200}}
    ]
    assert (updated.status, updated.acknowledgement_timeout, updated.auto_resolve_timeout) == (
        "critical",
        900,
        7200,
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "update_service was given no field to change"),
        ({"acknowledgement_timeout": 0}, "acknowledgement_timeout must be a positive number of seconds"),
        ({"auto_resolve_timeout": -60}, "auto_resolve_timeout must be a positive number of seconds"),
        ({"acknowledgement_timeout": True}, "acknowledgement_timeout must be a positive number of seconds"),
    ],
)
def test_an_update_that_cannot_mean_anything_is_refused_before_sending(
    client: PagerDutyClient, org: SandboxOrg, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        client.update_service(ids(org)["Payment API"], **fields)
    assert client.api_calls == 0


def test_the_answer_to_the_put_is_returned_even_while_reads_lag_behind_it(
    client: PagerDutyClient, org: SandboxOrg, sandbox: RunningSandbox
) -> None:
    # A read right after a write may be stale (terraform-provider-pagerduty #1069): the update answers
    # with what PagerDuty's PUT returned, not with a read that may still show the old value.
    payment = ids(org)["Payment API"]
    rule = {"kind": "lag", "provider": "pagerduty", "endpoint": "PUT /services/*", "lag_ms": 5000}
    sandbox.faults.set_plan(parse_plan({"rules": [rule]}))
    before = client.get_service(payment)
    updated = client.update_service(payment, acknowledgement_timeout=300)
    stale = client.get_service(payment)
    assert before == stale
    assert updated.acknowledgement_timeout == 300
    assert stale is not None and stale.acknowledgement_timeout == 1800


# ---- escalation policies: writes ---------------------------------------------------------------------


def test_a_policy_created_and_updated_round_trips(
    client: PagerDutyClient, org: SandboxOrg, sandbox: RunningSandbox
) -> None:
    known = ids(org)
    alice, bob, primary = known["alice@example.com"], known["bob@example.com"], known["Payments Primary"]
    posted = capture_bodies(sandbox, "POST /escalation_policies")
    put = capture_bodies(sandbox, "PUT /escalation_policies/{id}")
    rules = [
        EscalationRuleSpec(escalation_delay_in_minutes=5, targets=(schedule(primary, "schedule"),)),
        EscalationRuleSpec(escalation_delay_in_minutes=15, targets=(user(bob), user(alice, "user"))),
    ]

    created = client.create_escalation_policy(
        "Refunds (critical)", team_id=known["Payments"], num_loops=1, rules=rules, description="Refunds"
    )

    assert posted == [
        {
            "escalation_policy": {
                "type": "escalation_policy",
                "name": "Refunds (critical)",
                "description": "Refunds",
                "num_loops": 1,
                "escalation_rules": [
                    {
                        "escalation_delay_in_minutes": 5,
                        "targets": [{"id": primary, "type": "schedule_reference"}],
                    },
                    {
                        "escalation_delay_in_minutes": 15,
                        "targets": [
                            {"id": bob, "type": "user_reference"},
                            {"id": alice, "type": "user_reference"},
                        ],
                    },
                ],
                "teams": [{"id": known["Payments"], "type": "team_reference"}],
            }
        }
    ]
    assert (created.name, created.num_loops, created.team_ids, created.service_ids) == (
        "Refunds (critical)",
        1,
        (known["Payments"],),
        (),
    )
    assert [(r.escalation_delay_in_minutes, {t.id for t in r.targets}) for r in created.rules] == [
        (5, {primary}),
        (15, {alice, bob}),
    ]
    assert client.get_escalation_policy(created.id) == created
    assert client.find_escalation_policies_by_name("Refunds (critical)") == [created]

    one_rule = [EscalationRuleSpec(escalation_delay_in_minutes=30, targets=(user(alice),))]
    replaced = client.update_escalation_policy(
        created.id, num_loops=0, rules=one_rule, name="Refunds (critical)"
    )
    # Without the name, it is read first, so the PUT carries the name PagerDuty's schema requires.
    sandbox.clear_requests()
    updated = client.update_escalation_policy(created.id, num_loops=3, rules=rules[:1])
    assert [(r["method"], r["endpoint"]) for r in sandbox.requests("pagerduty")] == [
        ("GET", "GET /escalation_policies/{id}"),
        ("PUT", "PUT /escalation_policies/{id}"),
    ]

    assert put == [
        {
            "escalation_policy": {
                "type": "escalation_policy",
                "name": "Refunds (critical)",
                "num_loops": 0,
                "escalation_rules": [
                    {"escalation_delay_in_minutes": 30, "targets": [{"id": alice, "type": "user_reference"}]}
                ],
            }
        },
        {
            "escalation_policy": {
                "type": "escalation_policy",
                "name": "Refunds (critical)",
                "num_loops": 3,
                "escalation_rules": [posted[0]["escalation_policy"]["escalation_rules"][0]],
            }
        },
    ]
    assert all("services" not in body["escalation_policy"] for body in posted + put)
    assert [(r.escalation_delay_in_minutes, r.targets) for r in replaced.rules] == [(30, (user(alice),))]
    assert replaced.user_ids == (alice,)
    assert (updated.num_loops, updated.team_ids, updated.user_ids) == (3, (known["Payments"],), ())
    held = org.pagerduty.escalation_policies[created.id]
    assert (held.num_loops, held.description, held.team_ids) == (3, "Refunds", [known["Payments"]])
    assert client.get_escalation_policy(created.id) == updated


def test_a_policy_with_services_keeps_them_through_an_update(
    client: PagerDutyClient, org: SandboxOrg
) -> None:
    known = ids(org)
    policy = known["Payments (critical)"]
    rule = EscalationRuleSpec(escalation_delay_in_minutes=5, targets=(user(known["carol@example.com"]),))
    updated = client.update_escalation_policy(policy, num_loops=0, rules=[rule], name="Payments (critical)")
    assert updated.service_ids == tuple(sorted((known["Ledger"], known["Payment API"])))
    assert updated.user_ids == (known["carol@example.com"],)


def test_a_policy_without_rules_is_refused_before_sending(client: PagerDutyClient) -> None:
    with pytest.raises(ValueError, match="at least one rule"):
        client.create_escalation_policy("Empty", team_id=None, num_loops=0, rules=[])
    with pytest.raises(ValueError, match="num_loops must be a whole number"):
        client.update_escalation_policy("PNOSUCH", num_loops=-1, rules=[], name="X")
    assert client.api_calls == 0


# ---- what PagerDuty refuses, and what goes wrong on the way -----------------------------------------


def test_pagerdutys_2001_refusals_surface_with_their_reasons_and_are_not_retried(
    client: PagerDutyClient, org: SandboxOrg, sandbox: RunningSandbox
) -> None:
    known = ids(org)
    rule = EscalationRuleSpec(escalation_delay_in_minutes=5, targets=(user(known["alice@example.com"]),))
    with pytest.raises(PagerDutyError) as taken:
        client.create_escalation_policy("Search On-Call", team_id=None, num_loops=0, rules=[rule])
    with pytest.raises(PagerDutyError) as no_policy:
        client.update_service(known["Payment API"], escalation_policy_id="PNOSUCH")
    ghost = EscalationRuleSpec(escalation_delay_in_minutes=5, targets=(user("PGHOST1"),))
    with pytest.raises(PagerDutyError) as no_target:
        client.update_escalation_policy(
            known["Search On-Call"], num_loops=0, rules=[ghost], name="Search On-Call"
        )

    assert [(e.value.status, e.value.code, e.value.message) for e in (taken, no_policy, no_target)] == [
        (400, 2001, "Invalid Input Provided")
    ] * 3
    assert taken.value.errors == ("Escalation Policy has already been taken",)
    assert str(taken.value) == (
        "PagerDuty POST /escalation_policies: Invalid Input Provided (HTTP 400, code 2001): "
        "Escalation Policy has already been taken"
    )
    assert no_policy.value.errors == ("Escalation Policy PNOSUCH not found",)
    assert no_target.value.errors == ("Escalation rule target PGHOST1 (user_reference) not found",)
    assert type(taken.value) is PagerDutyError  # a refusal, not an unknown outcome
    assert [status for _, _, status in writes(sandbox)] == [400, 400, 400]  # each sent once
    assert org.pagerduty.services[known["Payment API"]].escalation_policy_id == known["Payments (critical)"]


def test_writes_to_unknown_ids_are_pagerdutys_404_code_2100(
    client: PagerDutyClient, sandbox: RunningSandbox
) -> None:
    rule = EscalationRuleSpec(escalation_delay_in_minutes=5, targets=(user("PGHOST1"),))
    with pytest.raises(PagerDutyError) as service:
        client.update_service("PNOSUCH", acknowledgement_timeout=600)
    with pytest.raises(PagerDutyError) as policy:
        client.update_escalation_policy("PNOSUCH", num_loops=0, rules=[rule], name="Gone")
    with pytest.raises(PagerDutyError) as unnamed:
        client.update_escalation_policy("PNOSUCH", num_loops=0, rules=[rule])

    assert (service.value.status, service.value.code, service.value.errors) == (
        404,
        2100,
        ("Service not found",),
    )
    assert (policy.value.status, policy.value.code, policy.value.method) == (404, 2100, "PUT")
    assert policy.value.errors == ("Escalation policy not found",)
    # Without a name, the read it needs first is the 404: nothing is written.
    assert (unnamed.value.status, unnamed.value.code, unnamed.value.method) == (404, 2100, "GET")
    assert [(r["method"], r["status"]) for r in sandbox.requests("pagerduty")] == [
        ("PUT", 404),
        ("PUT", 404),
        ("GET", 404),
    ]


@pytest.mark.parametrize(
    "reason",
    [
        "Status must be in active or disabled.",
        "timeout cannot be null",
        "Escalation Policy has already been taken",
        "Cannot Delete Only Rule For Escalation Policy",
    ],
)
def test_any_2001_reason_pagerduty_gives_is_kept(reason: str) -> None:
    # The sandbox refuses these too, but only to bodies this client never sends (an echoed status, alert
    # grouping, no rules); PagerDuty may still give them, and the caller must see which it was.
    refusal = {"error": {"message": "Invalid Input Provided", "code": 2001, "errors": [reason]}}
    rule = EscalationRuleSpec(escalation_delay_in_minutes=5, targets=(user("PU00001"),))
    with (
        ScriptedServer(Reply(400, refusal), Reply(400, refusal)) as server,
        PagerDutyClient(server.url, TOKEN, max_attempts=3) as client,
    ):
        with pytest.raises(PagerDutyError) as service:
            client.update_service("PS00001", auto_resolve_timeout=None)
        with pytest.raises(PagerDutyError) as policy:
            client.update_escalation_policy("PE00001", num_loops=0, rules=[rule], name="Payments")
    for refused in (service.value, policy.value):
        assert (refused.status, refused.code, refused.errors) == (400, 2001, (reason,))
        assert str(refused).endswith(f"Invalid Input Provided (HTTP 400, code 2001): {reason}")
    assert [(r.method, r.path) for r in server.requests] == [
        ("PUT", "/services/PS00001"),
        ("PUT", "/escalation_policies/PE00001"),
    ]
    assert json.loads(server.requests[0].body) == {
        "service": {"type": "service", "auto_resolve_timeout": None}
    }


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 429},
        {"kind": "status", "status": 429, "ratelimit_headers": False, "rate_limit_body": False},
    ],
    ids=["429 with headers", "bare 429"],
)
def test_a_429_on_any_of_these_endpoints_is_waited_out_and_retried(
    org: SandboxOrg, sandbox: RunningSandbox, fault: dict[str, Any]
) -> None:
    known = ids(org)
    sandbox.faults.set_plan(
        parse_plan({"rules": [{**fault, "provider": "pagerduty", "reset_seconds": 0, "first_arrivals": 1}]})
    )
    rule = EscalationRuleSpec(escalation_delay_in_minutes=5, targets=(user(known["alice@example.com"]),))
    with client_for(sandbox, sleep=lambda _seconds: None) as client:
        services = client.list_services()
        service = client.get_service(known["Payment API"])
        policies = client.list_escalation_policies()
        schedules = client.list_schedules()
        updated = client.update_service(known["Payment API"], acknowledgement_timeout=120)
        created = client.create_escalation_policy("Retried", team_id=None, num_loops=0, rules=[rule])
        again = client.update_escalation_policy(created.id, num_loops=2, rules=[rule], name="Retried")
        found = client.find_escalation_policies_by_name("Retried")
    assert (len(services), len(policies), len(schedules)) == (3, 4, 1)
    assert service is not None and updated.acknowledgement_timeout == 120
    assert again.num_loops == 2
    assert found == [again]  # created once, though its first POST was refused
    # Every request's first arrival was refused once: seven requests, and the look-up after them.
    assert client.rate_limited == client.retries == sum(sandbox.faults.injected().values()) == 8
    assert [status for _, _, status in writes(sandbox)] == [429, 200, 429, 201, 429, 200]


@pytest.mark.parametrize(
    "fault",
    [{"kind": "status", "status": 502, "when": "after"}, {"kind": "drop", "when": "after"}],
    ids=["502 after creating", "dropped after creating"],
)
def test_a_lost_answer_to_a_create_is_an_unknown_outcome_to_look_up_before_creating_again(
    org: SandboxOrg, sandbox: RunningSandbox, fault: dict[str, Any]
) -> None:
    known = ids(org)
    rule = EscalationRuleSpec(escalation_delay_in_minutes=5, targets=(user(known["alice@example.com"]),))
    sandbox.faults.set_plan(parse_plan({"rules": [{**fault, "endpoint": "POST /escalation_policies"}]}))
    with client_for(sandbox, max_attempts=3) as client:
        with pytest.raises(WriteOutcomeUnknownError) as lost:
            client.create_escalation_policy("Lost Answer", team_id=known["Search"], num_loops=0, rules=[rule])
        sandbox.faults.set_plan(parse_plan(None))
        (found,) = client.find_escalation_policies_by_name("Lost Answer")  # it was created
        with pytest.raises(PagerDutyError, match="Escalation Policy has already been taken"):
            client.create_escalation_policy("Lost Answer", team_id=known["Search"], num_loops=0, rules=[rule])
    assert lost.value.method == "POST" and lost.value.path == "/escalation_policies"
    assert found.team_ids == (known["Search"],)
    posts = sandbox.requests("pagerduty", "POST")
    assert [r["fault"] is not None for r in posts] == [True, False]  # the lost one was not sent again


def test_a_put_whose_answer_was_lost_is_sent_again(org: SandboxOrg, sandbox: RunningSandbox) -> None:
    # A PUT says what the service should be: sending it twice changes nothing more than sending it once.
    payment = ids(org)["Payment API"]
    rule = {"kind": "drop", "when": "after", "endpoint": "PUT /services/*", "first_arrivals": 1}
    sandbox.faults.set_plan(parse_plan({"rules": [rule]}))
    with client_for(sandbox) as client:
        updated = client.update_service(payment, auto_resolve_timeout=3600)
    assert updated.auto_resolve_timeout == 3600
    puts = sandbox.requests("pagerduty", "PUT")
    assert [r["fault"] for r in puts] == ["drop", None]
    assert client.retries == 1


def test_a_read_only_client_refuses_every_write_before_sending(
    org: SandboxOrg, sandbox: RunningSandbox
) -> None:
    known = ids(org)
    rule = EscalationRuleSpec(escalation_delay_in_minutes=5, targets=(user(known["alice@example.com"]),))
    with client_for(sandbox, read_only=True) as client:
        attempts = {
            "PUT /services/": lambda: client.update_service(known["Payment API"], auto_resolve_timeout=None),
            "POST /escalation_policies": lambda: client.create_escalation_policy(
                "Never", team_id=None, num_loops=0, rules=[rule]
            ),
            "PUT /escalation_policies/": lambda: client.update_escalation_policy(
                known["Search On-Call"], num_loops=0, rules=[rule]
            ),
        }
        for where, attempt in attempts.items():
            with pytest.raises(PagerDutyError, match="refused: this client is read-only") as refused:
                attempt()
            assert f"{refused.value.method} {refused.value.path}".startswith(where)
        assert len(client.list_services()) == 3  # reads still work
    assert [(r["method"], r["endpoint"]) for r in sandbox.requests("pagerduty")] == [("GET", "GET /services")]
    assert org.pagerduty.policy_by_name("Never") is None
