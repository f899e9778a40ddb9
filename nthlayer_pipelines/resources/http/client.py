"""HTTP plumbing every provider client shares: the retry policy, its decisions, request counters, and the
redaction of the client's secrets from everything a provider answers.

The decisions (`should_retry_status`, `should_retry_error`, `retry_wait_seconds`) are pure functions so a
concurrent reader can reuse them unchanged; `send_with_retries` is the one place that loops on them.

A provider, or a proxy in front of it, may repeat the request's `Authorization` header in its error text.
`ApiClient` owns a `Redactor` built from the secrets it was configured with, and `send_with_retries` hands
back every answer (body and reason phrase) and every transport failure already redacted, so any error
message, log line or ledger row a client builds from them holds no secret, whichever client built it.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, quote_plus

import httpx
import tenacity

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# A POST creates something and the providers offer no idempotency key, so a POST is retried only when it
# is known not to have been processed: 429 (refused by the rate limiter) and 503 (refused before reaching
# the application). A 500/502/504 may come after the write was applied; retrying could create it twice.
POST_RETRYABLE_STATUSES = frozenset({429, 503})

# Failures raised before a single byte of the request left this process: safe to retry for any method.
NEVER_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)

# Failures worth retrying for an idempotent request: timeouts, resets, and a peer that hung up mid-answer.
RETRYABLE_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

REDACTED = "[REDACTED]"
# No provider's credential is this short, and replacing a shorter value would garble ordinary words (an
# empty one would be "found" between every two characters).
MIN_SECRET_LENGTH = 4
# Headers that describe the body as it came over the wire; a redacted body is a new, plain one.
_WIRE_BODY_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})


# ---- redaction: pure ------------------------------------------------------------------------------------


def secret_forms(secret: str) -> set[str]:
    """Every way a text can carry `secret`: as it is; URL-encoded as a path, a query or a form writes it
    (hex escapes in either case); JSON-escaped, with or without non-ASCII escaped, and with `/` written
    `\\/` as some encoders do. A header's `Token token=<v>` or `Bearer <v>` holds the value in each of these
    forms when the header is encoded, so redacting the value's forms redacts the header's."""
    forms = {secret}
    for encoded in (quote(secret, safe=""), quote(secret), quote_plus(secret, safe="")):
        forms |= {encoded, _lowercase_escapes(encoded)}
    for ensure_ascii in (True, False):
        escaped = json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1]
        forms |= {escaped, escaped.replace("/", "\\/")}
    return forms


def _lowercase_escapes(encoded: str) -> str:
    parts = encoded.split("%")
    return parts[0] + "".join("%" + part[:2].lower() + part[2:] for part in parts[1:])


def basic_auth_secrets(user: str, password: str) -> tuple[str, ...]:
    """What to redact for HTTP Basic: the password, and the header's base64 of `user:password`, padded and
    bare (a text may drop the `=`)."""
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return password, encoded, encoded.rstrip("=")


def redaction_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    """Every form of every secret, longest first, so that a secret inside another is replaced only after
    the longer one and never leaves the rest of it showing. A value shorter than `MIN_SECRET_LENGTH` (an
    unset one is empty) is left out; one with stray whitespace is redacted with and without it."""
    forms = {
        form
        for secret in secrets
        if len(secret.strip()) >= MIN_SECRET_LENGTH
        for value in {secret, secret.strip()}
        for form in secret_forms(value)
    }
    return tuple(sorted(forms, key=lambda form: (-len(form), form)))


def redact(text: str, forms: Iterable[str]) -> str:
    """`text` with each form, in the order given (see `redaction_forms`), replaced by `REDACTED`."""
    for form in forms:
        text = text.replace(form, REDACTED)
    return text


class Redactor:
    """Replaces every form of some secrets in text, bytes and HTTP answers. `Redactor()` redacts nothing."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.forms = redaction_forms(secrets)
        self._encoded = tuple(form.encode() for form in self.forms)

    def __repr__(self) -> str:
        return f"Redactor({len(self.forms)} forms)"  # never the secrets themselves

    def __call__(self, text: str) -> str:
        return redact(text, self.forms)

    def content(self, data: bytes) -> bytes:
        """Bytes as a body holds them: the forms as UTF-8."""
        for form in self._encoded:
            data = data.replace(form, REDACTED.encode())
        return data

    def response(self, response: httpx.Response) -> httpx.Response:
        """The answer with its body and reason phrase redacted; the answer itself when neither holds a
        secret. The body must have been read (httpx.Client.send reads it unless asked to stream)."""
        content, reason = self.content(response.content), self(response.reason_phrase)
        if content == response.content and reason == response.reason_phrase:
            return response
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _WIRE_BODY_HEADERS]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=content,
            request=response.request,
            extensions={**response.extensions, "reason_phrase": reason.encode("ascii", "replace")},
        )


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose lines are redacted before any handler sees them: for the retries' own lines, and for
    a library that logs what a server answered (slack_sdk logs a body it cannot parse)."""

    def __init__(self, logger: logging.Logger, redactor: Redactor) -> None:
        super().__init__(logger, {})
        self.redactor = redactor

    @property
    def level(self) -> int:
        # slack_sdk reads its logger's `level` to decide whether to build its debug lines.
        return self.logger.level

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            self.logger.log(level, self.redactor(text), **kwargs)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: capped exponential backoff with full jitter."""

    max_attempts: int = 6
    backoff_base_seconds: float = 0.5
    max_backoff_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.backoff_base_seconds < 0 or self.max_backoff_seconds < 0:
            raise ValueError("backoff_base_seconds and max_backoff_seconds must not be negative")


