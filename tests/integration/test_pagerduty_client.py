"""PagerDutyClient over real loopback HTTP: against the sandbox, and against a scripted server for the
failures the sandbox does not produce (5xx, bare 429s, timeouts, dropped connections, broken paging)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from nthlayer_pipelines.core.model import Role
from nthlayer_pipelines.resources.pagerduty.client import (
    PagerDutyAuthError,
    PagerDutyClient,
    PagerDutyError,
    PaginationLimitError,
    WriteOutcomeUnknownError,
)
from nthlayer_pipelines.resources.pagerduty.models import (
    PagerDutyEscalationPolicy,
    PagerDutyMember,
    PagerDutyTeam,
    PagerDutyUser,
)
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.sandbox import SandboxOrg, generate_org, running_sandbox
from tests.scripted_server import Drop, Reply, ScriptedServer, Stall, closed_port

TOKEN = "pd-test-secret-3f9a7c"
TOKENS = {"pagerduty": TOKEN, "cortex": "cortex-test-secret-77b1"}


def page(
    collection: str, items: list[dict[str, Any]], *, more: bool = False, offset: int = 0
) -> dict[str, Any]:
    return {collection: items, "limit": 100, "offset": offset, "more": more, "total": None}


TEAM = {"id": "PT00001", "type": "team", "name": "Payments", "description": None}


def scripted_client(server: ScriptedServer, **options: Any) -> PagerDutyClient:
    options = {"max_attempts": 4, "backoff_base_seconds": 0.001, "max_backoff_seconds": 0.01, **options}
    return PagerDutyClient(server.url, TOKEN, **options)


# ---- against the sandbox -----------------------------------------------------------------------------


def sandbox_client(sandbox: Any, **options: Any) -> PagerDutyClient:
    options = {"backoff_base_seconds": 0.001, "max_backoff_seconds": 2.0, **options}
    return PagerDutyClient(sandbox.pagerduty_url, TOKEN, **options)


def gets(sandbox: Any, path: str) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests(provider="pagerduty", method="GET") if r["path"] == path]


def large_org() -> tuple[SandboxOrg, str]:
    """230 teams and 130 users, every user on the first team."""
    org = SandboxOrg(seed=3)
    pd = org.pagerduty
    users = [pd.add_user(f"User {n:03d}", f"User.{n:03d}@Example.com").id for n in range(130)]
    teams = [pd.add_team(f"Team {n:03d}").id for n in range(230)]
    for n, user_id in enumerate(users):
        pd.set_membership(teams[0], user_id, ("manager", "responder", "observer")[n % 3])
    return org, teams[0]


def test_every_page_is_read_in_the_fewest_requests():
    org, big_team = large_org()
    with running_sandbox(org, tokens=TOKENS) as sandbox, sandbox_client(sandbox) as client:
        users = client.list_users()
        teams = client.list_teams()
        members = client.list_team_members(big_team)
        assert (len(users), len(teams), len(members)) == (130, 230, 130)
        assert len({u.id for u in users}) == 130
        assert users[0] == PagerDutyUser(id=users[0].id, name="User 000", email="user.000@example.com")
        assert members[:2] == [
            PagerDutyMember(team_id=big_team, user_id=users[0].id, role=Role.MANAGER),
            PagerDutyMember(team_id=big_team, user_id=users[1].id, role=Role.RESPONDER),
        ]
        # ceil(n / 100) requests each, with the page size at PagerDuty's maximum:
        assert [len(gets(sandbox, "/pagerduty" + p)) for p in ("/users", "/teams")] == [2, 3]
        assert len(gets(sandbox, f"/pagerduty/teams/{big_team}/members")) == 2
        assert {r["query"]["limit"][0] for r in sandbox.requests(provider="pagerduty")} == {"100"}
        assert client.api_calls == 7
        assert (client.retries, client.rate_limited) == (0, 0)


def test_a_listing_past_the_offset_limit_raises_instead_of_truncating():
    org = generate_org(1, members_per_team=1, users=10_050)
    with running_sandbox(org, tokens=TOKENS) as sandbox, sandbox_client(sandbox) as client:
        with pytest.raises(PaginationLimitError) as caught:
            client.list_users()
        requests = gets(sandbox, "/pagerduty/users")
    assert str(caught.value) == (
        "PagerDuty GET /users: more than 10000 users: PagerDuty's offset pagination stops at 10000, "
        "so this listing cannot be read in full; narrow it with a filter"
    )
    # Every page up to the limit, and not one request past it:
    assert len(requests) == 100
    assert {r["status"] for r in requests} == {200}
    assert requests[-1]["query"]["offset"] == ["9900"]


def test_a_wrong_token_names_the_variable_and_never_the_token(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    wrong = "pd-wrong-secret-0000"
    with running_sandbox(SandboxOrg(), tokens=TOKENS) as sandbox:
        with (
            PagerDutyClient(sandbox.pagerduty_url, wrong) as client,
            pytest.raises(PagerDutyAuthError) as caught,
        ):
            client.list_users()
        assert client.api_calls == 1  # a 401 is not retried
    message = str(caught.value)
    assert message == (
        "PagerDuty GET /users: Authentication failed (HTTP 401, code 2006); "
        "check the API token in PAGERDUTY_API_TOKEN"
    )
    assert wrong not in message + repr(caught.value) + repr(client) + caplog.text


def test_a_429_waits_the_reset_the_headers_name_then_succeeds():
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    org = SandboxOrg()
    org.pagerduty.add_team("Payments")
    with (
        running_sandbox(org, tokens=TOKENS, rate_limit=2, rate_window_seconds=1.0) as sandbox,
        sandbox_client(sandbox, sleep=sleep) as client,
    ):
        started = time.monotonic()
        results = [client.list_teams() for _ in range(3)]
        elapsed = time.monotonic() - started
        statuses = [r["status"] for r in sandbox.requests(provider="pagerduty")]
    assert [[t.name for t in teams] for teams in results] == [["Payments"]] * 3
    assert statuses == [200, 200, 429, 200]
    assert sleeps == [1.0]  # the sandbox's ratelimit-reset, not a backoff guess
    assert elapsed >= 1.0
    assert (client.api_calls, client.retries, client.rate_limited) == (4, 1, 1)


def payments_org() -> tuple[SandboxOrg, dict[str, str]]:
    org = SandboxOrg(seed=5)
    pd = org.pagerduty
    ids = {name: pd.add_user(name.title(), f"{name}@example.com").id for name in ("alice", "bob", "carol")}
    team = pd.add_team("Payments", "Takes the money")
    pd.add_team("Payments Platform")
    pd.set_membership(team.id, ids["alice"], "manager")
    pd.set_membership(team.id, ids["bob"], "observer")
    pd.add_escalation_policy("Payments On-Call", [team.id], [ids["alice"]])
    return org, {**ids, "team": team.id}


def roles_of(client: PagerDutyClient, team_id: str, ids: dict[str, str]) -> dict[str, str]:
    names = {v: k for k, v in ids.items()}
    return {names[m.user_id]: m.role.value for m in client.list_team_members(team_id)}


def test_writes_are_applied_and_read_back():
    org, ids = payments_org()
    team_id = ids["team"]
    with running_sandbox(org, tokens=TOKENS) as sandbox, sandbox_client(sandbox) as client:
        client.set_membership(team_id, ids["carol"], "responder")
        client.set_membership(team_id, ids["bob"], Role.MANAGER)
        assert roles_of(client, team_id, ids) == {"alice": "manager", "bob": "manager", "carol": "responder"}
        client.remove_membership(team_id, ids["carol"])
        assert roles_of(client, team_id, ids) == {"alice": "manager", "bob": "manager"}

        created = client.create_team("Search", "Finds things")
        assert created == PagerDutyTeam(id=created.id, name="Search", description="Finds things")
        assert client.find_team_by_name("search") == created
        assert client.get_team(created.id) == created
        assert sandbox.state.pagerduty.team_by_name("Search").id == created.id
        writes = [
            (r["method"], r["status"]) for r in sandbox.requests(provider="pagerduty") if r["method"] != "GET"
        ]
    assert writes == [("PUT", 204), ("PUT", 204), ("DELETE", 204), ("POST", 201)]


def test_a_role_outside_pagerdutys_is_refused_before_sending():
    org, ids = payments_org()
    with running_sandbox(org, tokens=TOKENS) as sandbox, sandbox_client(sandbox) as client:
        with pytest.raises(ValueError, match="'owner' is not a valid Role"):
            client.set_membership(ids["team"], ids["carol"], "owner")
        assert client.api_calls == 0


def test_a_removal_blocked_by_an_escalation_policy_surfaces_pagerdutys_refusal():
    org, ids = payments_org()
    with running_sandbox(org, tokens=TOKENS) as sandbox, sandbox_client(sandbox) as client:
        with pytest.raises(PagerDutyError) as caught:
            client.remove_membership(ids["team"], ids["alice"])
        policies = client.list_escalation_policies(team_ids=[ids["team"]])
        assert roles_of(client, ids["team"], ids) == {"alice": "manager", "bob": "observer"}
        assert client.api_calls == 3  # the 400 was not retried
        (listing,) = gets(sandbox, "/pagerduty/escalation_policies")
    assert listing["query"] == {"team_ids[]": [ids["team"]], "limit": ["100"], "offset": ["0"]}
    error = caught.value
    assert (error.status, error.code, error.method) == (400, 2001, "DELETE")
    assert "User cannot be removed as they belong to an escalation policy on this team" in str(error)
    (policy,) = policies
    assert isinstance(policy, PagerDutyEscalationPolicy)
    assert (policy.name, policy.team_ids, policy.user_ids) == (
        "Payments On-Call",
        (ids["team"],),
        (ids["alice"],),
    )


def test_teams_are_found_by_exact_name_ignoring_case_and_unknown_ids_are_none():
    org, ids = payments_org()
    with running_sandbox(org, tokens=TOKENS) as sandbox, sandbox_client(sandbox) as client:
        found = client.find_team_by_name("PAYMENTS")
        assert found == PagerDutyTeam(id=ids["team"], name="Payments", description="Takes the money")
        assert client.find_team_by_name("Pay") is None
        assert client.get_team("PZZZZZZ") is None
        assert gets(sandbox, "/pagerduty/teams")[0]["query"]["query"] == ["PAYMENTS"]


def test_the_resource_builds_a_client_from_its_config():
    org, _ = payments_org()
    with running_sandbox(org, tokens=TOKENS) as sandbox:
        resource = PagerDutyResource(api_url=sandbox.pagerduty_url, api_token=TOKEN, max_attempts=2)
        assert TOKEN not in repr(resource) + str(resource)
        with resource.client() as client:
            assert [t.name for t in client.list_teams()] == ["Payments", "Payments Platform"]
            assert client.policy.max_attempts == 2


# ---- against a scripted server: what the sandbox does not produce --------------------------------------


def test_requests_carry_pagerdutys_headers_and_from_only_on_writes():
    with (
        ScriptedServer(Reply(200, page("teams", [TEAM])), Reply(204)) as server,
        scripted_client(server, from_email="bot@example.com") as client,
    ):
        client.list_teams()
        client.set_membership("PT00001", "PU00001", Role.OBSERVER)
    read, write = server.requests
    assert read.headers["Authorization"] == f"Token token={TOKEN}"
    assert read.headers["Accept"] == "application/vnd.pagerduty+json;version=2"
    assert "From" not in read.headers
    assert (write.method, write.path, write.headers["From"]) == (
        "PUT",
        "/teams/PT00001/users/PU00001",
        "bot@example.com",
    )
    assert write.headers["Content-Type"] == "application/json"
    assert json.loads(write.body) == {"role": "observer"}


def test_5xx_answers_are_retried_until_success(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    with (
        ScriptedServer(Reply(502), Reply(503), Reply(500), Reply(200, page("teams", [TEAM]))) as server,
        scripted_client(server) as client,
    ):
        assert [t.id for t in client.list_teams()] == ["PT00001"]
    assert (client.api_calls, client.retries, client.rate_limited) == (4, 3, 0)
    retries = [r.getMessage() for r in caplog.records if r.name == "nthlayer_pipelines.pagerduty"]
    assert [m.split(", retrying")[0] for m in retries] == [
        "GET /teams: HTTP 502 on attempt 1 of 4",
        "GET /teams: HTTP 503 on attempt 2 of 4",
        "GET /teams: HTTP 500 on attempt 3 of 4",
    ]
    assert TOKEN not in caplog.text


def test_a_429_without_headers_backs_off_and_retries():
    sleeps: list[float] = []
    with (
        ScriptedServer(
            Reply(429),
            Reply(429, {"error": {"message": "Rate Limit Exceeded", "code": 2020}}),
            Reply(200, page("teams", [TEAM])),
        ) as server,
        scripted_client(server, sleep=sleeps.append) as client,
    ):
        assert [t.name for t in client.list_teams()] == ["Payments"]
    assert (client.api_calls, client.retries, client.rate_limited) == (3, 2, 2)
    assert len(sleeps) == 2 and all(0 <= s <= 0.01 for s in sleeps)  # jittered backoff, under the cap


def test_retry_after_is_honoured_when_ratelimit_reset_is_absent():
    sleeps: list[float] = []
    with (
        ScriptedServer(Reply(429, headers={"Retry-After": "3"}), Reply(204)) as server,
        scripted_client(server, sleep=sleeps.append, max_backoff_seconds=10.0) as client,
    ):
        client.remove_membership("PT00001", "PU00001")
    assert sleeps == [3.0]


def test_out_of_attempts_a_5xx_is_an_error_with_pagerdutys_message():
    with (
        ScriptedServer(
            *[Reply(500, {"error": {"message": "Internal Server Error", "code": 2000}})] * 3
        ) as server,
        scripted_client(server, max_attempts=3) as client,
        pytest.raises(PagerDutyError) as caught,
    ):
        client.list_users()
    assert (
        str(caught.value)
        == "PagerDuty GET /users: Internal Server Error (after 3 attempts) (HTTP 500, code 2000)"
    )
    assert len(server.requests) == 3


def test_other_4xx_fail_at_once():
    forbidden = Reply(403, {"error": {"message": "Access Denied", "code": 2010}})
    with (
        ScriptedServer(forbidden) as server,
        scripted_client(server) as client,
        pytest.raises(PagerDutyError) as caught,
    ):
        client.list_teams()
    assert (caught.value.status, caught.value.code, len(server.requests)) == (403, 2010, 1)


def test_a_read_timeout_and_a_dropped_connection_are_retried_for_reads():
    with (
        ScriptedServer(Stall(0.3), Drop(), Reply(200, page("users", []))) as server,
        scripted_client(server, timeout=0.1) as client,
    ):
        assert client.list_users() == []
    assert (client.api_calls, client.retries) == (3, 2)


def test_a_put_that_timed_out_is_retried_because_it_is_idempotent():
    with ScriptedServer(Stall(0.3), Reply(204)) as server, scripted_client(server, timeout=0.1) as client:
        client.set_membership("PT00001", "PU00001", "manager")
    assert [(r.method, json.loads(r.body)) for r in server.requests] == [("PUT", {"role": "manager"})] * 2


@pytest.mark.parametrize(
    "failure", [Stall(0.3, Reply(201, {"team": TEAM})), Drop()], ids=["timeout", "dropped"]
)
def test_a_post_that_may_have_been_applied_is_not_sent_again(failure: Stall | Drop):
    with (
        ScriptedServer(failure, Reply(201, {"team": TEAM})) as server,
        scripted_client(server, timeout=0.1) as client,
        pytest.raises(WriteOutcomeUnknownError) as caught,
    ):
        client.create_team("Payments")
    assert len(server.requests) == 1
    assert str(caught.value).startswith("PagerDuty POST /teams: got no answer after 1 attempt(s) (")
    assert str(caught.value).endswith(
        "not retried because the write may have been applied: read the state before writing again"
    )


def test_a_post_refused_before_processing_is_retried():
    with (
        ScriptedServer(Reply(429), Reply(503), Reply(201, {"team": TEAM})) as server,
        scripted_client(server) as client,
    ):
        assert client.create_team("Payments") == PagerDutyTeam(id="PT00001", name="Payments", description="")
    assert [json.loads(r.body) for r in server.requests] == [
        {"team": {"type": "team", "name": "Payments", "description": ""}}
    ] * 3


def test_a_post_answered_500_is_not_retried_and_its_outcome_is_unknown():
    # A 500 may come after the team was created: read before creating again.
    with (
        ScriptedServer(Reply(500), Reply(201, {"team": TEAM})) as server,
        scripted_client(server) as client,
        pytest.raises(PagerDutyError) as caught,
    ):
        client.create_team("Payments")
    assert (type(caught.value), caught.value.status, len(server.requests)) == (
        WriteOutcomeUnknownError,
        500,
        1,
    )


def test_a_post_that_never_connected_is_retried_and_then_fails_plainly():
    with (
        PagerDutyClient(
            f"http://127.0.0.1:{closed_port()}", TOKEN, max_attempts=3, backoff_base_seconds=0.001
        ) as client,
        pytest.raises(PagerDutyError) as caught,
    ):
        client.create_team("Payments")
    assert type(caught.value) is PagerDutyError  # the request never left: nothing can have been applied
    assert str(caught.value).startswith(
        "PagerDuty POST /teams: got no answer after 3 attempt(s) (ConnectError"
    )
    assert (client.api_calls, client.retries) == (3, 2)


def test_a_page_that_says_more_but_is_empty_stops_with_an_error():
    users = [{"id": f"PU{n:05d}", "name": f"U{n}", "email": f"u{n}@example.com"} for n in range(100)]
    with (
        ScriptedServer(
            Reply(200, page("users", users, more=True)), Reply(200, page("users", [], more=True))
        ) as server,
        scripted_client(server) as client,
        pytest.raises(PagerDutyError, match="the page at offset 100 says more=true but brings no new items"),
    ):
        client.list_users()
    assert [r.query["offset"] for r in server.requests] == [["0"], ["100"]]


def test_short_pages_that_keep_saying_more_stop_with_an_error():
    def short(start: int) -> Reply:
        users = [
            {"id": f"PU{n:05d}", "name": f"U{n}", "email": f"u{n}@example.com"}
            for n in range(start, start + 5)
        ]
        return Reply(200, page("users", users, more=True, offset=start))

    with (
        ScriptedServer(short(0), short(5), short(10), short(15)) as server,
        scripted_client(server) as client,
        pytest.raises(PagerDutyError, match="3 pages in a row held fewer items"),
    ):
        client.list_users()
    assert [r.query["offset"] for r in server.requests] == [["0"], ["5"], ["10"]]


def test_a_truncated_body_is_an_error_naming_the_endpoint():
    with (
        ScriptedServer(Reply(200, b'{"teams": [{"id": "PT1", "na')) as server,
        scripted_client(server) as client,
        pytest.raises(PagerDutyError, match=r"PagerDuty GET /teams: the answer is not JSON"),
    ):
        client.list_teams()


def test_an_item_of_the_wrong_shape_is_named():
    with (
        ScriptedServer(Reply(200, page("users", [{"id": "PU1", "name": "No Mail"}]))) as server,
        scripted_client(server) as client,
        pytest.raises(
            PagerDutyError, match="PagerDuty GET /users: item 'PU1' does not parse: email: Field required"
        ),
    ):
        client.list_users()
