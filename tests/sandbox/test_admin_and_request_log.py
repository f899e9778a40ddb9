"""The admin endpoints and the request log: filters, clearing, state dump, and no token ever kept."""

import json

import httpx
from sandbox_seed import CORTEX_TOKEN, PAGERDUTY_TOKEN, SLACK_TOKEN

from nthlayer_pipelines.sandbox import RunningSandbox, SandboxOrg


def _touch_every_provider(sandbox: RunningSandbox) -> None:
    httpx.get(
        sandbox.pagerduty_url + "/teams?limit=5", headers={"Authorization": f"Token token={PAGERDUTY_TOKEN}"}
    )
    httpx.get(sandbox.pagerduty_url + "/teams", headers={"Authorization": "Token token=not-the-token"})
    httpx.get(sandbox.cortex_url + "/api/v1/teams", headers={"Authorization": f"Bearer {CORTEX_TOKEN}"})
    httpx.post(
        sandbox.slack_url + "chat.postMessage",
        headers={"Authorization": f"Bearer {SLACK_TOKEN}"},
        json={"channel": "ops-changes", "text": "hello"},
    )
    httpx.post(sandbox.slack_url + f"auth.test?token={SLACK_TOKEN}")


def test_request_log_records_each_request_without_credentials(sandbox: RunningSandbox) -> None:
    _touch_every_provider(sandbox)
    body = httpx.get(sandbox.url + "/_admin/requests").json()

    entries = body["requests"]
    assert [(e["provider"], e["method"], e["endpoint"], e["status"]) for e in entries] == [
        ("pagerduty", "GET", "GET /teams", 200),
        ("pagerduty", "GET", "GET /teams", 401),
        ("cortex", "GET", "GET /api/v1/teams", 200),
        ("slack", "POST", "POST /api/chat.postMessage", 200),
        ("slack", "POST", "POST /api/auth.test", 200),
    ]
    assert entries[0]["path"] == "/pagerduty/teams"
    assert entries[0]["query"] == {"limit": ["5"]}
    assert [e["authorization"] for e in entries] == [
        "Token token=[REDACTED]",
        "Token token=[REDACTED]",
        "Bearer [REDACTED]",
        "Bearer [REDACTED]",
        None,
    ]
    assert entries[4]["query"] == {"token": ["[REDACTED]"]}
    dumped = json.dumps(body)
    for secret in (PAGERDUTY_TOKEN, CORTEX_TOKEN, SLACK_TOKEN, "not-the-token"):
        assert secret not in dumped
    assert body["dropped"] == 0


def test_request_log_filters_by_provider_and_method(sandbox: RunningSandbox) -> None:
    _touch_every_provider(sandbox)
    slack_posts = httpx.get(sandbox.url + "/_admin/requests", params={"provider": "slack", "method": "post"})
    assert [e["endpoint"] for e in slack_posts.json()["requests"]] == [
        "POST /api/chat.postMessage",
        "POST /api/auth.test",
    ]
    assert len(sandbox.requests(provider="pagerduty")) == 2
    assert sandbox.requests(provider="cortex", method="POST") == []
    assert httpx.get(sandbox.url + "/_admin/requests", params={"provider": "jira"}).status_code == 400


def test_clearing_the_request_log(sandbox: RunningSandbox) -> None:
    _touch_every_provider(sandbox)
    assert httpx.delete(sandbox.url + "/_admin/requests").status_code == 204
    assert httpx.get(sandbox.url + "/_admin/requests").json()["requests"] == []
    assert sandbox.requests() == []


def test_admin_requests_are_not_logged(sandbox: RunningSandbox) -> None:
    httpx.get(sandbox.url + "/_admin/health")
    httpx.get(sandbox.url + "/_admin/state")
    assert sandbox.requests() == []


def test_state_dump_shows_the_live_org(sandbox: RunningSandbox, org: SandboxOrg) -> None:
    payments = org.pagerduty.team_by_name("Payments")
    carol = org.pagerduty.user_by_email("carol@example.com")
    org.pagerduty.set_membership(payments.id, carol.id, "manager")

    state = httpx.get(sandbox.url + "/_admin/state").json()

    assert sorted(state) == ["cortex", "pagerduty", "slack"]
    assert [u["email"] for u in state["pagerduty"]["users"]] == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    assert {"team_id": payments.id, "user_id": carol.id, "role": "manager"} in state["pagerduty"][
        "memberships"
    ]
    assert len(state["pagerduty"]["memberships"]) == 5
    assert [p["name"] for p in state["pagerduty"]["escalation_policies"]] == [
        "Payments On-Call",
        "Search On-Call",
    ]
    assert [t["tag"] for t in state["cortex"]["teams"]] == ["data", "empty", "legacy"]
    assert state["slack"]["channels"] == [{"id": org.slack.resolve("ops-changes"), "name": "ops-changes"}]


def test_health_counts_the_org(sandbox: RunningSandbox) -> None:
    health = httpx.get(sandbox.url + "/_admin/health").json()
    assert health["status"] == "ok"
    assert health["accounts"] == {"pagerduty": {"subdomain": sandbox.state.pagerduty.subdomain}}
    assert health["counts"]["pagerduty_users"] == 4
    assert health["counts"]["pagerduty_memberships"] == 5
    assert health["counts"]["cortex_teams"] == 3
