"""PagerDuty's services, escalation policies and schedules in the sandbox: listing with PagerDuty's
pagination and filters, `include[]`, wrapped bodies, the writes PagerDuty refuses, targets in the API's own
order, audit records of every write, and faults on these endpoints like on any other."""

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sandbox_seed import PAGERDUTY_TOKEN, TOKENS
from services_seed import services_org

from nthlayer_pipelines.sandbox import RunningSandbox, SandboxOrg, generate_org, running_sandbox
from nthlayer_pipelines.sandbox.faults import parse_plan


@pytest.fixture
def org() -> SandboxOrg:
    return services_org()


@pytest.fixture
def big_pd() -> Iterator[httpx.Client]:
    """130 teams, so 130 services, policies and schedules: more than one page of 100."""
    with running_sandbox(generate_org(130, 4, seed=5), tokens=TOKENS) as running:
        headers = {"Authorization": f"Token token={PAGERDUTY_TOKEN}"}
        with httpx.Client(base_url=running.pagerduty_url, headers=headers) as client:
            yield client


def id_of(lookup: Callable[[str], Any], name: str) -> str:
    """The id of the object a look-up by name finds (`org.pagerduty.service_by_name`, ...)."""
    found = lookup(name)
    assert found is not None, name
    return found.id


def service_id(org: SandboxOrg, name: str) -> str:
    return id_of(org.pagerduty.service_by_name, name)


def policy_id(org: SandboxOrg, name: str) -> str:
    return id_of(org.pagerduty.policy_by_name, name)


def schedule_id(org: SandboxOrg, name: str) -> str:
    return id_of(org.pagerduty.schedule_by_name, name)


def assert_refused(response: httpx.Response, error: str) -> None:
    """PagerDuty's 400 code 2001, its first reason containing `error`."""
    assert response.status_code == 400
    body = response.json()["error"]
    assert (body["code"], body["message"]) == (2001, "Invalid Input Provided")
    assert error in body["errors"][0]


def ref(object_id: str, kind: str) -> dict[str, str]:
    return {"id": object_id, "type": f"{kind}_reference"}


