"""Keep every request of one API key under the provider's rate limit, however many threads send them.

A `TokenBucket` paces requests at the documented rate (PagerDuty: 960 a minute per key) with a small
burst. The provider's answers correct it: `ratelimit-remaining` says how many requests the current window
still takes and `ratelimit-reset` in how many seconds it resets. When the requests still in flight could
use up what remains, the next ones wait for the reset instead of drawing a 429. `shared_bucket` hands every
client of one (API URL, token) in the process the same bucket, so assets and ops of a run add up to one rate.

The arithmetic runs on the clock it is given (`reserve` and `release` take `now`), so tests need no sleeping.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_LIMIT = 960  # PagerDuty: requests a minute per account API key
DEFAULT_WINDOW_SECONDS = 60.0

# `ratelimit-reset` comes in whole seconds, so two answers from one window name resets less than a second
# apart (plus the time between them); a reset further out than that belongs to a later window.
RESET_SLACK_SECONDS = 1.0


@dataclass(frozen=True)
class RateLimitHeaders:
    """What an answer says about its rate-limit window; None where it says nothing parseable."""

    limit: int | None
    remaining: int | None
    reset_seconds: float | None


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitHeaders:
    lowered = {key.lower(): value for key, value in headers.items()}
    return RateLimitHeaders(
        limit=_count(lowered.get("ratelimit-limit")),
        remaining=_count(lowered.get("ratelimit-remaining")),
        reset_seconds=_seconds(lowered.get("ratelimit-reset")),
    )


def _count(value: str | None) -> int | None:
    seconds = _seconds(value)
    return None if seconds is None else int(seconds)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return None if math.isnan(number) or math.isinf(number) or number < 0 else number


def default_burst(limit: int, window_seconds: float) -> int:
    """One second's worth of the limit: paced from the first request, as PagerDuty asks of its clients."""
    return max(1, math.ceil(limit / window_seconds))


@dataclass
class ProviderWindow:
    """The provider's current rate-limit window as its answers describe it."""

    budget: int  # requests it still takes that this bucket has not yet handed out
    reset_at: float
    lowest_remaining: int  # the lowest `ratelimit-remaining` it reported: within a window it only falls
    deferred: int = 0  # handed-out requests that wait for `reset_at`, so draw on the next window