@dataclass(eq=False)  # told apart by identity: two tallies of the same counts are not one
class CallTally:
    """The requests one piece of work sent (see `RequestStats.tally`), whichever threads sent them."""

    api_calls: int = 0
    retries: int = 0


@dataclass
class RequestStats:
    """Counters a client exposes as Dagster metadata. Thread-safe, so concurrent readers can share one.

    The totals are the client's; `tally` also counts what one thread sends, for a cost per piece of work
    that stays right while other threads send on the same client (a diff of the totals would not)."""

    api_calls: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    rate_limited: int = 0  # 429 answers seen
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _local: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    def count(self, *, api_calls: int = 0, retries: int = 0, rate_limited: int = 0) -> None:
        with self._lock:
            self.api_calls += api_calls
            self.retries += retries
            self.rate_limited += rate_limited
            for tally in self.tallies():
                tally.api_calls += api_calls
                tally.retries += retries

    def tallies(self) -> tuple[CallTally, ...]:
        """The tallies this thread counts into now: hand them to `counting_into` in a helper thread."""
        return getattr(self._local, "tallies", ())

    @contextmanager
    def counting_into(self, tallies: tuple[CallTally, ...]) -> Iterator[None]:
        """Count what this thread sends within the block into `tallies` too."""
        outer = self.tallies()
        self._local.tallies = outer + tuple(t for t in tallies if t not in outer)
        try:
            yield
        finally:
            self._local.tallies = outer

    @contextmanager
    def tally(self) -> Iterator[CallTally]:
        """A tally of what this thread sends within the block (and the helper threads it hands it to)."""
        tally = CallTally()
        with self.counting_into((tally,)):
            yield tally


class RequestFailed(Exception):
    """No HTTP answer: the retries ran out, or none was made because the write may have been applied.

    `reason` is redacted: a transport error's own text may quote what the server sent (h11 quotes a
    malformed header line). `cause` keeps the error itself for its type; do not show its text."""

    def __init__(
        self, method: str, path: str, cause: httpx.TransportError, attempts: int, *, redactor: Redactor
    ) -> None:
        self.method = method
        self.path = path
        self.cause = cause
        self.attempts = attempts
        self.may_have_been_applied = may_have_been_applied(method, cause)
        self.reason = redactor(describe_failure(method, cause, attempts))
        super().__init__(f"{method} {path} {self.reason}")


def is_idempotent(method: str) -> bool:
    return method.upper() in IDEMPOTENT_METHODS


def should_retry_status(method: str, status: int) -> bool:
    if is_idempotent(method):
        return status in RETRYABLE_STATUSES
    return status in POST_RETRYABLE_STATUSES


def should_retry_error(method: str, error: BaseException) -> bool:
    if isinstance(error, NEVER_SENT_ERRORS):
        return True
    # A timeout or reset after sending leaves a non-idempotent write in an unknown state: the caller must
    # read before writing again rather than have it applied twice.
    return is_idempotent(method) and isinstance(error, RETRYABLE_ERRORS)


def may_have_been_applied(method: str, error: BaseException) -> bool:
    return not is_idempotent(method) and not isinstance(error, NEVER_SENT_ERRORS)


def answer_may_follow_write(method: str, status: int) -> bool:
    """An error answer to a write that is not retried because it may have been applied (a 500, 502 or
    504 to a POST): the caller must read the state before writing again."""
    return not is_idempotent(method) and status in RETRYABLE_STATUSES - POST_RETRYABLE_STATUSES


def describe_failure(method: str, error: BaseException, attempts: int) -> str:
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    text = f"got no answer after {attempts} attempt(s) ({reason})"
    if may_have_been_applied(method, error):
        text += "; not retried because the write may have been applied: read the state before writing again"
    return text


