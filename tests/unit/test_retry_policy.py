"""The pure parts of the provider clients: retry decisions, waits, the retry loop, pagination, errors."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime

import httpx
import pytest

from nthlayer_pipelines.resources.http.client import (
    Redactor,
    RequestFailed,
    RequestStats,
    RetryPolicy,
    backoff_seconds,
    may_have_been_applied,
    retry_wait_seconds,
    send_with_retries,
    server_wait_seconds,
    should_retry_error,
    should_retry_status,
)
from nthlayer_pipelines.resources.pagerduty.client import (
    OffsetPager,
    PagerDutyAuthError,
    PagerDutyError,
    PaginationLimitError,
    error_from_response,
)

LOG = logging.getLogger("test")


class UpperBound(random.Random):
    """Full jitter at its ceiling, so the backoff's bound is visible exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_idempotent_requests_retry_429_and_5xx_only(method: str):
    assert [
        s
        for s in (400, 401, 403, 404, 408, 409, 429, 500, 501, 502, 503, 504)
        if should_retry_status(method, s)
    ] == [
        429,
        500,
        502,
        503,
        504,
    ]


def test_a_post_retries_only_answers_given_before_processing():
    assert [s for s in (400, 429, 500, 502, 503, 504) if should_retry_status("POST", s)] == [429, 503]


def test_errors_before_sending_are_retried_for_any_method_and_after_sending_only_when_idempotent():
    never_sent = httpx.ConnectError("refused")
    read_timeout = httpx.ReadTimeout("slow")
    dropped = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    assert (should_retry_error("POST", never_sent), should_retry_error("GET", never_sent)) == (True, True)
    assert (should_retry_error("POST", read_timeout), should_retry_error("GET", read_timeout)) == (
        False,
        True,
    )
    assert (should_retry_error("POST", dropped), should_retry_error("DELETE", dropped)) == (False, True)
    assert should_retry_error("GET", httpx.UnsupportedProtocol("ftp")) is False
    assert (may_have_been_applied("POST", read_timeout), may_have_been_applied("POST", never_sent)) == (
        True,
        False,
    )
    assert may_have_been_applied("PUT", read_timeout) is False


def test_server_wait_prefers_ratelimit_reset_then_retry_after():
    assert server_wait_seconds(429, {"ratelimit-reset": "7", "Retry-After": "30"}) == 7.0
    assert server_wait_seconds(429, {"Retry-After": "30"}) == 30.0
    assert server_wait_seconds(503, {"Retry-After": "2"}) == 2.0
    # ratelimit-reset is the rate window's reset, not a 503's wait:
    assert server_wait_seconds(503, {"ratelimit-reset": "45"}) is None
    assert server_wait_seconds(500, {"Retry-After": "2"}) is None
    assert server_wait_seconds(429, {}) is None
    assert server_wait_seconds(429, {"Retry-After": "soon"}) is None
    assert server_wait_seconds(429, {"Retry-After": "-3"}) is None


def test_server_wait_reads_an_http_date():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert server_wait_seconds(429, {"Retry-After": "Wed, 01 Jan 2025 12:00:05 GMT"}, now=now) == 5.0
    assert server_wait_seconds(429, {"Retry-After": "Wed, 01 Jan 2025 11:00:00 GMT"}, now=now) == 0.0


def test_backoff_doubles_up_to_the_cap_with_full_jitter():
    policy = RetryPolicy(max_attempts=10, backoff_base_seconds=0.5, max_backoff_seconds=3.0)
    assert [backoff_seconds(n, policy, UpperBound()) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    rng = random.Random(7)
    waits = [backoff_seconds(4, policy, rng) for _ in range(200)]
    assert min(waits) >= 0 and max(waits) <= 3.0
    assert len(set(waits)) == 200  # jittered, not a fixed step


def test_a_server_wait_is_honoured_up_to_the_cap():
    policy = RetryPolicy(max_backoff_seconds=10.0)
    assert retry_wait_seconds(1, policy, status=429, headers={"ratelimit-reset": "4"}) == 4.0
    assert retry_wait_seconds(1, policy, status=429, headers={"ratelimit-reset": "120"}) == 10.0
    assert retry_wait_seconds(3, policy, status=429, headers={}, rng=UpperBound()) == 2.0


def test_a_policy_needs_one_attempt_at_least():
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=0)


