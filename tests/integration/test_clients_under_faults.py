"""The provider clients against the sandbox's faults over loopback: every transient fault is retried into
the same snapshot a quiet provider gives, and what cannot be retried is a clear error, never a silently
wrong snapshot."""

from collections.abc import Iterator
from typing import Any

import pytest

from nthlayer_pipelines.core.model import SourceError
from nthlayer_pipelines.resources.cortex.client import CortexClient
from nthlayer_pipelines.resources.pagerduty.client import (
    PagerDutyClient,
    PagerDutyError,
    WriteOutcomeUnknownError,
)
from nthlayer_pipelines.sandbox import (
    DEFAULT_CORTEX_TOKEN,
    DEFAULT_PAGERDUTY_TOKEN,
    RunningSandbox,
    running_sandbox,
)
from nthlayer_pipelines.sandbox.cortex.org import CortexMember, CortexRole
from nthlayer_pipelines.sandbox.faults import parse_plan
from nthlayer_pipelines.sandbox.generate import generate_org
from tests.reliability import Reliability

# Every kind a retry gets past, as the first arrival of every request meets it.
TRANSIENT_FAULTS: dict[str, dict[str, Any]] = {
    "429 with ratelimit headers and body": {"kind": "status", "status": 429},
    "429 without headers": {"kind": "status", "status": 429, "ratelimit_headers": False},
    "429 with neither headers nor body": {
        "kind": "status",
        "status": 429,
        "ratelimit_headers": False,
        "rate_limit_body": False,
    },
    "500": {"kind": "status", "status": 500},
    "502": {"kind": "status", "status": 502},
    "503": {"kind": "status", "status": 503},
    "latency": {"kind": "latency", "latency_ms": 50},
    "timeout before the endpoint": {"kind": "timeout", "hang_seconds": 0.5, "when": "before"},
    "timeout after the endpoint": {"kind": "timeout", "hang_seconds": 0.5, "when": "after"},
    "dropped connection": {"kind": "drop", "when": "before"},
    "dropped mid-answer": {"kind": "drop", "when": "after"},
    # A tenth of the pages, not every first arrival: three short pages in a row are the client's error
    # for a listing that does not paginate (tests/integration/test_pagerduty_client.py).
    "truncated page": {"kind": "truncate", "keep_share": 0.4, "rate": 0.1, "first_arrivals": None},
}


@pytest.fixture(scope="module")
def generated() -> Iterator[RunningSandbox]:
    """40 teams of 10 from 250 users: a listing of three pages, so concurrent paging is exercised."""
    org = generate_org(40, users=250, seed=4)
    grace = CortexMember("Grace", "grace@example.com", [CortexRole("oncall-manager", "On-call manager")])
    org.cortex.add_team("data", "Data", members=[grace])
    # The sandbox's own rate limit stays out of the way: these tests count the faults they inject.
    with running_sandbox(org, rate_limit=1_000_000) as sandbox:
        yield sandbox


def pagerduty(sandbox: RunningSandbox, concurrency: int) -> PagerDutyClient:
    return PagerDutyClient(
        sandbox.pagerduty_url,
        DEFAULT_PAGERDUTY_TOKEN,
        timeout=0.15,
        max_attempts=3,
        sleep=lambda _seconds: None,
        max_concurrency=concurrency,
    )


def snapshot(client: PagerDutyClient) -> tuple[list[str], list[str], dict[str, list[tuple[str, str]]]]:
    users = sorted(u.email for u in client.list_users())
    teams = client.list_teams()
    members = client.list_members_of_teams([t.id for t in teams])
    return (
        users,
        sorted(t.name for t in teams),
        {team: sorted((m.user_id, m.role.value) for m in held) for team, held in members.items()},
    )


@pytest.fixture(scope="module")
def quiet_read(generated: RunningSandbox) -> tuple[tuple[Any, ...], int]:
    """The snapshot without faults, and the calls it took."""
    generated.faults.set_plan(parse_plan(None))
    with pagerduty(generated, 1) as client:
        return snapshot(client), client.api_calls


@pytest.fixture(scope="module")
def quiet_snapshot(quiet_read: tuple[tuple[Any, ...], int]) -> tuple[Any, ...]:
    return quiet_read[0]