def server_wait_seconds(
    status: int, headers: Mapping[str, str], *, now: datetime | None = None
) -> float | None:
    """The wait a 429 or 503 asks for: `ratelimit-reset` (PagerDuty, seconds), else `Retry-After`
    (seconds or an HTTP date). None when the answer names no wait or names one that does not parse."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if status == 429:
        reset = _seconds(lowered.get("ratelimit-reset"))
        if reset is not None:
            return reset
    if status in (429, 503):
        retry_after = lowered.get("retry-after")
        seconds = _seconds(retry_after)
        if seconds is not None:
            return seconds
        if retry_after:
            try:
                moment = email.utils.parsedate_to_datetime(retry_after)
            except (TypeError, ValueError):
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())
    return None


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return None if math.isnan(seconds) or seconds < 0 else seconds


def backoff_seconds(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Full jitter: uniform over [0, min(cap, base * 2^(attempt-1))], attempt counting from 1."""
    ceiling = min(policy.max_backoff_seconds, policy.backoff_base_seconds * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0, ceiling)


def retry_wait_seconds(
    attempt: int,
    policy: RetryPolicy,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
) -> float:
    """How long to wait after failed attempt `attempt`: the server's word when it gave one (capped at
    `max_backoff_seconds`; a longer wait is retried early and meets another 429), else backoff."""
    if status is not None and headers is not None:
        asked = server_wait_seconds(status, headers)
        if asked is not None:
            return min(asked, policy.max_backoff_seconds)
    return backoff_seconds(attempt, policy, rng)


def send_with_retries(
    send: Callable[[], httpx.Response],
    *,
    method: str,
    path: str,
    policy: RetryPolicy,
    stats: RequestStats,
    logger: logging.Logger,
    redactor: Redactor,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[httpx.Response, int]:
    """Call `send` until it answers with a final status or the policy gives up.

    Returns the last response (which may still be a 429 or 5xx once attempts run out), redacted by
    `redactor`, and the number of attempts. Raises `RequestFailed` when the last attempt got no answer at
    all. `redactor` has no default: a client must say which secrets it sends.
    """
    method = method.upper()
    log = RedactingLogger(logger, redactor)

    attempts = 0

    def attempt() -> httpx.Response:
        nonlocal attempts
        attempts += 1
        stats.count(api_calls=1)
        response = send()
        if response.status_code == 429:
            stats.count(rate_limited=1)
        return response

    def wait(state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            response: httpx.Response = outcome.result()
            return retry_wait_seconds(
                state.attempt_number, policy, status=response.status_code, headers=response.headers
            )
        return retry_wait_seconds(state.attempt_number, policy)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        stats.count(retries=1)
        outcome = state.outcome
        if outcome is not None and outcome.failed:
            reason = type(outcome.exception()).__name__
        elif outcome is not None:
            reason = f"HTTP {outcome.result().status_code}"
        else:
            reason = "unknown"
        delay = state.next_action.sleep if state.next_action else 0.0
        # Method and path only: headers (and the token in them) never reach a log line.
        log.warning(
            "%s %s: %s on attempt %d of %d, retrying in %.2fs",
            method,
            path,
            reason,
            state.attempt_number,
            policy.max_attempts,
            delay,
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.max_attempts),
        wait=wait,
        retry=(
            tenacity.retry_if_exception(lambda error: should_retry_error(method, error))
            | tenacity.retry_if_result(lambda response: should_retry_status(method, response.status_code))
        ),
        before_sleep=before_sleep,
        # Out of attempts: hand back the last response (or raise its error) instead of tenacity's RetryError.
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        sleep=sleep,
    )
    try:
        response = retrying(attempt)
    except httpx.TransportError as error:
        # Not chained: the error's unredacted text would reach a traceback (Dagster stores the chain);
        # its type and redacted text are in the message.
        raise RequestFailed(method, path, error, attempts, redactor=redactor) from None
    return redactor.response(response), attempts


class ApiClient:
    """What every provider client shares: one pooled httpx client, its retry policy, request counters, and
    the redactor of the secrets it sends. Send through `send`: what comes back holds none of them."""

    def __init__(
        self,
        http: httpx.Client,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
        *,
        secrets: Iterable[str],
    ) -> None:
        self._http = http
        self.policy = policy
        self.stats = RequestStats()
        self._sleep = sleep
        self.redactor = Redactor(secrets)

    def send(
        self, send: Callable[[], httpx.Response], *, method: str, path: str, logger: logging.Logger
    ) -> tuple[httpx.Response, int]:
        """`send_with_retries` with this client's policy, counters and redactor: every error text built
        from the answer (message, an errors list, the reason phrase, a parse failure quoting the body)
        is redacted, and so is a failure without an answer."""
        return send_with_retries(
            send,
            method=method,
            path=path,
            policy=self.policy,
            stats=self.stats,
            logger=logger,
            redactor=self.redactor,
            sleep=self._sleep,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def api_calls(self) -> int:
        return self.stats.api_calls

    @property
    def retries(self) -> int:
        return self.stats.retries

    @property
    def rate_limited(self) -> int:
        return self.stats.rate_limited
