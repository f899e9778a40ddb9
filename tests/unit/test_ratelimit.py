"""The token bucket's arithmetic on a fake clock: pacing, burst, and correction by rate-limit headers."""

from __future__ import annotations

import threading

import pytest

from nthlayer_pipelines.resources.http import ratelimit
from nthlayer_pipelines.resources.http.ratelimit import (
    ProviderWindow,
    RateLimitHeaders,
    TokenBucket,
    parse_rate_limit_headers,
    shared_bucket,
)


def answer(remaining: int, reset: float, limit: int = 960) -> dict[str, str]:
    return {
        "ratelimit-limit": str(limit),
        "ratelimit-remaining": str(remaining),
        "ratelimit-reset": str(reset),
    }


def fresh(limit: int = 960, window: float = 60.0, burst: int | None = None) -> TokenBucket:
    return TokenBucket(limit, window, burst, clock=lambda: 0.0)


# ---- rate and burst ----------------------------------------------------------------------------------


def test_rate_and_burst_come_from_the_documented_limit():
    default = TokenBucket()
    assert (default.limit, default.window_seconds, default.rate, default.burst) == (960, 60.0, 16.0, 16)
    scaled = TokenBucket(48_000, 60)
    assert (scaled.rate, scaled.burst) == (800.0, 800)
    assert TokenBucket(960, 60, burst=960).burst == 960
    assert TokenBucket(5, 60).burst == 1  # never less than one request


def test_a_full_bucket_sends_its_burst_at_once_then_paces_at_the_rate():
    bucket = fresh()
    waits = [bucket.reserve(now=0.0) for _ in range(19)]
    assert waits[:16] == [0.0] * 16
    assert waits[16:] == [pytest.approx(1 / 16), pytest.approx(2 / 16), pytest.approx(3 / 16)]
    assert bucket.tokens(0.0) == pytest.approx(-3.0)
    assert bucket.in_flight == 19


def test_tokens_refill_at_the_rate_and_never_beyond_the_burst():
    bucket = fresh()
    for _ in range(16):
        bucket.reserve(now=0.0)
    assert bucket.tokens(0.5) == pytest.approx(8.0)
    assert bucket.tokens(600.0) == pytest.approx(16.0)
    assert bucket.reserve(now=600.0) == 0.0


def test_over_a_long_run_the_rate_is_the_limit():
    bucket = fresh(limit=120, window=60.0, burst=4)  # 2 a second
    ready_times = []
    for _ in range(1_000):
        ready_times.append(bucket.reserve(now=0.0))
    # 4 at once, then one every half second: the 1,000th goes at (1000 - 4) / 2 seconds.
    assert ready_times[-1] == pytest.approx(498.0)
    # Any minute holds at most the burst and a minute's worth of the rate.
    assert sum(1 for t in ready_times if t <= 60.0) == 4 + 120


def test_acquire_sleeps_the_reserved_wait_and_counts_it():
    slept: list[float] = []
    bucket = TokenBucket(60, 60.0, burst=1, clock=lambda: 10.0, sleep=slept.append)
    assert [bucket.acquire() for _ in range(3)] == [0.0, 1.0, 2.0]
    assert slept == [1.0, 2.0]
    assert bucket.waited_seconds == 3.0


def test_an_interrupted_wait_gives_its_place_in_flight_back():
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    bucket = TokenBucket(60, 60.0, burst=1, clock=lambda: 0.0, sleep=interrupted)
    bucket.acquire()
    with pytest.raises(KeyboardInterrupt):
        bucket.acquire()
    assert bucket.in_flight == 1


def test_threads_reserving_at_once_each_get_their_own_token():
    bucket = fresh(limit=600, window=60.0, burst=10)  # 10 a second
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(25):
            wait = bucket.reserve(now=0.0)
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 200 reservations at one instant: 10 at once, then one every 0.1 s, no two at the same moment.
    assert sorted(round(w, 6) for w in waits) == [0.0] * 10 + [round(n / 10, 6) for n in range(1, 191)]
    assert bucket.in_flight == 200


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="rate limit must be at least 1 request, not 0"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="rate window must be longer than 0 seconds, not 0"):
        TokenBucket(960, 0)
    with pytest.raises(ValueError, match="burst must be at least 1 request, not -1"):
        TokenBucket(960, 60, burst=-1)


# ---- correction by the provider's headers -------------------------------------------------------------


def test_headers_are_read_case_insensitively_and_nonsense_is_ignored():
    assert parse_rate_limit_headers(
        {"RateLimit-Limit": "960", "RATELIMIT-REMAINING": "17", "ratelimit-reset": "42"}
    ) == RateLimitHeaders(960, 17, 42.0)
    assert parse_rate_limit_headers(
        {"ratelimit-limit": "many", "ratelimit-remaining": "-1", "ratelimit-reset": "nan"}
    ) == RateLimitHeaders(None, None, None)
    assert parse_rate_limit_headers({}) == RateLimitHeaders(None, None, None)


