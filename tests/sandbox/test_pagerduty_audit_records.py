"""The PagerDuty emulator's audit trail: every write leaves records in PagerDuty's shape, listed newest first
with cursor pagination, and refused with 402 or 403 as PagerDuty refuses them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pagerduty
import pytest
from sandbox_seed import PAGERDUTY_TOKEN, TOKENS, seeded_org

from nthlayer_pipelines.sandbox import RunningSandbox, SandboxOrg, create_app, running_sandbox
from nthlayer_pipelines.sandbox.pagerduty.audit import AuditOrigin, AuditRef

# From PagerDuty's OpenAPI description (components.schemas.AuditRecord and CursorPagination).
RECORD_REQUIRED = {"id", "execution_time", "method", "root_resource", "action"}
RECORD_KEYS = RECORD_REQUIRED | {"self", "execution_context", "actors", "details"}
METHOD_TYPES = {"browser", "oauth", "api_token", "identity_provider", "other"}
METHOD_KEYS = {"type", "truncated_token", "description"}
REFERENCE_KEYS = {"id", "type", "summary", "self", "html_url"}
DETAILS_KEYS = {"resource", "fields", "references"}
FIELD_KEYS = {"name", "description", "value", "before_value"}
REFERENCES_KEYS = {"name", "description", "added", "removed"}
EXECUTION_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TRUNCATED = PAGERDUTY_TOKEN[-4:]  # "oken"


def assert_reference(ref: dict[str, Any]) -> None:
    assert {"id", "type"} <= ref.keys() <= REFERENCE_KEYS, ref
    assert ref["type"].endswith("_reference")


def assert_pagerduty_record(record: dict[str, Any]) -> None:
    """The record has the keys and types PagerDuty's schema gives an audit record, and no others."""
    assert RECORD_REQUIRED <= record.keys() <= RECORD_KEYS, sorted(record)
    assert EXECUTION_TIME.match(record["execution_time"]), record["execution_time"]
    assert record["action"] in {"create", "update", "delete"}
    assert {"type"} <= record["method"].keys() <= METHOD_KEYS
    assert record["method"]["type"] in METHOD_TYPES
    assert_reference(record["root_resource"])
    for actor in record["actors"]:
        assert_reference(actor)
    details = record["details"]
    assert {"resource"} <= details.keys() <= DETAILS_KEYS
    assert_reference(details["resource"])
    for field in details.get("fields", []):
        assert {"name"} <= field.keys() <= FIELD_KEYS
        assert all(isinstance(field[k], str) for k in ("value", "before_value") if k in field)
    for change in details.get("references", []):
        assert {"name"} <= change.keys() <= REFERENCES_KEYS
        for ref in (*change.get("added", []), *change.get("removed", [])):
            assert_reference(ref)


def summary(record: dict[str, Any]) -> tuple[Any, ...]:
    """What a record says, without ids that change from run to run."""
    details = record["details"]
    return (
        record["action"],
        record["root_resource"]["summary"],
        details["resource"]["type"],
        details["resource"]["summary"],
        tuple((f["name"], f.get("before_value"), f.get("value")) for f in details.get("fields", [])),
        tuple(
            (
                c["name"],
                tuple(r["summary"] for r in c.get("added", [])),
                tuple(r["summary"] for r in c.get("removed", [])),
            )
            for c in details.get("references", [])
        ),
    )


def records(client: httpx.Client, path: str = "/audit/records", **params: Any) -> list[dict[str, Any]]:
    response = client.get(path, params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"records", "limit", "next_cursor"}
    for record in body["records"]:
        assert_pagerduty_record(record)
    return body["records"]