class TokenBucket:
    """A thread-safe token bucket of `limit` requests a `window_seconds`, corrected by the provider's headers.

    Every request takes a token with `acquire()` (or `reserve(now)`, which returns the wait instead of
    sleeping) and gives back its answer's headers with `release(headers)`, also when it got no answer.
    """

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._configure(limit, window_seconds, burst)
        self._tokens = float(self.burst)
        self._updated_at = clock()
        self._in_flight = 0
        self._peak_in_flight = 0
        self._window: ProviderWindow | None = None
        self.waited_seconds = 0.0  # total time callers of acquire() spent waiting

    def _configure(self, limit: int, window_seconds: float, burst: int | None) -> None:
        if limit < 1:
            raise ValueError(f"rate limit must be at least 1 request, not {limit}")
        if not window_seconds > 0:
            raise ValueError(f"rate window must be longer than 0 seconds, not {window_seconds}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be at least 1 request, not {burst}")
        self.limit = limit
        self.window_seconds = float(window_seconds)
        self.burst = burst or default_burst(limit, window_seconds)
        self.rate = limit / self.window_seconds  # tokens a second

    def configure(self, limit: int, window_seconds: float, burst: int | None = None) -> None:
        """Change the rate and burst; tokens already held stay, up to the new burst."""
        with self._lock:
            self._configure(limit, window_seconds, burst)
            self._tokens = min(self._tokens, float(self.burst))

    def __repr__(self) -> str:
        return f"TokenBucket(limit={self.limit}, window_seconds={self.window_seconds}, burst={self.burst})"

    @property
    def in_flight(self) -> int:
        """Requests handed a token and not yet released, those still waiting to be sent included."""
        return self._in_flight

    def window(self, now: float) -> ProviderWindow | None:
        """What the provider's answers say of its current window; None when they said nothing yet or it
        has reset since."""
        with self._lock:
            self._forget_expired_window(now)
            return None if self._window is None else ProviderWindow(**vars(self._window))

    def tokens(self, now: float) -> float:
        """Tokens held at `now`; negative while reservations wait for tokens still to come."""
        with self._lock:
            self._refill(now)
            return self._tokens

    def reserve(self, now: float | None = None) -> float:
        """Take a token for one request and count it in flight; returns the seconds to wait before sending."""
        with self._lock:
            now = self._clock() if now is None else now
            self._refill(now)
            self._forget_expired_window(now)
            self._tokens -= 1.0
            ready = now + max(0.0, -self._tokens / self.rate)
            window = self._window
            if window is not None:
                if window.budget > 0:
                    window.budget -= 1
                else:  # the window is spoken for: wait for its reset, never for a 429
                    ready = max(ready, window.reset_at)
                    window.deferred += 1
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            return ready - now

    def acquire(self) -> float:
        """Block until one request may be sent; returns the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            try:
                self._sleep(wait)
            except BaseException:
                self.release()
                raise
            with self._lock:
                self.waited_seconds += wait
        return wait

    def release(self, headers: Mapping[str, str] | None = None, now: float | None = None) -> None:
        """The request is over; `headers` are its answer's, None when it got none."""
        with self._lock:
            now = self._clock() if now is None else now
            self._in_flight = max(0, self._in_flight - 1)
            if headers is None:
                return
            said = parse_rate_limit_headers(headers)
            if said.remaining is None or said.reset_seconds is None:
                return
            self._correct(said.remaining, said.reset_seconds, now)

    def _correct(self, remaining: int, reset_seconds: float, now: float) -> None:
        self._forget_expired_window(now)
        reset_at = now + reset_seconds
        window = self._window
        # Within one window `remaining` only falls; answers overtaking each other can make it rise by
        # at most the requests that were in flight together. A larger rise, or a reset further out than
        # whole-second rounding explains, is a new window.
        if (
            window is None
            or remaining > window.lowest_remaining + self._peak_in_flight
            or reset_at > window.reset_at + RESET_SLACK_SECONDS
        ):
            # Every request still unanswered may not have reached the provider when it counted.
            budget = max(0, remaining - self._in_flight)
            self._window = ProviderWindow(budget, reset_at, remaining)
            return
        if reset_at < window.reset_at - RESET_SLACK_SECONDS:
            return  # a late answer from a window that has already reset: it says nothing about this one
        # Unanswered requests may still draw on it, except those waiting for its reset.
        budget = max(0, remaining - (self._in_flight - window.deferred))
        window.budget = min(window.budget, budget)
        window.lowest_remaining = min(window.lowest_remaining, remaining)
        window.reset_at = max(window.reset_at, reset_at)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated_at)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated_at = max(self._updated_at, now)

    def _forget_expired_window(self, now: float) -> None:
        if self._window is not None and now >= self._window.reset_at:
            self._window = None


_shared: dict[tuple[str, str], TokenBucket] = {}
_shared_lock = threading.Lock()


def shared_bucket(
    api_url: str,
    api_token: str,
    *,
    limit: int = DEFAULT_LIMIT,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    burst: int | None = None,
) -> TokenBucket:
    """The process's one bucket for this API URL and token (kept by the token's hash, never the token).

    A later caller with other settings reconfigures it: the limit is the key's, not the caller's.
    """
    key = (api_url.rstrip("/"), hashlib.sha256(api_token.encode()).hexdigest())
    with _shared_lock:
        bucket = _shared.get(key)
        if bucket is None:
            bucket = _shared[key] = TokenBucket(limit, window_seconds, burst)
            return bucket
    if (bucket.limit, bucket.window_seconds, bucket.burst) != (
        limit,
        float(window_seconds),
        burst or default_burst(limit, window_seconds),
    ):
        bucket.configure(limit, window_seconds, burst)
    return bucket
