"""CortexClient over real loopback HTTP: the sandbox's teams API, and a scripted server for broken answers."""

from __future__ import annotations

import json
import logging

import pytest

from nthlayer_pipelines.core.model import Member, Role, SourceError, Team
from nthlayer_pipelines.desired.cortex import teams_from_cortex
from nthlayer_pipelines.resources.cortex.client import CortexClient
from nthlayer_pipelines.resources.cortex.resource import CortexResource
from nthlayer_pipelines.sandbox import org_from_seed, running_sandbox
from tests.scripted_server import Reply, ScriptedServer, Stall, closed_port

TOKEN = "cortex-test-secret-77b1"
TOKENS = {"pagerduty": "pd-test-secret-3f9a7c", "cortex": TOKEN}

SEED = {
    "cortex": {
        "teams": [
            {
                "tag": "payments",
                "name": "Payments",
                "members": [
                    {"email": "Alice@Example.com", "name": "Alice", "roles": ["oncall-manager"]},
                    {"email": "bob@example.com", "name": "Bob", "roles": ["observer", "tech-lead"]},
                    {"email": "carol@example.com", "name": "Carol", "roles": []},
                ],
            },
            {
                "tag": "legacy-ops",
                "name": "Legacy Ops",
                "archived": True,
                "members": [{"email": "mallory@example.com", "roles": ["manager"]}],
            },
            {"tag": "search", "name": "Search", "members": []},
        ]
    }
}


def cortex_payload(*teams: dict) -> dict:
    return {"teams": list(teams)}


def api_team(tag: str) -> dict:
    return {
        "id": f"en{tag}",
        "teamTag": tag,
        "catalogEntityTag": tag,
        "isArchived": False,
        "type": "CORTEX",
        "metadata": {"name": tag.title()},
        "links": [],
        "slackChannels": [],
        "cortexTeam": {
            "members": [{"name": "A", "email": "a@example.com", "notificationsEnabled": True, "roles": []}]
        },
    }


def scripted_client(server: ScriptedServer, **options) -> CortexClient:
    options = {"max_attempts": 3, "backoff_base_seconds": 0.001, "max_backoff_seconds": 0.01, **options}
    return CortexClient(server.url, TOKEN, **options)


def test_teams_are_read_and_mapped_archived_ignored_roles_mapped():
    resource_options = {"api_token": TOKEN, "prune": True}
    with running_sandbox(org_from_seed(SEED), tokens=TOKENS) as sandbox:
        resource = CortexResource(api_url=sandbox.cortex_url, **resource_options)
        assert TOKEN not in repr(resource) + str(resource)
        with resource.client() as client:
            raw = client.list_teams()
            assert client.api_calls == 1
        (request,) = sandbox.requests(provider="cortex")
    assert [(t.team_tag, t.is_archived) for t in raw] == [
        ("payments", False),
        ("legacy-ops", True),
        ("search", False),
    ]
    assert request["path"] == "/cortex/api/v1/teams"
    assert request["query"] == {"includeTeamsWithoutMembers": ["true"]}
    assert request["authorization"] == "Bearer [REDACTED]"

    role_map, default_role = resource.roles()
    teams = teams_from_cortex(raw, role_map=role_map, default_role=default_role, prune=resource.prune)
    assert teams == [
        Team(
            name="payments",
            display_name="Payments",
            members=(
                Member(email="alice@example.com", role=Role.MANAGER),  # oncall-manager
                Member(email="bob@example.com", role=Role.OBSERVER),  # tech-lead is not mapped
                Member(email="carol@example.com", role=Role.RESPONDER),  # no tag: the default
            ),
            prune=True,
            source="cortex",
            origin="cortex:payments",
        ),
        Team(name="search", display_name="Search", prune=True, source="cortex", origin="cortex:search"),
    ]


def test_teams_without_members_can_be_left_out():
    with (
        running_sandbox(org_from_seed(SEED), tokens=TOKENS) as sandbox,
        CortexClient(sandbox.cortex_url, TOKEN) as client,
    ):
        assert [t.team_tag for t in client.list_teams(include_without_members=False)] == [
            "payments",
            "legacy-ops",
        ]


def test_a_wrong_token_names_the_variable_and_never_the_token(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    wrong = "cortex-wrong-secret-1111"
    with running_sandbox(org_from_seed(SEED), tokens=TOKENS) as sandbox:
        with CortexClient(sandbox.cortex_url, wrong) as client, pytest.raises(SourceError) as caught:
            client.list_teams()
        assert client.api_calls == 1
    message = str(caught.value)
    assert message == (
        "Cortex GET /api/v1/teams: Unauthorized (Missing or invalid Authorization header: expected "
        "'Bearer <API key>') (HTTP 401); check the API token in CORTEX_API_TOKEN"
    )
    assert wrong not in message + repr(client) + caplog.text


def test_a_truncated_answer_is_a_source_error():
    body = json.dumps(cortex_payload(api_team("payments"))).encode()[:-30]
    with (
        ScriptedServer(Reply(200, body, {"Content-Type": "application/json"})) as server,
        scripted_client(server) as client,
        pytest.raises(SourceError, match=r"^Cortex GET /api/v1/teams: the answer is not valid JSON \("),
    ):
        client.list_teams()


def test_an_answer_without_teams_is_a_source_error_naming_the_field():
    with (
        ScriptedServer(Reply(200, {"entities": []})) as server,
        scripted_client(server) as client,
        pytest.raises(
            SourceError, match=r"^Cortex GET /api/v1/teams: the answer does not parse: teams: Field required$"
        ),
    ):
        client.list_teams()


def test_a_500_is_retried_then_a_source_error_with_cortexs_message():
    failure = Reply(
        500,
        {"type": "UNHANDLED_EXCEPTION", "message": "Internal error", "httpStatus": 500, "requestId": "r-1"},
    )
    with (
        ScriptedServer(failure, failure, failure) as server,
        scripted_client(server) as client,
        pytest.raises(SourceError) as caught,
    ):
        client.list_teams()
    assert str(caught.value) == "Cortex GET /api/v1/teams: Internal error (HTTP 500, after 3 attempts)"
    assert (len(server.requests), client.retries) == (3, 2)


def test_a_429_waits_retry_after_and_a_timeout_is_retried():
    sleeps: list[float] = []
    rate_limited = Reply(
        429, {"type": "about:blank", "title": "Too Many Requests", "status": 429}, {"Retry-After": "2"}
    )
    with (
        ScriptedServer(rate_limited, Stall(0.3), Reply(200, cortex_payload(api_team("payments")))) as server,
        scripted_client(server, sleep=sleeps.append, timeout=0.1, max_backoff_seconds=5.0) as client,
    ):
        assert [t.team_tag for t in client.list_teams()] == ["payments"]
    assert sleeps[0] == 2.0
    assert (client.api_calls, client.retries, client.rate_limited) == (3, 2, 1)
    assert server.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_no_answer_at_all_is_a_source_error_after_the_retries():
    with (
        CortexClient(
            f"http://127.0.0.1:{closed_port()}", TOKEN, max_attempts=2, backoff_base_seconds=0.001
        ) as client,
        pytest.raises(SourceError) as caught,
    ):
        client.list_teams()
    assert str(caught.value).startswith(
        "Cortex GET /api/v1/teams: got no answer after 2 attempt(s) (ConnectError"
    )
    assert client.api_calls == 2


def test_an_unset_source_is_off_and_refuses_to_build_a_client():
    resource = CortexResource()
    assert resource.enabled is False
    with pytest.raises(SourceError, match="Cortex source is off"):
        resource.client()
