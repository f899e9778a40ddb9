"""Concurrent snapshots of a generated PagerDuty org over loopback: every page read once, within the rate
limit, and the same tables as a read one request at a time."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from starlette.responses import Response

from nthlayer_pipelines.assets.pagerduty.snapshot import (
    pagerduty_snapshot,
    read_memberships,
    read_teams,
    read_users,
)
from nthlayer_pipelines.resources.ledger import LedgerResource
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient, PagerDutyError
from nthlayer_pipelines.resources.pagerduty.observed import memberships_frame, teams_frame, users_frame
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.sandbox import (
    RequestContext,
    RunningSandbox,
    SandboxOrg,
    generate_org,
    running_sandbox,
)

TOKEN = "pd-concurrency-secret-51c2"
TOKENS = {"pagerduty": TOKEN}


def resource(sandbox: RunningSandbox, **config: Any) -> PagerDutyResource:
    return PagerDutyResource(api_url=sandbox.pagerduty_url, api_token=TOKEN, **config)


def snapshot(client: PagerDutyClient) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    users, teams = read_users(client), read_teams(client)
    memberships, _ = read_memberships(client, list(teams["team_id"]))
    return users, teams, memberships


def truth(org: SandboxOrg) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The org as PagerDuty lists it: users and teams by name, each team's members in insertion order."""
    pd_org = org.pagerduty
    users = users_frame([{"user_id": u.id, "email": u.email, "name": u.name} for u in pd_org.users_by_name])
    teams = teams_frame(
        [{"team_id": t.id, "name": t.name, "description": t.description} for t in pd_org.teams_by_name]
    )
    memberships = memberships_frame(
        [
            {"team_id": team.id, "user_id": user_id, "role": role}
            for team in pd_org.teams_by_name
            for user_id, role in pd_org.memberships[team.id].items()
        ]
    )
    return users, teams, memberships


