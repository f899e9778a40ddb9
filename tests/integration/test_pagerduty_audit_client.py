"""Reading audit records with PagerDutyClient over real loopback HTTP: against the sandbox, and against a
scripted server for the answers the sandbox does not give (broken cursors, unreadable records, 429s)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nthlayer_pipelines.resources.pagerduty.audit import (
    AuditRecordsUnavailableError,
    audit_windows,
    get_user,
    list_audit_records,
    read_audit_records,
    read_planned,
)
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient, PagerDutyError
from nthlayer_pipelines.resources.pagerduty.incremental import IncrementalRead, IncrementalReadError
from nthlayer_pipelines.resources.pagerduty.models import AuditPage, PagerDutyUser
from nthlayer_pipelines.sandbox import RunningSandbox, SandboxOrg, generate_org, running_sandbox
from tests.scripted_server import Reply, ScriptedServer

TOKEN = "pd-audit-test-secret-91ce"


@pytest.fixture
def org() -> SandboxOrg:
    return generate_org(4, 5, seed=8)


@pytest.fixture
def sandbox(org: SandboxOrg) -> Iterator[RunningSandbox]:
    with running_sandbox(org, tokens={"pagerduty": TOKEN}) as running:
        yield running


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[PagerDutyClient]:
    with PagerDutyClient(sandbox.pagerduty_url, TOKEN, backoff_base_seconds=0.001) as pagerduty:
        yield pagerduty


def change_roles(org: SandboxOrg, count: int) -> None:
    pagerduty = org.pagerduty
    team = sorted(pagerduty.teams)[0]
    user = next(u for u, role in pagerduty.memberships[team].items() if role == "responder")
    for _ in range(count):
        role = pagerduty.memberships[team][user]
        pagerduty.set_membership(team, user, "observer" if role == "responder" else "responder")


def audit_queries(sandbox: RunningSandbox) -> list[dict[str, list[str]]]:
    return [r["query"] for r in sandbox.requests("pagerduty") if r["endpoint"] == "GET /audit/records"]


def test_every_page_is_read_by_cursor_newest_first(
    org: SandboxOrg, sandbox: RunningSandbox, client: PagerDutyClient
) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    change_roles(org, 7)
    pages = list(list_audit_records(client, since, page_size=3))

    assert [len(page.records) for page in pages] == [3, 3, 1]
    assert [page.next_cursor is None for page in pages] == [False, False, True]
    assert all(isinstance(page, AuditPage) for page in pages)
    listed = [record.id for page in pages for record in page.records]
    assert listed == [r.id for r in reversed(org.pagerduty.audit.records())]
    first = pages[-1].records[0]
    assert (first.method.type, first.method.truncated_token, first.action) == ("browser", None, "update")
    assert first.details.fields[0].name == "team_role"

    queries = audit_queries(sandbox)
    assert [("cursor" in q, q["limit"], q["root_resource_types[]"]) for q in queries] == [
        (False, ["3"], ["teams", "users"]),
        (True, ["3"], ["teams", "users"]),
        (True, ["3"], ["teams", "users"]),
    ]
    assert queries[0]["since"] == queries[1]["since"]

    sandbox.clear_requests()
    resumed = list(list_audit_records(client, since, pages[0].next_cursor, page_size=3))
    assert [r.id for page in resumed for r in page.records] == listed[3:]


def test_a_range_longer_than_31_days_is_read_in_windows_newest_first(
    sandbox: RunningSandbox, client: PagerDutyClient
) -> None:
    until = datetime(2026, 3, 10, 12, 0, 0, 500, tzinfo=UTC)
    assert read_audit_records(client, until - timedelta(days=70), until=until) == []
    assert [(q["since"], q["until"]) for q in audit_queries(sandbox)] == [
        (["2026-02-08T12:00:00.000Z"], ["2026-03-10T12:00:00.001Z"]),
        (["2026-01-09T12:00:00.000Z"], ["2026-02-08T12:00:00.001Z"]),
        (["2025-12-30T12:00:00.000Z"], ["2026-01-09T12:00:00.001Z"]),
    ]
    assert audit_windows(until, until) == [(until, until)]
    with pytest.raises(ValueError, match=r"since .* is after until"):
        audit_windows(until, until - timedelta(seconds=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        audit_windows(datetime(2026, 1, 1), until)


@pytest.mark.parametrize(
    ("access", "status", "code"), [("payment_required", 402, 2014), ("forbidden", 403, 2010)]
)
def test_a_refusal_of_the_audit_records_says_to_read_a_full_snapshot(
    org: SandboxOrg, access: str, status: int, code: int
) -> None:
    with (
        running_sandbox(org, tokens={"pagerduty": TOKEN}, audit_records=access) as sandbox,
        PagerDutyClient(sandbox.pagerduty_url, TOKEN) as client,
        pytest.raises(AuditRecordsUnavailableError) as refused,
    ):
        read_audit_records(client, datetime.now(UTC) - timedelta(hours=1), until=datetime.now(UTC))
    assert (refused.value.status, refused.value.code) == (status, code)
    assert str(refused.value).endswith("incremental refresh needs the audit records, so read a full snapshot")
    assert refused.value.path == "/audit/records"


def test_get_user_reads_one_user_and_answers_none_for_a_deleted_one(
    org: SandboxOrg, client: PagerDutyClient
) -> None:
    user = org.pagerduty.users_by_name[0]
    assert get_user(client, user.id) == PagerDutyUser(id=user.id, name=user.name, email=user.email)
    assert get_user(client, "PGONE00") is None


def test_read_planned_refuses_a_team_that_vanished_without_a_record(
    org: SandboxOrg, client: PagerDutyClient
) -> None:
    team = sorted(org.pagerduty.teams)[0]
    plan = IncrementalRead(since=datetime.now(UTC), team_member_reads=frozenset({team, "PGONE00"}))
    with pytest.raises(IncrementalReadError, match="team PGONE00 is gone but no record says so yet"):
        read_planned(client, plan)


# ---- against a scripted server ---------------------------------------------------------------------------


RECORD: dict[str, Any] = {
    "id": "PDRECORD1",
    "execution_time": "2026-03-10T11:30:00.000Z",
    "execution_context": {"request_id": "req-1"},
    "method": {"type": "api_token", "truncated_token": "91ce"},
    "root_resource": {"id": "PTEAM01", "type": "team_reference"},
    "action": "update",
    "details": {
        "resource": {"id": "PTEAM01", "type": "team_reference"},
        "references": [{"name": "members", "added": [{"id": "PUSER01", "type": "user_reference"}]}],
    },
}
SINCE = datetime(2026, 3, 10, 11, 0, tzinfo=UTC)
UNTIL = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def scripted_read(*replies: Reply) -> tuple[list[Any], ScriptedServer]:
    with (
        ScriptedServer(*replies) as server,
        PagerDutyClient(server.url, TOKEN, backoff_base_seconds=0.001, max_backoff_seconds=0.01) as client,
    ):
        return read_audit_records(client, SINCE, until=UNTIL), server


def test_a_rate_limited_page_is_retried_and_records_parse_from_pagerdutys_shape() -> None:
    records, server = scripted_read(
        Reply(429, {"error": {"message": "Rate Limit Exceeded", "code": 2020}}, {"ratelimit-reset": "0"}),
        Reply(200, {"records": [RECORD], "limit": 100, "next_cursor": "c2"}),
        Reply(200, {"records": [RECORD | {"id": "PDRECORD0"}], "limit": 100, "next_cursor": None}),
    )
    assert [r.id for r in records] == ["PDRECORD1", "PDRECORD0"]
    assert records[0].request_id == "req-1"
    assert [ref.id for ref in records[0].details.references[0].added] == ["PUSER01"]
    assert [request.query.get("cursor") for request in server.requests] == [None, None, ["c2"]]
    assert server.requests[0].query["since"] == ["2026-03-10T11:00:00.000Z"]


@pytest.mark.parametrize(
    ("replies", "message"),
    [
        (
            [Reply(200, {"records": [], "limit": 100, "more": False})],
            "the answer has no 'next_cursor': it does not paginate by cursor",
        ),
        (
            [
                Reply(200, {"records": [RECORD], "limit": 100, "next_cursor": "same"}),
                Reply(200, {"records": [RECORD], "limit": 100, "next_cursor": "same"}),
            ],
            "next_cursor 'same' was handed out before: the listing loops",
        ),
        (
            [Reply(200, {"records": [{**RECORD, "method": None}], "limit": 100, "next_cursor": None})],
            "record 'PDRECORD1' does not parse: method",
        ),
        (
            [Reply(200, {"records": "none", "next_cursor": None})],
            "the answer has no 'records' list of objects",
        ),
    ],
)
def test_an_answer_that_is_not_a_page_of_records_fails_with_the_reason(
    replies: list[Reply], message: str
) -> None:
    with pytest.raises(PagerDutyError, match=message):
        scripted_read(*replies)