def audit(pd: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    return pd.get("/audit/records", params=params).json()["records"]


# -- listing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("collection", ["services", "escalation_policies", "schedules"])
def test_each_collection_pages_with_limit_offset_more_and_total_on_request(
    big_pd: httpx.Client, collection: str
) -> None:
    first = big_pd.get(f"/{collection}").json()
    assert (first["limit"], first["offset"], first["more"], first["total"]) == (25, 0, True, None)
    assert len(first[collection]) == 25

    names = []
    for offset in (0, 100):
        page = big_pd.get(f"/{collection}", params={"limit": 100, "offset": offset, "total": "true"}).json()
        assert page["total"] == 130
        names += [item["name"] for item in page[collection]]
    assert page["more"] is False
    assert len(names) == len(set(names)) == 130
    assert names == sorted(names, key=str.casefold)


def test_services_filter_by_team_and_query_and_sort_by_name_descending(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    everything = pd.get("/services").json()["services"]
    assert [s["name"] for s in everything] == ["Ledger", "Payment API", "Search API"]

    search = org.pagerduty.team_by_name("Search")
    assert search is not None
    of_search = pd.get("/services", params={"team_ids[]": search.id}).json()["services"]
    assert [s["name"] for s in of_search] == ["Search API"]
    assert [s["name"] for s in pd.get("/services", params={"query": "pay"}).json()["services"]] == [
        "Payment API"
    ]
    descending = pd.get("/services", params={"sort_by": "name:desc"}).json()["services"]
    assert [s["name"] for s in descending] == ["Search API", "Payment API", "Ledger"]


def test_a_service_is_wrapped_with_references_unless_include_asks_for_the_objects(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    payment = service_id(org, "Payment API")
    service = pd.get(f"/services/{payment}").json()["service"]
    assert service["type"] == "service"
    assert service["self"].endswith(f"/pagerduty/services/{payment}")
    assert (service["acknowledgement_timeout"], service["auto_resolve_timeout"]) == (1800, 14400)
    assert service["incident_urgency_rule"] == {"type": "constant", "urgency": "high"}
    assert service["status"] == "active"
    assert service["escalation_policy"]["type"] == "escalation_policy_reference"
    # A service's teams are its escalation policy's.
    assert [(t["type"], t["summary"]) for t in service["teams"]] == [("team_reference", "Payments")]
    assert "tier" not in service

    included = pd.get(f"/services/{payment}", params={"include[]": ["escalation_policies", "teams"]}).json()[
        "service"
    ]
    assert included["escalation_policy"]["type"] == "escalation_policy"
    assert included["escalation_policy"]["name"] == "Payments Escalation"
    assert included["teams"][0]["type"] == "team"
    assert included["teams"][0]["description"] == "Money in, money out"

    listed = pd.get("/services", params={"include[]": "escalation_policies"}).json()["services"]
    assert {s["escalation_policy"]["type"] for s in listed} == {"escalation_policy"}


def test_a_policy_lists_its_services_and_include_expands_targets_services_and_teams(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    escalation = policy_id(org, "Payments Escalation")
    policy = pd.get(f"/escalation_policies/{escalation}").json()["escalation_policy"]
    assert policy["num_loops"] == 2
    assert [r["escalation_delay_in_minutes"] for r in policy["escalation_rules"]] == [10, 20]
    assert [(t["type"], t["summary"]) for t in policy["escalation_rules"][0]["targets"]] == [
        ("schedule_reference", "Payments Primary")
    ]
    assert [(s["type"], s["summary"]) for s in policy["services"]] == [
        ("service_reference", "Ledger"),
        ("service_reference", "Payment API"),
    ]

    params = {"include[]": ["targets", "services", "teams"]}
    full = pd.get(f"/escalation_policies/{escalation}", params=params).json()["escalation_policy"]
    second = {t["type"]: t for t in full["escalation_rules"][1]["targets"]}
    assert second["user"]["email"] == "alice@example.com"
    assert second["schedule"]["name"] == "Payments Secondary"
    assert {s["type"] for s in full["services"]} == {"service"}
    assert full["teams"][0]["type"] == "team"


def test_schedules_list_without_layers_unless_asked_and_read_with_them_in_rotation_order(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    listed = pd.get("/schedules").json()["schedules"]
    assert [s["name"] for s in listed] == ["Payments Primary", "Payments Secondary"]
    assert all("schedule_layers" not in s for s in listed)
    with_layers = pd.get("/schedules", params={"include[]": "schedule_layers"}).json()["schedules"]
    assert [len(s["schedule_layers"]) for s in with_layers] == [1, 2]
    assert [s["name"] for s in pd.get("/schedules", params={"query": "second"}).json()["schedules"]] == [
        "Payments Secondary"
    ]

    primary = pd.get(f"/schedules/{schedule_id(org, 'Payments Primary')}").json()["schedule"]
    assert primary["time_zone"] == "Europe/London"
    (layer,) = primary["schedule_layers"]
    # A layer's users keep the order given: it is the rotation.
    assert [u["user"]["summary"] for u in layer["users"]] == ["Carol Example", "Alice Example", "Bob Example"]
    assert layer["rotation_turn_length_seconds"] == 7 * 24 * 3600
    assert [p["summary"] for p in primary["escalation_policies"]] == ["Payments Escalation"]
    assert [t["summary"] for t in primary["teams"]] == ["Payments"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/services/PNOSUCH", "Service not found"),
        ("/escalation_policies/PNOSUCH", "Escalation policy not found"),
        ("/schedules/PNOSUCH", "Schedule not found"),
    ],
)
def test_an_unknown_id_is_pagerdutys_404(pd: httpx.Client, path: str, message: str) -> None:
    response = pd.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": {"message": "Not Found", "code": 2100, "errors": [message]}}
    assert pd.put(path, json={"service": {}, "escalation_policy": {}}).status_code in (404, 405)


# -- services: writes ----------------------------------------------------------------------------------


def test_a_service_read_can_be_written_back_with_its_read_only_fields_ignored(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    payment = service_id(org, "Payment API")
    service = pd.get(f"/services/{payment}").json()["service"]
    service["acknowledgement_timeout"] = 600
    service["teams"] = [ref("PNOSUCH", "team")]  # read-only: ignored, not refused
    service["created_at"] = "1999-01-01T00:00:00Z"

    response = pd.put(f"/services/{payment}", json={"service": service})

    assert response.status_code == 200
    written = response.json()["service"]
    assert written["acknowledgement_timeout"] == 600
    assert [t["summary"] for t in written["teams"]] == ["Payments"]
    assert written["created_at"] != "1999-01-01T00:00:00Z"
    assert org.pagerduty.services[payment].acknowledgement_timeout == 600


def test_a_put_echoing_a_critical_services_status_is_refused(pd: httpx.Client, org: SandboxOrg) -> None:
    ledger = service_id(org, "Ledger")
    service = pd.get(f"/services/{ledger}").json()["service"]
    assert service["status"] == "critical"

    refused = pd.put(f"/services/{ledger}", json={"service": service})

    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "Invalid Input Provided",
        "code": 2001,
        "errors": ["Status must be in active or disabled."],
    }
    disabled = pd.put(f"/services/{ledger}", json={"service": {"status": "disabled"}})
    assert disabled.json()["service"]["status"] == "disabled"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            {"alert_grouping_parameters": {"type": "time", "config": {"timeout": None}}},
            "timeout cannot be null",
        ),
        ({"name": "Search API"}, "Name has already been taken"),
        ({"name": "  "}, "Name can't be blank"),
        ({"escalation_policy": ref("PNOSUCH", "escalation_policy")}, "Escalation Policy PNOSUCH not found"),
        ({"acknowledgement_timeout": -1}, "Acknowledgement timeout must be a non-negative integer or null"),
        ({"incident_urgency_rule": {"type": "constant", "urgency": "urgent"}}, "urgency must be one of"),
    ],
)
def test_a_service_update_pagerduty_refuses_is_a_400_with_code_2001(
    pd: httpx.Client, org: SandboxOrg, change: dict[str, Any], error: str
) -> None:
    payment = service_id(org, "Payment API")
    assert_refused(pd.put(f"/services/{payment}", json={"service": change}), error)
    assert org.pagerduty.services[payment].name == "Payment API"


def test_a_body_without_the_wrapper_is_refused(pd: httpx.Client, org: SandboxOrg) -> None:
    response = pd.put(f"/services/{service_id(org, 'Payment API')}", json={"name": "Unwrapped"})
    assert response.status_code == 400
    assert response.json()["error"]["errors"] == ["Service must be an object"]


def test_a_service_created_gets_pagerdutys_defaults_and_may_only_start_active(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    body = {
        "type": "service",
        "name": "Refunds",
        "escalation_policy": ref(policy_id(org, "Payments On-Call"), "escalation_policy"),
    }
    created = pd.post("/services", json={"service": body})
    assert created.status_code == 201
    service = created.json()["service"]
    assert (service["acknowledgement_timeout"], service["auto_resolve_timeout"]) == (1800, 14400)
    assert service["incident_urgency_rule"] == {"type": "constant", "urgency": "high"}
    assert service["status"] == "active"
    assert service["id"] in org.pagerduty.services

    critical = pd.post("/services", json={"service": {**body, "name": "Other", "status": "critical"}})
    assert critical.status_code == 400
    assert critical.json()["error"]["errors"] == ["Status must be active."]
    no_policy = pd.post("/services", json={"service": {"type": "service", "name": "Orphan"}})
    assert no_policy.status_code == 400


# -- escalation policies: writes -----------------------------------------------------------------------


def test_targets_come_back_in_the_sandboxs_order_not_the_order_sent(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    users = [u.id for u in org.pagerduty.users_by_name][:3]
    schedule = schedule_id(org, "Payments Primary")
    sent = [ref(schedule, "schedule"), *(ref(u, "user") for u in users)]
    sent.sort(key=lambda t: t["id"], reverse=True)
    body = {
        "type": "escalation_policy",
        "name": "Ordered",
        "escalation_rules": [{"escalation_delay_in_minutes": 5, "targets": sent}],
    }

    created = pd.post("/escalation_policies", json={"escalation_policy": body})

    assert created.status_code == 201
    returned = [t["id"] for t in created.json()["escalation_policy"]["escalation_rules"][0]["targets"]]
    assert returned == sorted(t["id"] for t in sent)
    assert returned != [t["id"] for t in sent]
    again = pd.get(f"/escalation_policies/{created.json()['escalation_policy']['id']}").json()
    assert [t["id"] for t in again["escalation_policy"]["escalation_rules"][0]["targets"]] == returned


def test_a_target_may_be_sent_as_any_type_the_spec_allows_and_comes_back_as_a_reference(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    alice = org.pagerduty.user_by_email("alice@example.com")
    assert alice is not None
    primary, secondary = schedule_id(org, "Payments Primary"), schedule_id(org, "Payments Secondary")
    sent = [
        {"id": alice.id, "type": "user"},
        {"id": primary, "type": "schedule"},
        {"id": secondary, "type": "schedule_v3_reference"},
    ]
    body = {"escalation_rules": [{"escalation_delay_in_minutes": 5, "targets": sent}]}

    written = pd.put(
        f"/escalation_policies/{policy_id(org, 'Search On-Call')}", json={"escalation_policy": body}
    )

    assert written.status_code == 200
    (rule,) = written.json()["escalation_policy"]["escalation_rules"]
    assert {(t["id"], t["type"]) for t in rule["targets"]} == {
        (alice.id, "user_reference"),
        (primary, "schedule_reference"),
        (secondary, "schedule_reference"),
    }


def test_a_policy_read_can_be_written_back_and_its_rules_keep_their_ids(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    escalation = policy_id(org, "Payments Escalation")
    policy = pd.get(f"/escalation_policies/{escalation}").json()["escalation_policy"]
    rule_ids = [r["id"] for r in policy["escalation_rules"]]
    policy["num_loops"] = 3
    policy["escalation_rules"][0]["escalation_delay_in_minutes"] = 5

    written = pd.put(f"/escalation_policies/{escalation}", json={"escalation_policy": policy})

    assert written.status_code == 200
    answer = written.json()["escalation_policy"]
    assert answer["num_loops"] == 3
    assert [r["id"] for r in answer["escalation_rules"]] == rule_ids
    assert answer["escalation_rules"][0]["escalation_delay_in_minutes"] == 5
    assert [s["summary"] for s in answer["services"]] == ["Ledger", "Payment API"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"escalation_rules": []}, "Cannot Delete Only Rule For Escalation Policy"),
        ({"name": "Search On-Call"}, "Escalation Policy has already been taken"),
        ({"num_loops": -1}, "Num loops must be a non-negative integer"),
        ({"on_call_handoff_notifications": "never"}, "On call handoff notifications must be one of"),
        (
            {"escalation_rules": [{"escalation_delay_in_minutes": 5, "targets": [ref("PNOSUCH", "user")]}]},
            "Escalation rule target PNOSUCH (user_reference) not found",
        ),
        (
            {
                "escalation_rules": [
                    {"escalation_delay_in_minutes": 5, "targets": [{"id": "PX", "type": "team_reference"}]}
                ]
            },
            "Escalation rule targets must be user_reference or schedule_reference",
        ),
    ],
)
def test_a_policy_update_pagerduty_refuses_is_a_400_with_code_2001(
    pd: httpx.Client, org: SandboxOrg, change: dict[str, Any], error: str
) -> None:
    escalation = policy_id(org, "Payments Escalation")
    assert_refused(pd.put(f"/escalation_policies/{escalation}", json={"escalation_policy": change}), error)
    assert len(org.pagerduty.escalation_policies[escalation].rules) == 2


def test_a_policy_needs_a_rule_and_at_most_one_team(pd: httpx.Client, org: SandboxOrg) -> None:
    no_rules = {"type": "escalation_policy", "name": "Empty", "escalation_rules": []}
    assert pd.post("/escalation_policies", json={"escalation_policy": no_rules}).status_code == 400
    teams = [ref(t.id, "team") for t in org.pagerduty.teams_by_name]
    rule = {
        "escalation_delay_in_minutes": 5,
        "targets": [ref(schedule_id(org, "Payments Primary"), "schedule")],
    }
    two_teams = {"type": "escalation_policy", "name": "Shared", "teams": teams, "escalation_rules": [rule]}
    refused = pd.post("/escalation_policies", json={"escalation_policy": two_teams})
    assert refused.status_code == 400
    assert refused.json()["error"]["errors"] == ["Only one team may be associated with an escalation policy"]


def test_a_user_targeted_only_through_a_schedule_can_still_leave_the_team(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    # Carol is on Payments Primary, which Payments Escalation targets: the refusal is for direct targets.
    payments = org.pagerduty.team_by_name("Payments")
    carol = org.pagerduty.user_by_email("carol@example.com")
    assert payments is not None and carol is not None
    assert pd.delete(f"/teams/{payments.id}/users/{carol.id}").status_code == 204


# -- audit records ---------------------------------------------------------------------------------------


def test_every_service_and_policy_write_leaves_an_audit_record_under_its_own_root(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    payment = service_id(org, "Payment API")
    escalation = policy_id(org, "Payments Escalation")
    pd.put(f"/services/{payment}", json={"service": {"acknowledgement_timeout": 600}})
    pd.put(f"/escalation_policies/{escalation}", json={"escalation_policy": {"num_loops": 1}})
    rule = {
        "escalation_delay_in_minutes": 5,
        "targets": [ref(schedule_id(org, "Payments Primary"), "schedule")],
    }
    created = pd.post(
        "/escalation_policies",
        json={"escalation_policy": {"type": "escalation_policy", "name": "New", "escalation_rules": [rule]}},
    ).json()["escalation_policy"]
    service = pd.post(
        "/services",
        json={
            "service": {
                "type": "service",
                "name": "Fresh",
                "escalation_policy": ref(created["id"], "escalation_policy"),
            }
        },
    ).json()["service"]

    records = audit(pd)
    assert [(r["root_resource"]["type"], r["root_resource"]["summary"], r["action"]) for r in records] == [
        ("service_reference", "Fresh", "create"),
        ("escalation_policy_reference", "New", "create"),
        ("escalation_policy_reference", "Payments Escalation", "update"),
        ("service_reference", "Payment API", "update"),
    ]
    assert all(r["method"] == {"type": "api_token", "truncated_token": PAGERDUTY_TOKEN[-4:]} for r in records)
    ack = records[3]["details"]["fields"]
    assert ack == [{"name": "acknowledgement_timeout", "value": "600", "before_value": "1800"}]
    assert records[2]["details"]["fields"] == [{"name": "num_loops", "value": "1", "before_value": "2"}]
    created_fields = {f["name"]: f.get("value") for f in records[0]["details"]["fields"]}
    assert created_fields["name"] == "Fresh"
    assert created_fields["escalation_policy"] == created["id"]

    only_services = audit(pd, **{"root_resource_types[]": "services"})
    assert [r["root_resource"]["id"] for r in only_services] == [service["id"], payment]
    own = pd.get(f"/services/{payment}/audit/records").json()["records"]
    assert [r["root_resource"]["id"] for r in own] == [payment]
    policy_own = pd.get(f"/escalation_policies/{escalation}/audit/records").json()["records"]
    assert [r["action"] for r in policy_own] == ["update"]
    assert pd.get("/services/PNOSUCH/audit/records").status_code == 404


def test_a_write_that_changes_nothing_records_nothing(pd: httpx.Client, org: SandboxOrg) -> None:
    payment = service_id(org, "Payment API")
    service = pd.get(f"/services/{payment}").json()["service"]
    assert pd.put(f"/services/{payment}", json={"service": service}).status_code == 200
    assert audit(pd) == []


# -- faults ----------------------------------------------------------------------------------------------


def test_faults_apply_to_the_new_endpoints_by_their_path_templates(
    sandbox: RunningSandbox, pd: httpx.Client, org: SandboxOrg
) -> None:
    sandbox.faults.set_plan(
        parse_plan(
            {
                "rules": [
                    {"kind": "status", "status": 503, "provider": "pagerduty", "endpoint": "PUT /services/*"},
                    {"kind": "truncate", "provider": "pagerduty", "endpoint": "GET /escalation_policies"},
                ]
            }
        )
    )
    payment = service_id(org, "Payment API")

    refused = pd.put(f"/services/{payment}", json={"service": {"acknowledgement_timeout": 600}})
    page = pd.get("/escalation_policies").json()

    assert refused.status_code == 503
    assert org.pagerduty.services[payment].acknowledgement_timeout == 1800  # the endpoint never ran
    assert len(page["escalation_policies"]) == 1 and page["more"] is True
    assert pd.get(f"/services/{payment}").status_code == 200
    assert sandbox.faults.injected() == {"status_503": 1, "truncate": 1}
    logged = {e["endpoint"]: e["fault"] for e in sandbox.requests("pagerduty")}
    assert logged["PUT /services/{id}"] == "status_503"
    assert logged["GET /escalation_policies"] == "truncate"