@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize("fault", list(TRANSIENT_FAULTS))
def test_the_pagerduty_snapshot_under_each_transient_fault_is_the_quiet_one(
    generated: RunningSandbox,
    quiet_snapshot: tuple[Any, ...],
    quiet_read: tuple[tuple[Any, ...], int],
    fault: str,
    concurrency: int,
    reliability: Reliability,
) -> None:
    generated.faults.set_plan(
        parse_plan({"seed": 1, "rules": [{**TRANSIENT_FAULTS[fault], "first_arrivals": 1}]})
    )
    with pagerduty(generated, concurrency) as client:
        assert snapshot(client) == quiet_snapshot
    injected = generated.faults.injected()
    assert sum(injected.values()) > 0, injected
    if fault == "truncated page":  # not an error to retry: the rest of the page is read as the next one
        assert client.api_calls > quiet_read[1], (client.api_calls, quiet_read[1])
    elif fault != "latency":
        assert client.retries >= sum(injected.values())
    reliability.count_faults("client_tests", injected)


def test_a_page_cut_short_in_the_middle_of_a_concurrent_read_is_read_on_to_the_next_page(
    generated: RunningSandbox, quiet_snapshot: tuple[Any, ...]
) -> None:
    # Every page of /users loses its last tenth on first arrival: the pages read at once from the
    # listing's total leave gaps that must be read before the next page's offset.
    rule = {"kind": "truncate", "keep_share": 0.9, "endpoint": "GET /users", "first_arrivals": 1}
    generated.faults.set_plan(parse_plan({"rules": [rule]}))
    with pagerduty(generated, 8) as client:
        assert sorted(u.email for u in client.list_users()) == quiet_snapshot[0]
    assert generated.faults.injected()["truncate"] >= 3


def test_a_fault_that_never_clears_is_a_clear_error_not_a_short_snapshot(generated: RunningSandbox) -> None:
    for rule in ({"kind": "status", "status": 502}, {"kind": "drop", "when": "after"}):
        generated.faults.set_plan(parse_plan({"rules": [{**rule, "endpoint": "GET /teams/{id}/members"}]}))
        with pagerduty(generated, 8) as client, pytest.raises(PagerDutyError) as raised:
            client.list_members_of_teams([t.id for t in client.list_teams()])
        assert "/members" in str(raised.value)
        assert "after 3 attempts" in str(raised.value) or "no answer after 3 attempt" in str(raised.value)


def test_a_lost_answer_to_a_create_is_reported_as_unknown_not_as_failed(generated: RunningSandbox) -> None:
    for number, rule in enumerate(
        ({"kind": "status", "status": 502, "when": "after"}, {"kind": "drop", "when": "after"})
    ):
        generated.faults.set_plan(parse_plan({"rules": [{**rule, "endpoint": "POST /teams"}]}))
        name = f"Created Under Fault {number}"
        with pagerduty(generated, 1) as client:
            with pytest.raises(WriteOutcomeUnknownError):
                client.create_team(name)
            generated.faults.set_plan(parse_plan(None))
            assert client.find_team_by_name(name) is not None  # it was created: the answer was lost
        assert sum(1 for r in generated.requests("pagerduty", "POST") if r["fault"]) >= 1


def test_cortex_reads_through_transient_faults(generated: RunningSandbox) -> None:
    with CortexClient(
        generated.cortex_url, DEFAULT_CORTEX_TOKEN, timeout=0.15, max_attempts=3, sleep=lambda _s: None
    ) as cortex:
        generated.faults.set_plan(parse_plan(None))
        quiet = cortex.list_teams()
        for fault in (
            "503",
            "dropped mid-answer",
            "timeout after the endpoint",
            "429 with neither headers nor body",
        ):
            generated.faults.set_plan(
                parse_plan({"rules": [{**TRANSIENT_FAULTS[fault], "first_arrivals": 1}]})
            )
            assert cortex.list_teams() == quiet
        generated.faults.set_plan(parse_plan({"rules": [{"kind": "status", "status": 503}]}))
        with pytest.raises(SourceError, match="HTTP 503"):
            cortex.list_teams()
