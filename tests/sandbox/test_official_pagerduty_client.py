"""PagerDuty's own Python client, unchanged, against the sandbox: it must not notice the difference."""

from collections.abc import Iterator

import pagerduty
import pytest
from sandbox_seed import PAGERDUTY_TOKEN, TOKENS

from nthlayer_pipelines.sandbox import RunningSandbox, generate_org, running_sandbox


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(generate_org(130, 6, seed=11), tokens=TOKENS) as running:
        yield running


@pytest.fixture
def client(sandbox: RunningSandbox) -> pagerduty.RestApiV2Client:
    client = pagerduty.RestApiV2Client(PAGERDUTY_TOKEN)
    # The constructor refuses http:// base URLs; the attribute behind the property takes one.
    client._url = sandbox.pagerduty_url
    return client


def test_iter_all_lists_every_team_over_several_pages(
    sandbox: RunningSandbox, client: pagerduty.RestApiV2Client
) -> None:
    teams = list(client.iter_all("teams"))
    assert len(teams) == 130
    assert {t["id"] for t in teams} == set(sandbox.state.pagerduty.teams)
    pages = [e["query"] for e in sandbox.requests("pagerduty", "GET") if e["endpoint"] == "GET /teams"]
    assert [(q["limit"], q["offset"]) for q in pages] == [(["100"], ["0"]), (["100"], ["100"])]


def test_iter_all_reads_a_teams_members(sandbox: RunningSandbox, client: pagerduty.RestApiV2Client) -> None:
    team = next(client.iter_all("teams"))
    members = list(client.iter_all(f"teams/{team['id']}/members"))
    assert {m["user"]["id"]: m["role"] for m in members} == sandbox.state.pagerduty.memberships[team["id"]]
    assert {m["role"] for m in members} >= {"manager", "responder", "observer"}


def test_rput_changes_a_role_and_rget_follows_self_links(
    sandbox: RunningSandbox, client: pagerduty.RestApiV2Client
) -> None:
    team = client.rget("teams", params={"limit": 1})[0]
    members = list(client.iter_all(f"teams/{team['id']}/members"))
    responder = next(m["user"] for m in members if m["role"] == "responder")

    assert client.rput(f"teams/{team['id']}/users/{responder['id']}", json={"role": "observer"}) is None

    assert sandbox.state.pagerduty.memberships[team["id"]][responder["id"]] == "observer"
    assert client.rget(responder)["id"] == responder["id"]
    assert client.rget(team)["name"] == team["name"]


def test_client_sees_pagerdutys_refusal_to_remove_an_escalation_target(
    sandbox: RunningSandbox, client: pagerduty.RestApiV2Client
) -> None:
    team = client.rget("teams", params={"limit": 1})[0]
    policy = client.rget("escalation_policies", params={"team_ids[]": team["id"]})[0]
    target = policy["escalation_rules"][0]["targets"][0]

    with pytest.raises(pagerduty.HttpError) as refused:
        client.rdelete(f"teams/{team['id']}/users/{target['id']}")

    assert refused.value.response.status_code == 400
    assert refused.value.response.json()["error"]["code"] == 2001
    assert target["id"] in sandbox.state.pagerduty.memberships[team["id"]]


def test_rpost_creates_a_team(sandbox: RunningSandbox, client: pagerduty.RestApiV2Client) -> None:
    created = client.rpost("teams", json={"type": "team", "name": "Brand New", "description": "fresh"})
    assert created["name"] == "Brand New"
    assert sandbox.state.pagerduty.teams[created["id"]].description == "fresh"


def test_iter_all_lists_every_service_and_escalation_policy_over_several_pages(
    sandbox: RunningSandbox, client: pagerduty.RestApiV2Client
) -> None:
    services = list(client.iter_all("services"))
    policies = list(client.iter_all("escalation_policies"))
    schedules = list(client.iter_all("schedules"))

    org = sandbox.state.pagerduty
    assert {s["id"] for s in services} == set(org.services)
    assert {p["id"] for p in policies} == set(org.escalation_policies)
    assert {s["id"] for s in schedules} == set(org.schedules)
    assert len(services) == len(policies) == len(schedules) == 130


def test_rget_reads_a_service_and_rput_writes_it_back_changed(
    sandbox: RunningSandbox, client: pagerduty.RestApiV2Client
) -> None:
    listed = client.rget("services", params={"limit": 1})[0]
    service = client.rget(f"services/{listed['id']}")
    assert service["id"] == listed["id"]  # unwrapped from {"service": ...}
    service["acknowledgement_timeout"] = 900

    updated = client.rput(service, json=service)

    assert updated["acknowledgement_timeout"] == 900
    assert sandbox.state.pagerduty.services[service["id"]].acknowledgement_timeout == 900


def test_rput_writes_an_escalation_policy_back_with_its_targets_in_the_apis_order(
    sandbox: RunningSandbox, client: pagerduty.RestApiV2Client
) -> None:
    policy = client.rget("escalation_policies", params={"limit": 1})[0]
    schedule = next(t for t in policy["escalation_rules"][1]["targets"] if t["type"] == "schedule_reference")
    manager = policy["escalation_rules"][0]["targets"][0]
    policy["escalation_rules"] = [
        {"escalation_delay_in_minutes": 15, "targets": [schedule, manager]},
    ]

    updated = client.rput(f"escalation_policies/{policy['id']}", json=policy)

    (rule,) = updated["escalation_rules"]
    assert [t["id"] for t in rule["targets"]] == sorted([schedule["id"], manager["id"]])
    assert (
        client.rget(f"escalation_policies/{policy['id']}")["escalation_rules"] == updated["escalation_rules"]
    )