def test_when_the_window_is_spoken_for_requests_wait_for_its_reset():
    bucket = fresh(burst=100)
    for _ in range(3):
        bucket.reserve(now=0.0)
    # One answer back, two still in flight: of the 5 the provider still takes, they may use 2.
    bucket.release(answer(remaining=5, reset=10), now=1.0)
    assert bucket.window(1.0) == ProviderWindow(budget=3, reset_at=11.0, lowest_remaining=5)
    assert [bucket.reserve(now=1.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(now=2.0) == 9.0  # until the reset at 11 s, although tokens are plentiful
    assert bucket.reserve(now=2.0) == 9.0
    assert bucket.window(2.0) == ProviderWindow(budget=0, reset_at=11.0, lowest_remaining=5, deferred=2)


def test_after_the_reset_the_window_is_forgotten_and_the_rate_alone_paces():
    bucket = fresh(burst=100)
    bucket.reserve(now=0.0)
    bucket.release(answer(remaining=0, reset=10), now=1.0)
    assert bucket.reserve(now=5.0) == 6.0
    assert bucket.window(11.0) is None
    assert bucket.reserve(now=11.0) == 0.0


def test_a_429_with_headers_stops_every_request_until_the_reset():
    bucket = fresh(burst=100)
    bucket.reserve(now=0.0)
    bucket.release({"ratelimit-remaining": "0", "ratelimit-reset": "30"}, now=0.5)
    assert [bucket.reserve(now=1.0) for _ in range(3)] == [29.5, 29.5, 29.5]


def test_answers_without_headers_leave_the_pacing_alone():
    bucket = fresh(burst=2)
    bucket.reserve(now=0.0)
    bucket.release({}, now=0.0)
    bucket.reserve(now=0.0)
    bucket.release(None, now=0.0)
    assert bucket.window(0.0) is None
    assert bucket.in_flight == 0
    assert bucket.reserve(now=0.0) == pytest.approx(1 / 16)


def test_answers_overtaking_each_other_lower_the_budget_never_raise_it():
    bucket = fresh(burst=100)
    for _ in range(4):
        bucket.reserve(now=0.0)
    bucket.release(answer(remaining=50, reset=20), now=1.0)  # 3 others unanswered: 47
    bucket.release(answer(remaining=52, reset=20), now=1.1)  # decided earlier, answered later
    assert bucket.window(1.1) == ProviderWindow(budget=47, reset_at=pytest.approx(21.1), lowest_remaining=50)
    bucket.release(answer(remaining=40, reset=19), now=1.2)  # another client of the key spent 10
    assert bucket.window(1.2) == ProviderWindow(budget=39, reset_at=pytest.approx(21.1), lowest_remaining=40)


def test_a_jump_in_remaining_or_a_later_reset_is_a_new_window():
    bucket = fresh(burst=100)
    for _ in range(2):
        bucket.reserve(now=0.0)
    bucket.release(answer(remaining=3, reset=1), now=0.5)
    assert bucket.window(0.5) == ProviderWindow(budget=2, reset_at=1.5, lowest_remaining=3)
    # Before the reset we computed, the provider's window has already turned over (whole-second rounding).
    bucket.release(answer(remaining=959, reset=1), now=1.2)
    assert bucket.window(1.2) == ProviderWindow(budget=959, reset_at=2.2, lowest_remaining=959)

    bucket.reserve(now=2.5)
    bucket.release(answer(remaining=900, reset=2), now=3.0)  # the first answer of a window
    assert bucket.window(3.0) == ProviderWindow(budget=900, reset_at=5.0, lowest_remaining=900)
    bucket.reserve(now=3.0)
    bucket.release(answer(remaining=890, reset=60), now=3.1)  # resets far later: a window of its own
    assert bucket.window(3.1) == ProviderWindow(
        budget=890, reset_at=pytest.approx(63.1), lowest_remaining=890
    )


def test_a_late_answer_from_a_window_that_has_reset_is_ignored():
    bucket = fresh(burst=100)
    for _ in range(2):
        bucket.reserve(now=0.0)
    bucket.release(answer(remaining=950, reset=60), now=1.0)  # one other unanswered: 949
    bucket.release(answer(remaining=0, reset=2), now=1.5)  # a straggler of the window before
    assert bucket.window(1.5) == ProviderWindow(budget=949, reset_at=61.0, lowest_remaining=950)


# ---- one bucket per key in the process -----------------------------------------------------------------


def test_every_client_of_one_url_and_token_shares_one_bucket(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ratelimit, "_shared", {})
    first = shared_bucket("https://api.pagerduty.com", "secret-token-1")
    assert shared_bucket("https://api.pagerduty.com/", "secret-token-1") is first
    assert shared_bucket("https://api.pagerduty.com", "secret-token-2") is not first
    assert shared_bucket("https://api.eu.pagerduty.com", "secret-token-1") is not first
    assert "secret-token" not in repr(ratelimit._shared)


def test_the_last_settings_for_a_key_win(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ratelimit, "_shared", {})
    bucket = shared_bucket("https://api.pagerduty.com", "token")
    assert (bucket.rate, bucket.burst) == (16.0, 16)
    again = shared_bucket("https://api.pagerduty.com", "token", limit=480, window_seconds=60.0, burst=4)
    assert again is bucket
    assert (bucket.rate, bucket.burst) == (8.0, 4)