def scripted(*outcomes: int | dict[str, str] | Exception):
    """A send() answering in order: a status, (status, headers) or an exception."""
    queue = list(outcomes)

    def send() -> httpx.Response:
        outcome = queue.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        status, headers = outcome if isinstance(outcome, tuple) else (outcome, {})
        return httpx.Response(status, headers=headers)

    return send


def test_the_loop_waits_as_told_and_counts_every_call():
    sleeps: list[float] = []
    stats = RequestStats()
    send = scripted((429, {"ratelimit-reset": "1.5"}), 502, httpx.ReadTimeout("slow"), 200)
    response, attempts = send_with_retries(
        send,
        method="GET",
        path="/users",
        policy=RetryPolicy(max_attempts=6, backoff_base_seconds=0.0),
        stats=stats,
        logger=LOG,
        redactor=Redactor(),
        sleep=sleeps.append,
    )
    assert (response.status_code, attempts) == (200, 4)
    assert sleeps == [1.5, 0.0, 0.0]
    assert (stats.api_calls, stats.retries, stats.rate_limited) == (4, 3, 1)


def test_out_of_attempts_the_last_answer_is_returned():
    stats = RequestStats()
    response, attempts = send_with_retries(
        scripted(500, 500, 503),
        method="GET",
        path="/teams",
        policy=RetryPolicy(max_attempts=3, backoff_base_seconds=0.0),
        stats=stats,
        logger=LOG,
        redactor=Redactor(),
        sleep=lambda _: None,
    )
    assert (response.status_code, attempts, stats.api_calls, stats.retries) == (503, 3, 3, 2)


def test_a_post_that_timed_out_is_not_sent_again():
    stats = RequestStats()
    with pytest.raises(RequestFailed) as caught:
        send_with_retries(
            scripted(httpx.ReadTimeout("timed out"), 201),
            method="POST",
            path="/teams",
            policy=RetryPolicy(backoff_base_seconds=0.0),
            stats=stats,
            logger=LOG,
            redactor=Redactor(),
            sleep=lambda _: None,
        )
    assert caught.value.may_have_been_applied is True
    assert stats.api_calls == 1
    assert str(caught.value) == (
        "POST /teams got no answer after 1 attempt(s) (ReadTimeout: timed out); "
        "not retried because the write may have been applied: read the state before writing again"
    )


def test_a_post_that_never_connected_is_retried():
    stats = RequestStats()
    response, attempts = send_with_retries(
        scripted(httpx.ConnectError("refused"), 429, 201),
        method="POST",
        path="/teams",
        policy=RetryPolicy(backoff_base_seconds=0.0),
        stats=stats,
        logger=LOG,
        redactor=Redactor(),
        sleep=lambda _: None,
    )
    assert (response.status_code, attempts, stats.rate_limited) == (201, 3, 1)


def page(items: list[dict], more: bool) -> dict:
    return {"users": items, "more": more, "limit": 100, "offset": 0, "total": None}


def ids(start: int, count: int) -> list[dict]:
    return [{"id": f"U{n}"} for n in range(start, start + count)]


def test_the_pager_walks_offsets_until_more_is_false():
    pager = OffsetPager("/users", "users")
    assert pager.params() == {"limit": 100, "offset": 0}
    assert len(pager.accept(page(ids(0, 100), True))) == 100
    assert pager.params() == {"limit": 100, "offset": 100}
    assert [i["id"] for i in pager.accept(page(ids(100, 3), False))] == ["U100", "U101", "U102"]
    assert (pager.done, pager.pages) == (True, 2)


