"""Fault injection in the sandbox: each kind as a client on the wire sees it, per provider and endpoint,
set at start, through the admin endpoint, and from a file; the same faults for the same seed."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sandbox_seed import CORTEX_TOKEN, PAGERDUTY_TOKEN, SLACK_TOKEN, TOKENS, seeded_org

from nthlayer_pipelines.cli import main
from nthlayer_pipelines.sandbox import RunningSandbox, running_sandbox
from nthlayer_pipelines.sandbox.faults import FaultPlanError, load_plan, parse_plan

HEADERS = {
    "Authorization": f"Token token={PAGERDUTY_TOKEN}",
    "Accept": "application/vnd.pagerduty+json;version=2",
}


def use(sandbox: RunningSandbox, *rules: dict[str, Any], seed: int = 0) -> None:
    sandbox.faults.set_plan(parse_plan({"seed": seed, "rules": list(rules)}))


def members(sandbox: RunningSandbox, team_name: str) -> dict[str, str]:
    org = sandbox.state.pagerduty
    team = org.team_by_name(team_name)
    assert team is not None
    return {org.users[user_id].email: role for user_id, role in org.memberships[team.id].items()}


def team_and_user(sandbox: RunningSandbox, team_name: str, email: str) -> tuple[str, str]:
    org = sandbox.state.pagerduty
    team = org.team_by_name(team_name)
    user = next(u for u in org.users.values() if u.email == email)
    assert team is not None
    return team.id, user.id


def faults_logged(sandbox: RunningSandbox) -> list[str | None]:
    return [entry["fault"] for entry in sandbox.requests("pagerduty")]


@pytest.mark.parametrize(
    ("rule", "status", "headers", "code"),
    [
        ({"status": 429}, 429, True, 2020),
        ({"status": 429, "ratelimit_headers": False}, 429, False, 2020),
        ({"status": 429, "ratelimit_headers": False, "rate_limit_body": False}, 429, False, None),
        ({"status": 429, "rate_limit_body": False}, 429, True, None),
        ({"status": 500}, 500, False, None),
        ({"status": 502}, 502, False, None),
        ({"status": 503}, 503, False, None),
    ],
)
def test_a_status_fault_answers_instead_of_the_endpoint(
    sandbox: RunningSandbox,
    pd: httpx.Client,
    rule: dict[str, Any],
    status: int,
    headers: bool,
    code: int | None,
) -> None:
    use(sandbox, {"kind": "status", "endpoint": "PUT /teams/*", **rule})
    team_id, user_id = team_and_user(sandbox, "Search", "carol@example.com")

    answer = pd.put(f"/teams/{team_id}/users/{user_id}", json={"role": "responder"})

    assert answer.status_code == status
    assert ("ratelimit-reset" in answer.headers) is headers
    body = answer.json() if answer.content else {}
    assert body.get("error", {}).get("code") == code
    assert "carol@example.com" not in members(sandbox, "Search")  # refused before the endpoint
    assert pd.get("/teams").status_code == 200  # another endpoint is untouched
    assert faults_logged(sandbox) == [sandbox.faults.plan.rules[0].label, None]


def test_a_status_fault_after_the_endpoint_loses_the_answer_of_a_write_that_was_applied(
    sandbox: RunningSandbox, pd: httpx.Client
) -> None:
    use(sandbox, {"kind": "status", "status": 502, "when": "after", "endpoint": "POST /teams"})
    answer = pd.post("/teams", json={"team": {"type": "team", "name": "Billing"}})
    assert answer.status_code == 502
    assert sandbox.state.pagerduty.team_by_name("Billing") is not None


def test_latency_delays_the_answer(sandbox: RunningSandbox, pd: httpx.Client) -> None:
    use(sandbox, {"kind": "latency", "latency_ms": 300, "endpoint": "GET /users"})
    started = time.perf_counter()
    assert pd.get("/users").status_code == 200
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    assert pd.get("/teams").status_code == 200
    assert time.perf_counter() - started < 0.3


@pytest.mark.parametrize(("when", "applied"), [("before", False), ("after", True)])
def test_a_timeout_hangs_past_the_clients_patience(sandbox: RunningSandbox, when: str, applied: bool) -> None:
    use(sandbox, {"kind": "timeout", "hang_seconds": 1.5, "when": when, "endpoint": "PUT *"})
    team_id, user_id = team_and_user(sandbox, "Search", "carol@example.com")
    with pytest.raises(httpx.ReadTimeout):
        httpx.put(
            f"{sandbox.pagerduty_url}/teams/{team_id}/users/{user_id}",
            json={"role": "observer"},
            headers=HEADERS,
            timeout=0.3,
        )
    time.sleep(0.1)  # the endpoint ran (or not) right away; only the answer hangs
    assert ("carol@example.com" in members(sandbox, "Search")) is applied


@pytest.mark.parametrize(("when", "applied"), [("before", False), ("after", True)])
def test_a_dropped_connection_leaves_no_complete_answer(
    sandbox: RunningSandbox, pd: httpx.Client, when: str, applied: bool
) -> None:
    use(
        sandbox,
        {"kind": "drop", "when": when, "endpoint": "PUT *"},
        {"kind": "drop", "when": when, "endpoint": "GET /users"},
    )
    team_id, user_id = team_and_user(sandbox, "Search", "carol@example.com")
    with pytest.raises(httpx.RemoteProtocolError):
        pd.put(f"/teams/{team_id}/users/{user_id}", json={"role": "observer"})
    with pytest.raises(httpx.RemoteProtocolError):
        pd.get("/users")
    assert ("carol@example.com" in members(sandbox, "Search")) is applied
    assert pd.get("/teams").status_code == 200  # the server survives its dropped connections
    assert faults_logged(sandbox) == ["drop", "drop", None]


def test_a_truncated_page_is_cut_short_and_says_more_honestly(
    sandbox: RunningSandbox, pd: httpx.Client
) -> None:
    use(sandbox, {"kind": "truncate", "keep_share": 0.5, "endpoint": "GET /users", "first_arrivals": 1})
    page = pd.get("/users", params={"limit": 4, "offset": 0}).json()
    assert len(page["users"]) == 2 and page["more"] is True
    # What was cut is still there at the next offset; the listing reads to its end.
    emails = [u["email"] for u in page["users"]]
    offset = len(page["users"])
    while page["more"]:
        page = pd.get("/users", params={"limit": 4, "offset": offset}).json()
        emails += [u["email"] for u in page["users"]]
        offset += len(page["users"])
    assert sorted(emails) == sorted(u.email for u in sandbox.state.pagerduty.users.values())
    # The same request again is not cut: first_arrivals=1.
    assert len(pd.get("/users", params={"limit": 4, "offset": 0}).json()["users"]) == 4


def test_a_read_after_a_write_sees_the_old_state_for_the_lag(
    sandbox: RunningSandbox, pd: httpx.Client
) -> None:
    use(sandbox, {"kind": "lag", "lag_ms": 600, "endpoint": "PUT *"})
    team_id, user_id = team_and_user(sandbox, "Search", "carol@example.com")
    path = f"/teams/{team_id}/members"

    def member_ids() -> list[str]:
        return sorted(m["user"]["id"] for m in pd.get(path).json()["members"])

    before = member_ids()
    assert pd.put(f"/teams/{team_id}/users/{user_id}", json={"role": "observer"}).status_code == 204
    assert "carol@example.com" in members(sandbox, "Search")
    assert member_ids() == before  # stale: the write is applied but not yet visible
    time.sleep(0.7)
    assert user_id in member_ids()
    assert faults_logged(sandbox) == [None, "lag", "stale_read", None]


def test_pagerduty_refuses_to_remove_an_escalation_policy_target(
    sandbox: RunningSandbox, pd: httpx.Client
) -> None:
    use(sandbox, {"kind": "refuse_removal"})
    team_id, user_id = team_and_user(sandbox, "Payments", "carol@example.com")  # a target of no policy
    answer = pd.delete(f"/teams/{team_id}/users/{user_id}")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == 2001
    assert error["errors"] == ["User cannot be removed as they belong to an escalation policy on this team"]
    assert "carol@example.com" in members(sandbox, "Payments")


def test_an_echo_repeats_the_request_headers_in_pagerdutys_error_shape(
    sandbox: RunningSandbox, pd: httpx.Client
) -> None:
    use(sandbox, {"kind": "echo_headers", "status": 400, "provider": "pagerduty", "endpoint": "PUT *"})
    team_id, user_id = team_and_user(sandbox, "Search", "carol@example.com")

    answer = pd.put(f"/teams/{team_id}/users/{user_id}", json={"role": "responder"})

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert set(error) == {"message", "code", "errors"} and isinstance(error["code"], int)
    said = f"authorization: Token token={PAGERDUTY_TOKEN}"
    assert said in error["message"] and f"PUT /pagerduty/teams/{team_id}/users/{user_id}" in error["message"]
    assert said in error["errors"] and "accept: application/vnd.pagerduty+json;version=2" in error["errors"]
    assert "carol@example.com" not in members(sandbox, "Search")  # answered instead of the endpoint
    assert pd.get("/teams").status_code == 200
    assert faults_logged(sandbox) == ["echo_headers", None]
    assert sandbox.faults.injected() == {"echo_headers": 1}
    # The sandbox's own log still keeps the token out.
    assert {e["authorization"] for e in sandbox.requests("pagerduty")} == {"Token token=[REDACTED]"}


def test_an_echo_repeats_the_request_headers_in_cortexs_and_slacks_error_shapes(
    sandbox: RunningSandbox, cortex: httpx.Client
) -> None:
    use(sandbox, {"kind": "echo_headers", "status": 403})

    teams = cortex.get("/api/v1/teams")
    assert teams.status_code == 403
    body = teams.json()
    assert body["httpStatus"] == 403 and body["message"]
    assert f"authorization: Bearer {CORTEX_TOKEN}" in body["details"]

    posted = httpx.post(
        sandbox.slack_url + "chat.postMessage",
        json={"channel": "ops-changes", "text": "hello"},
        headers={"Authorization": f"Bearer {SLACK_TOKEN}"},
    )
    assert posted.status_code == 403
    answer = posted.json()
    assert answer["ok"] is False and answer["error"] == "invalid_request"
    assert f"[ERROR] authorization: Bearer {SLACK_TOKEN}" in answer["response_metadata"]["messages"]
    assert sandbox.state.slack.messages == []


def test_an_echo_in_plain_text_names_the_refused_credential_first(
    sandbox: RunningSandbox, pd: httpx.Client
) -> None:
    use(sandbox, {"kind": "echo_headers", "status": 502, "echo_format": "text", "endpoint": "GET /users"})

    answer = pd.get("/users")

    assert answer.status_code == 502 and answer.headers["content-type"].startswith("text/plain")
    first, *rest = answer.text.splitlines()
    assert first.startswith(f"502 Bad Gateway: refused authorization: Token token={PAGERDUTY_TOKEN} ")
    assert f"authorization: Token token={PAGERDUTY_TOKEN}" in rest and "Request headers:" in rest


def test_an_echo_after_the_endpoint_replaces_the_answer_of_a_write_that_was_applied(
    sandbox: RunningSandbox, pd: httpx.Client
) -> None:
    use(sandbox, {"kind": "echo_headers", "status": 500, "when": "after", "endpoint": "PUT *"})
    team_id, user_id = team_and_user(sandbox, "Search", "carol@example.com")

    answer = pd.put(f"/teams/{team_id}/users/{user_id}", json={"role": "observer"})

    assert answer.status_code == 500
    assert PAGERDUTY_TOKEN in answer.json()["error"]["message"]
    assert members(sandbox, "Search")["carol@example.com"] == "observer"


def test_rules_are_per_provider_and_endpoint(
    sandbox: RunningSandbox, pd: httpx.Client, cortex: httpx.Client
) -> None:
    use(
        sandbox,
        {"kind": "status", "status": 503, "provider": "pagerduty", "endpoint": "GET /teams/{id}/members"},
    )
    team_id, _ = team_and_user(sandbox, "Search", "dave@example.com")
    assert pd.get(f"/teams/{team_id}/members").status_code == 503
    assert pd.get(f"/teams/{team_id}").status_code == 200
    assert pd.get("/teams").status_code == 200
    assert cortex.get("/api/v1/teams").status_code == 200


def drawn_faults(seed: int) -> list[str | None]:
    """The faults of 60 requests to a fresh sandbox under a 30 % mix with this seed."""
    rules = [{"kind": "status", "status": s, "rate": 0.1} for s in (500, 502, 503)]
    with running_sandbox(seeded_org(), tokens=TOKENS) as sandbox, httpx.Client(headers=HEADERS) as http:
        use(sandbox, *rules, seed=seed)
        for offset in range(20):
            for path in ("/users", "/teams", "/escalation_policies"):
                http.get(sandbox.pagerduty_url + path, params={"offset": offset})
        return [
            e["fault"]
            for e in sorted(sandbox.requests("pagerduty"), key=lambda e: (e["path"], e["query"]["offset"]))
        ]


def test_the_same_seed_injects_the_same_faults_into_the_same_requests() -> None:
    first, again, other = drawn_faults(7), drawn_faults(7), drawn_faults(8)
    assert first == again
    assert first != other
    assert 6 <= sum(f is not None for f in first) <= 30  # about 30 % of 60


def test_the_admin_endpoint_sets_reads_and_clears_the_plan(sandbox: RunningSandbox, pd: httpx.Client) -> None:
    admin = sandbox.url + "/_admin/faults"
    plan = {"seed": 3, "rules": [{"kind": "status", "status": 500, "endpoint": "GET /users"}]}
    assert httpx.put(admin, json=plan).status_code == 200
    assert pd.get("/users").status_code == 500
    view = httpx.get(admin).json()
    assert view["plan"]["seed"] == 3 and view["plan"]["rules"][0]["status"] == 500
    assert view["injected"] == {"status_500": 1}

    refused = httpx.put(admin, json={"rules": [{"kind": "status", "status": 418, "rate": 2}]})
    assert refused.status_code == 400
    assert "rules.0.status" in refused.json()["error"] and "rules.0.rate" in refused.json()["error"]
    assert httpx.put(admin, content=b"{").status_code == 400

    assert httpx.delete(admin).status_code == 204
    assert pd.get("/users").status_code == 200
    assert httpx.get(admin).json() == {"plan": {"seed": 0, "rules": []}, "injected": {}}


def test_a_plan_is_read_from_yaml_or_json_and_a_bad_one_is_refused_at_start(tmp_path: Path) -> None:
    yaml_plan = tmp_path / "faults.yaml"
    yaml_plan.write_text("seed: 5\nrules:\n  - {kind: drop, rate: 0.1, endpoint: 'GET *'}\n")
    json_plan = tmp_path / "faults.json"
    json_plan.write_text(
        json.dumps({"seed": 5, "rules": [{"kind": "drop", "rate": 0.1, "endpoint": "GET *"}]})
    )
    assert load_plan(yaml_plan) == load_plan(json_plan)
    assert load_plan(yaml_plan).rules[0].kind == "drop"

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{kind: explode}]\n")
    with pytest.raises(FaultPlanError, match=r"rules\.0\.kind"):
        load_plan(bad)
    result = CliRunner().invoke(main, ["sandbox", "--generate-teams", "1", "--faults", str(bad)])
    assert result.exit_code == 2
    assert "rules.0.kind" in result.output


@pytest.fixture
def started_with_faults() -> Iterator[RunningSandbox]:
    plan = parse_plan({"rules": [{"kind": "status", "status": 503, "endpoint": "GET /teams"}]})
    with running_sandbox(seeded_org(), tokens=TOKENS, faults=plan) as sandbox:
        yield sandbox


def test_a_plan_given_at_start_is_in_force_from_the_first_request(
    started_with_faults: RunningSandbox,
) -> None:
    assert httpx.get(started_with_faults.pagerduty_url + "/teams", headers=HEADERS).status_code == 503
    assert started_with_faults.faults.injected() == {"status_503": 1}