def pages(count: int) -> int:
    return max(1, -(-count // 100))


def page_minimum(org: SandboxOrg) -> int:
    pd_org = org.pagerduty
    return (
        pages(len(pd_org.users))
        + pages(len(pd_org.teams))
        + sum(pages(len(members)) for members in pd_org.memberships.values())
    )


def reads(sandbox: RunningSandbox) -> Counter[tuple[str, str]]:
    """How often each page (path and offset) was asked for."""
    return Counter(
        (entry["path"], entry["query"].get("offset", ["0"])[0])
        for entry in sandbox.requests(provider="pagerduty", method="GET")
    )


def statuses(sandbox: RunningSandbox) -> Counter[int]:
    return Counter(entry["status"] for entry in sandbox.requests(provider="pagerduty"))


def test_a_concurrent_snapshot_under_a_tight_rate_limit_reads_each_page_once_without_a_429():
    org = generate_org(45, 3, users=180, seed=7)
    expected_calls = page_minimum(org)
    assert expected_calls == 2 + 1 + 45
    # 25 requests a 1-second window: the 48 reads span two windows, with eight threads at once. The
    # bucket is configured like the provider; only the headers keep a window from being overdrawn.
    with running_sandbox(org, tokens=TOKENS, rate_limit=25, rate_window_seconds=1.0) as sandbox:
        pagerduty = resource(
            sandbox, max_concurrency=8, rate_limit=25, rate_window_seconds=1.0, rate_burst=25
        )
        with pagerduty.client() as client:
            concurrent = snapshot(client)
            assert (client.api_calls, client.retries, client.rate_limited) == (expected_calls, 0, 0)
        assert statuses(sandbox) == Counter({200: expected_calls})
        assert set(reads(sandbox).values()) == {1}

        sandbox.settings.rate_limit = 10_000
        sandbox.clear_requests()
        with PagerDutyClient(sandbox.pagerduty_url, TOKEN) as sequential_client:
            sequential = snapshot(sequential_client)
        assert sequential_client.api_calls == expected_calls

    for got, want, reference in zip(concurrent, sequential, truth(org), strict=True):
        pd.testing.assert_frame_equal(got, want)
        pd.testing.assert_frame_equal(got, reference)
    assert len(concurrent[2]) == 45 * 3


def test_clients_of_one_key_share_one_bucket_so_parallel_snapshots_stay_within_the_limit():
    org = generate_org(20, 2, users=80, seed=8)
    with running_sandbox(org, tokens=TOKENS, rate_limit=30, rate_window_seconds=1.0) as sandbox:
        pagerduty = resource(
            sandbox, max_concurrency=4, rate_limit=30, rate_window_seconds=1.0, rate_burst=30
        )
        results: list[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with pagerduty.client() as client:
                    results.append(snapshot(client))
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert statuses(sandbox) == Counter({200: 2 * page_minimum(org)})
    for got, reference in zip(results[0], truth(org), strict=True):
        pd.testing.assert_frame_equal(got, reference)
    for got, reference in zip(results[1], truth(org), strict=True):
        pd.testing.assert_frame_equal(got, reference)


def test_the_snapshot_assets_report_calls_equal_to_the_page_minimum(tmp_path):
    org = generate_org(120, 4, users=480, seed=9)
    pd_org = org.pagerduty
    big_team = pd_org.teams_by_name[0].id
    for user in pd_org.users_by_name[:230]:  # three pages of members
        pd_org.set_membership(big_team, user.id, "responder")
    with running_sandbox(org, tokens=TOKENS) as sandbox:
        result = dg.materialize(
            [pagerduty_snapshot],
            resources={
                "pagerduty": resource(sandbox, max_concurrency=8, rate_limit=60_000),
                "ledger": LedgerResource(url=f"sqlite:///{tmp_path / 'ledger.db'}"),
            },
        )
        assert statuses(sandbox) == Counter({200: page_minimum(org)})
        assert set(reads(sandbox).values()) == {1}
    assert result.success
    metadata = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    calls = {name: (m["api_calls"].value, m["api_calls_minimum"].value) for name, m in metadata.items()}
    assert calls == {
        "pagerduty_users": (5, 5),
        "pagerduty_teams": (2, 2),
        "pagerduty_memberships": (119 + 3, 119 + 3),
    }
    assert metadata["pagerduty_memberships"]["max_concurrency"].value == 8
    for name, reference in zip(
        ("pagerduty_users", "pagerduty_teams", "pagerduty_memberships"), truth(org), strict=True
    ):
        pd.testing.assert_frame_equal(result.output_for_node("pagerduty_snapshot", name), reference)


def test_a_listing_that_grows_while_its_pages_are_read_is_read_to_its_end():
    org = generate_org(10, 3, users=250, seed=10)
    grown = threading.Event()

    async def add_users_after_the_first_page(ctx: RequestContext, response: Response) -> Response:
        if ctx.request.query_params.get("offset") == "0" and not grown.is_set():
            grown.set()
            for n in range(120):  # sorted after every generated name: they land on new pages
                org.pagerduty.add_user(f"Zz Late {n:03d}", f"late.{n:03d}@example.com")
        return response

    with running_sandbox(org, tokens=TOKENS) as sandbox:
        sandbox.hooks.add_after(add_users_after_the_first_page, provider="pagerduty", endpoint="GET /users")
        with resource(sandbox, max_concurrency=4).client() as client:
            users = read_users(client)
        offsets = sorted(int(offset) for path, offset in reads(sandbox) if path.endswith("/users"))
    assert len(users) == 370
    pd.testing.assert_frame_equal(users, truth(org)[0])
    # The first page said 250 in all; the last of the pages that total asked for said there was more.
    assert offsets == [0, 100, 200, 300]


def test_one_failing_team_fails_the_whole_memberships_read_with_its_error():
    org = generate_org(30, 2, users=60, seed=11)
    failing = org.pagerduty.teams_by_name[17].id

    async def refuse_one_team(ctx: RequestContext) -> Response | None:
        if ctx.path_params.get("id") == failing:
            return Response('{"error": {"message": "Access Denied", "code": 2010}}', 403)
        return None

    with running_sandbox(org, tokens=TOKENS) as sandbox:
        sandbox.hooks.add_before(refuse_one_team, provider="pagerduty", endpoint="GET /teams/{id}/members")
        with (
            resource(sandbox, max_concurrency=4).client() as client,
            pytest.raises(PagerDutyError) as caught,
        ):
            read_memberships(client, list(read_teams(client)["team_id"]))
    assert str(caught.value) == (
        f"PagerDuty GET /teams/{failing}/members: Access Denied (HTTP 403, code 2010)"
    )


def test_more_threads_than_one_connection_pool_holds_spread_over_several_http_clients():
    org = generate_org(60, 2, users=120, seed=12)
    with (
        running_sandbox(org, tokens=TOKENS) as sandbox,
        resource(sandbox, max_concurrency=30, rate_limit=60_000).client() as client,
    ):
        got = snapshot(client)
        assert len(client._lanes) == 2  # 25 connections a client at most
        assert statuses(sandbox) == Counter({200: page_minimum(org)})
    for frame, reference in zip(got, truth(org), strict=True):
        pd.testing.assert_frame_equal(frame, reference)