def test_the_pager_raises_at_the_offset_limit_instead_of_truncating():
    pager = OffsetPager("/users", "users")
    for start in range(0, 9_900, 100):
        pager.accept(page(ids(start, 100), True))
    assert pager.params() == {"limit": 100, "offset": 9_900}
    with pytest.raises(PaginationLimitError) as caught:
        pager.accept(page(ids(9_900, 100), True))
    assert str(caught.value) == (
        "PagerDuty GET /users: more than 10000 users: PagerDuty's offset pagination stops at 10000, "
        "so this listing cannot be read in full; narrow it with a filter"
    )


def test_exactly_ten_thousand_items_are_read_in_full():
    pager = OffsetPager("/users", "users")
    for start in range(0, 9_900, 100):
        pager.accept(page(ids(start, 100), True))
    pager.accept(page(ids(9_900, 100), False))
    assert (pager.done, pager.offset) == (True, 10_000)


def test_an_empty_page_that_says_more_is_an_error_not_a_loop():
    pager = OffsetPager("/users", "users")
    pager.accept(page(ids(0, 100), True))
    with pytest.raises(PagerDutyError, match="the page at offset 100 says more=true but brings no new items"):
        pager.accept(page([], True))


def test_a_page_of_repeats_is_an_error_and_partial_repeats_are_dropped():
    pager = OffsetPager("/users", "users")
    pager.accept(page(ids(0, 100), True))
    assert [i["id"] for i in pager.accept(page(ids(99, 100), True))][:2] == ["U100", "U101"]
    with pytest.raises(PagerDutyError, match="brings no new items"):
        pager.accept(page(ids(0, 100), True))


def test_short_pages_that_keep_saying_more_are_an_error():
    pager = OffsetPager("/users", "users")
    pager.accept(page(ids(0, 10), True))
    pager.accept(page(ids(10, 10), True))
    with pytest.raises(PagerDutyError, match="3 pages in a row held fewer items than the 100 asked for"):
        pager.accept(page(ids(20, 10), True))


def test_the_last_request_before_the_limit_asks_only_for_what_is_left():
    pager = OffsetPager("/users", "users", offset=9_950)
    assert pager.params() == {"limit": 50, "offset": 9_950}


@pytest.mark.parametrize(
    ("body", "reason"),
    [({"more": False}, "the answer has no 'users' list"), ({"users": []}, "has no boolean 'more'")],
)
def test_a_page_of_the_wrong_shape_is_an_error(body: dict, reason: str):
    with pytest.raises(PagerDutyError, match=reason):
        OffsetPager("/users", "users").accept(body)


def test_pagerduty_error_bodies_become_exceptions_with_their_message():
    refused = httpx.Response(
        400,
        json={
            "error": {
                "message": "Invalid Input Provided",
                "code": 2001,
                "errors": ["User cannot be removed as they belong to an escalation policy on this team"],
            }
        },
    )
    error = error_from_response(refused, "DELETE", "/teams/PT1/users/PU1")
    assert (type(error), error.status, error.code) == (PagerDutyError, 400, 2001)
    assert str(error) == (
        "PagerDuty DELETE /teams/PT1/users/PU1: Invalid Input Provided (HTTP 400, code 2001): "
        "User cannot be removed as they belong to an escalation policy on this team"
    )


def test_a_401_names_the_environment_variable():
    denied = httpx.Response(401, json={"error": {"message": "Authentication failed", "code": 2006}})
    error = error_from_response(denied, "GET", "/users")
    assert isinstance(error, PagerDutyAuthError)
    assert str(error) == (
        "PagerDuty GET /users: Authentication failed (HTTP 401, code 2006); "
        "check the API token in PAGERDUTY_API_TOKEN"
    )


def test_a_bare_429_after_retries_says_so():
    error = error_from_response(httpx.Response(429), "GET", "/teams", attempts=6)
    assert str(error) == "PagerDuty GET /teams: Too Many Requests (after 6 attempts) (HTTP 429)"