class SteppingClock:
    """A clock that moves 1 ms per reading, so records of consecutive calls never share a millisecond."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def jump(self, delta: timedelta) -> None:
        self.now += delta


def ids(org: SandboxOrg, team: str | None = None, email: str | None = None) -> str:
    if team is not None:
        found = org.pagerduty.team_by_name(team)
        assert found is not None
        return found.id
    assert email is not None
    user = org.pagerduty.user_by_email(email)
    assert user is not None
    return user.id


def test_every_api_write_leaves_records_with_the_tokens_last_four_characters(
    org: SandboxOrg, pd: httpx.Client
) -> None:
    payments, dave = ids(org, team="Payments"), ids(org, email="dave@example.com")
    bob, carol = ids(org, email="bob@example.com"), ids(org, email="carol@example.com")

    assert pd.post("/teams", json={"team": {"type": "team", "name": "Checkout"}}).status_code == 201
    assert pd.put(f"/teams/{payments}/users/{dave}", json={"role": "responder"}).status_code == 204
    assert pd.put(f"/teams/{payments}/users/{bob}", json={"role": "observer"}).status_code == 204
    assert pd.put(f"/teams/{payments}/users/{bob}", json={"role": "observer"}).status_code == 204  # no change
    assert pd.delete(f"/teams/{payments}/users/{carol}").status_code == 204

    listed = records(pd)
    assert [summary(r) for r in listed] == [
        ("update", "Payments", "team_reference", "Payments", (), (("members", (), ("Carol Example",)),)),
        (
            "update",
            "Payments",
            "user_reference",
            "Bob Example",
            (("team_role", "responder", "observer"),),
            (),
        ),
        ("update", "Payments", "user_reference", "Dave Example", (("team_role", None, "responder"),), ()),
        ("update", "Payments", "team_reference", "Payments", (), (("members", ("Dave Example",), ()),)),
        (
            "create",
            "Checkout",
            "team_reference",
            "Checkout",
            (("name", None, "Checkout"), ("description", None, ""), ("default_role", None, "manager")),
            (),
        ),
    ]
    assert {r["method"]["type"] for r in listed} == {"api_token"}
    assert {r["method"]["truncated_token"] for r in listed} == {TRUNCATED}
    assert {(a["type"], a["summary"]) for r in listed for a in r["actors"]} == {
        ("api_key_reference", "Sandbox API key")
    }
    request_ids = [r["execution_context"]["request_id"] for r in listed]
    assert request_ids[2] == request_ids[3], "adding a member leaves two records of one request"
    assert len(set(request_ids)) == 4
    assert {r["execution_context"]["remote_address"] for r in listed} == {"127.0.0.1"}
    assert PAGERDUTY_TOKEN not in str(listed)
    times = [r["execution_time"] for r in listed]
    assert times == sorted(times, reverse=True)


def test_a_change_made_in_the_web_ui_is_recorded_without_a_token(org: SandboxOrg, pd: httpx.Client) -> None:
    payments, dave = ids(org, team="Payments"), ids(org, email="dave@example.com")
    org.pagerduty.set_membership(payments, dave, "manager")
    alice = ids(org, email="alice@example.com")
    org.pagerduty.audit.ui_origin = AuditOrigin.browser(AuditRef.user(alice, "Alice Example"))
    org.pagerduty.set_membership(payments, dave, "observer")

    changed_by_alice, role, added = records(pd)
    assert added["method"] == role["method"] == {"type": "browser"}
    assert added["actors"] == role["actors"] == []
    assert summary(added) == (
        "update", "Payments", "team_reference", "Payments", (), (("members", ("Dave Example",), ()),)
    )  # fmt: skip
    assert changed_by_alice["method"] == {"type": "browser"}
    assert [(a["id"], a["type"]) for a in changed_by_alice["actors"]] == [(alice, "user_reference")]
    assert summary(changed_by_alice)[4] == (("team_role", "manager", "observer"),)


def test_team_and_user_changes_made_in_the_ui_leave_create_update_and_delete_records(
    org: SandboxOrg, pd: httpx.Client
) -> None:
    pagerduty_org = org.pagerduty
    search = ids(org, team="Search")
    pagerduty_org.update_team(search, name="Discovery", description="Find things")
    erin = pagerduty_org.add_user("Erin Example", "erin@example.com")
    pagerduty_org.update_user(erin.id, email="erin@example.org")
    pagerduty_org.set_membership(search, erin.id, "responder")
    pagerduty_org.remove_user(erin.id)
    pagerduty_org.remove_team(search)

    assert [(r["root_resource"]["type"], summary(r)) for r in records(pd)] == [
        ("team_reference", ("delete", "Discovery", "team_reference", "Discovery",
                            (("name", "Discovery", None), ("description", "Find things", None)), ())),
        ("user_reference", ("delete", "Erin Example", "user_reference", "Erin Example",
                            (("name", "Erin Example", None), ("email", "erin@example.org", None)), ())),
        ("team_reference", ("update", "Discovery", "user_reference", "Erin Example",
                            (("team_role", None, "responder"),), ())),
        ("team_reference", ("update", "Discovery", "team_reference", "Discovery",
                            (), (("members", ("Erin Example",), ()),))),
        ("user_reference", ("update", "Erin Example", "user_reference", "Erin Example",
                            (("email", "erin@example.com", "erin@example.org"),), ())),
        ("user_reference", ("create", "Erin Example", "user_reference", "Erin Example",
                            (("name", None, "Erin Example"), ("email", None, "erin@example.com"),
                             ("role", None, "user")), ())),
        ("team_reference", ("update", "Discovery", "team_reference", "Discovery",
                            (("name", "Search", "Discovery"), ("description", "", "Find things")), ())),
    ]  # fmt: skip
    assert pagerduty_org.team_by_name("Discovery") is None
    assert pagerduty_org.user_by_email("erin@example.org") is None
    assert all(search not in teams for teams in (pagerduty_org.teams, pagerduty_org.memberships))


def test_a_user_targeted_by_an_escalation_policy_cannot_be_deleted(org: SandboxOrg) -> None:
    with pytest.raises(ValueError, match="target of escalation policies: Payments On-Call"):
        org.pagerduty.remove_user(ids(org, email="alice@example.com"))
    assert org.pagerduty.user_by_email("alice@example.com") is not None


def test_building_an_org_records_nothing_until_the_sandbox_serves_it() -> None:
    org = seeded_org()
    org.pagerduty.set_membership(ids(org, team="Search"), ids(org, email="carol@example.com"), "observer")
    assert len(org.pagerduty.audit) == 0
    create_app(org, tokens=TOKENS)
    org.pagerduty.set_membership(ids(org, team="Search"), ids(org, email="carol@example.com"), "manager")
    assert [r.action for r in org.pagerduty.audit.records()] == ["update"]


@pytest.fixture
def clock(org: SandboxOrg) -> SteppingClock:
    clock = SteppingClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    org.pagerduty.audit.clock = clock
    return clock


def flip_roles(org: SandboxOrg, count: int) -> None:
    """`count` role changes of Bob on Payments, one record each."""
    payments, bob = ids(org, team="Payments"), ids(org, email="bob@example.com")
    for _ in range(count):
        current = org.pagerduty.memberships[payments][bob]
        org.pagerduty.set_membership(payments, bob, "observer" if current == "responder" else "responder")


def test_pages_follow_the_cursor_newest_first_and_the_last_has_no_cursor(
    org: SandboxOrg, pd: httpx.Client, clock: SteppingClock
) -> None:
    flip_roles(org, 7)
    expected = [r.id for r in reversed(org.pagerduty.audit.records())]

    first = pd.get("/audit/records", params={"limit": 3}).json()
    assert (first["limit"], len(first["records"])) == (3, 3)
    assert first["next_cursor"]
    flip_roles(org, 2)  # newer than the first page's `until`: not part of this listing
    second = pd.get("/audit/records", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    third = pd.get("/audit/records", params={"limit": 3, "cursor": second["next_cursor"]}).json()

    assert (len(second["records"]), len(third["records"])) == (3, 1)
    assert third["next_cursor"] is None
    listed = [r["id"] for page in (first, second, third) for r in page["records"]]
    assert listed == expected
    assert len(records(pd)) == 9


def test_limit_is_capped_at_100_and_an_exact_last_page_has_no_cursor(
    org: SandboxOrg, pd: httpx.Client, clock: SteppingClock
) -> None:
    flip_roles(org, 4)
    body = pd.get("/audit/records", params={"limit": 4}).json()
    assert (len(body["records"]), body["next_cursor"]) == (4, None)
    assert pd.get("/audit/records", params={"limit": 500}).json()["limit"] == 100
    assert pd.get("/audit/records").json()["limit"] == 25


def test_since_defaults_to_24_hours_ago_and_the_range_is_half_open(
    org: SandboxOrg, pd: httpx.Client, clock: SteppingClock
) -> None:
    flip_roles(org, 1)
    old = org.pagerduty.audit.records()[-1].execution_time
    clock.jump(timedelta(hours=25))
    flip_roles(org, 2)
    new = org.pagerduty.audit.records()[-1].execution_time

    assert len(records(pd)) == 2, "by default only the last 24 hours"
    assert len(records(pd, since=old.isoformat())) == 3, "since is inclusive"
    assert len(records(pd, since=old.isoformat(), until=new.isoformat())) == 2, "until is exclusive"
    assert len(records(pd, since="2026-03-02T09:00:00.001+00:00", until="2026-03-03T11:00:00Z")) == 3


@pytest.mark.parametrize(
    ("params", "code", "detail"),
    [
        ({"since": "yesterday"}, 2004, "since is not an ISO 8601 date-time: 'yesterday'"),
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, 2005, "since must not be after"),
        (
            {"since": "2026-01-01T00:00:00Z", "until": "2026-02-02T00:00:01Z"},
            2005,
            "until may not be more than 31 days",
        ),
        ({"root_resource_types[]": "widgets"}, 2001, "root_resource_types must be among users, teams"),
        ({"actions[]": "rename"}, 2001, "actions must be among create, update, delete; got 'rename'"),
        ({"limit": "0"}, 2001, "limit must be greater than 0"),
        ({"cursor": "not-a-cursor"}, 2001, "cursor is not a cursor this endpoint handed out"),
        ({"method_truncated_token": "oken"}, 2001, "method_truncated_token must be qualified by method_type"),
    ],
)
def test_a_bad_query_is_refused_with_400_and_pagerdutys_code(
    pd: httpx.Client, params: dict[str, str], code: int, detail: str
) -> None:
    response = pd.get("/audit/records", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["errors"][0].startswith(detail), error


def test_filters_by_root_resource_type_action_and_method(org: SandboxOrg, pd: httpx.Client) -> None:
    payments, dave = ids(org, team="Payments"), ids(org, email="dave@example.com")
    org.pagerduty.add_user("Erin Example", "erin@example.com")
    assert pd.put(f"/teams/{payments}/users/{dave}", json={"role": "observer"}).status_code == 204
    org.pagerduty.add_escalation_policy("Payments Backup", [payments], [dave])

    assert [r["root_resource"]["type"] for r in records(pd, **{"root_resource_types[]": "users"})] == [
        "user_reference"
    ]
    assert [r["root_resource"]["type"] for r in records(pd, **{"actions[]": "create"})] == [
        "escalation_policy_reference",
        "user_reference",
    ]
    both = records(pd, **{"root_resource_types[]": ["users", "teams"]})
    assert len(both) == 3
    mine = records(pd, method_type="api_token", method_truncated_token=TRUNCATED)
    assert [r["details"]["resource"]["type"] for r in mine] == ["user_reference", "team_reference"]
    assert records(pd, method_type="api_token", method_truncated_token="zzzz") == []


def test_a_teams_records_list_only_that_team(org: SandboxOrg, pd: httpx.Client) -> None:
    payments, search = ids(org, team="Payments"), ids(org, team="Search")
    carol = ids(org, email="carol@example.com")
    org.pagerduty.set_membership(search, carol, "observer")
    org.pagerduty.set_membership(payments, carol, "manager")

    listed = records(pd, f"/teams/{search}/audit/records")
    assert {r["root_resource"]["id"] for r in listed} == {search}
    assert len(listed) == 2
    assert pd.get("/teams/PNOPE00/audit/records").status_code == 404


@pytest.fixture
def paywalled() -> Iterator[RunningSandbox]:
    with running_sandbox(seeded_org(), tokens=TOKENS, audit_records="payment_required") as running:
        yield running


def test_a_plan_without_audit_trail_answers_402_until_the_admin_endpoint_switches_it_on(
    paywalled: RunningSandbox,
) -> None:
    headers = {"Authorization": f"Token token={PAGERDUTY_TOKEN}"}
    client = httpx.Client(base_url=paywalled.pagerduty_url, headers=headers)
    team = next(iter(paywalled.state.pagerduty.teams))
    paywalled.state.pagerduty.update_team(team, description="changed while paywalled")

    for path in ("/audit/records", f"/teams/{team}/audit/records"):
        refused = client.get(path)
        assert refused.status_code == 402
        assert refused.json()["error"]["code"] == 2014
        assert refused.json()["error"]["message"] == "Missing Account Ability"

    settings = httpx.patch(paywalled.url + "/_admin/settings", json={"audit_records": "available"})
    assert settings.status_code == 200
    assert settings.json()["audit_records"] == "available"
    assert [r["details"]["fields"][0]["value"] for r in records(client)] == ["changed while paywalled"]

    back = httpx.patch(paywalled.url + "/_admin/settings", json={"audit_records": "payment_required"})
    assert back.status_code == 200
    assert client.get("/audit/records").status_code == 402


def test_the_admin_endpoint_refuses_unknown_settings_and_values(sandbox: RunningSandbox) -> None:
    bad = httpx.patch(sandbox.url + "/_admin/settings", json={"audit_records": "sometimes", "colour": "red"})
    assert bad.status_code == 400
    assert bad.json()["error"] == (
        "audit_records: must be one of available, payment_required, forbidden; colour: not a setting "
        "(settings: rate_limit, rate_window_seconds, latency_ms, audit_records)"
    )
    assert httpx.get(sandbox.url + "/_admin/settings").json()["audit_records"] == "available"
    with pytest.raises(ValueError, match="audit_records must be one of"):
        create_app(seeded_org(), tokens=TOKENS, audit_records="maybe")


def test_a_token_that_may_not_list_the_accounts_records_gets_403_but_reads_a_teams(org: SandboxOrg) -> None:
    with running_sandbox(org, tokens=TOKENS, audit_records="forbidden") as running:
        client = httpx.Client(
            base_url=running.pagerduty_url, headers={"Authorization": f"Token token={PAGERDUTY_TOKEN}"}
        )
        refused = client.get("/audit/records")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == 2010
        payments = ids(org, team="Payments")
        org.pagerduty.set_membership(payments, ids(org, email="dave@example.com"), "observer")
        assert len(records(client, f"/teams/{payments}/audit/records")) == 2


def test_pagerdutys_own_client_reads_every_record_by_cursor(
    org: SandboxOrg, sandbox: RunningSandbox, clock: SteppingClock
) -> None:
    flip_roles(org, 12)
    client = pagerduty.RestApiV2Client(PAGERDUTY_TOKEN)
    client._url = sandbox.pagerduty_url

    listed = list(client.iter_cursor("audit/records", page_size=5))
    assert [r["id"] for r in listed] == [r.id for r in reversed(org.pagerduty.audit.records())]
    pages = [e for e in sandbox.requests("pagerduty", "GET") if e["endpoint"] == "GET /audit/records"]
    assert [("cursor" in e["query"], e["query"]["limit"]) for e in pages] == [
        (False, ["5"]),
        (True, ["5"]),
        (True, ["5"]),
    ]
