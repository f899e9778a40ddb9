"""Fault injection: which request gets which fault, decided by a seed, without I/O.

A plan is a seed and a list of rules. Each rule names a kind, the share of matching requests it hits
(`rate`), and which requests match: a provider (or all) and a glob on the endpoint, `"METHOD /template"`
as the sandbox names it (`"GET /teams/{id}/members"`, `"DELETE /teams/*"`, `"*"`).

Kinds: `status` (429 with or without `ratelimit-*` headers and PagerDuty's code 2020 body, 500, 502,
503), `latency`, `timeout` (the answer hangs `hang_seconds`, past the client's timeout), `drop` (the
connection closes mid-answer), `truncate` (a listing page loses its tail, `more` stays true: what was cut
is read at the next offset), `lag` (a write opens a window of `lag_ms` in which reads of that resource
get the answer they got before it), `refuse_removal` (PagerDuty's 400 code 2001 to removing a team
member) and `echo_headers` (a misbehaving proxy or provider: an error status, any 4xx or 5xx, whose body
repeats the request's headers, `Authorization` included, in the provider's error shape or, with
`echo_format: text`, as plain text). `when: before`: the endpoint never runs; `when: after`: it runs and
its answer is lost.

One request gets at most one fault. Its draw is a hash of the seed, the request (method, path, query)
and how many times that same request was seen before, so a run replays the same faults whatever order
concurrent requests arrive in, and a retry draws afresh. The matching rules share the draw in order:
rates of 0.1 and 0.1 hit 20 % of the requests both match.

The sandbox carries a plan out through `FaultInjector` (sandbox/injection.py). A plan file, given to
`nthlayer sandbox --faults FILE` or PUT as JSON to `/_admin/faults`::

    seed: 7
    rules:
      - {kind: status, status: 429, rate: 0.05, ratelimit_headers: false, rate_limit_body: false}
      - {kind: drop, rate: 0.05, provider: pagerduty, endpoint: "GET /teams/*"}
      - {kind: lag, rate: 1.0, endpoint: "PUT *", lag_ms: 800}
      - {kind: echo_headers, status: 400, provider: pagerduty, endpoint: "PUT *"}
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

FaultKind = Literal[
    "status", "latency", "timeout", "drop", "truncate", "lag", "refuse_removal", "echo_headers"
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]
STATUSES = (429, 500, 502, 503)
ECHO_STATUSES = range(400, 600)  # a proxy or provider echoing the request may answer any error status

# Faults a retry gets past: not the 2001 refusal, which stands until a person edits the policy, nor an
# echo of the headers, which is the same answer each time.
TRANSIENT_KINDS = frozenset(FAULT_KINDS) - {"refuse_removal", "echo_headers"}


class FaultPlanError(ValueError):
    """A fault plan that does not parse; the message names every problem."""


class FaultRule(BaseModel):
    """One kind of fault, the share of requests it hits, and which requests those may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    rate: float = Field(default=1.0, ge=0.0, le=1.0, description="share of matching requests hit")
    provider: Literal["pagerduty", "cortex", "slack"] | None = None
    endpoint: str = Field(default="*", min_length=1, description='glob on "METHOD /template"')
    first_arrivals: int | None = Field(
        default=None, ge=1, description="hit only a request's first N arrivals (its retries come after)"
    )
    # status, echo_headers
    status: int = Field(default=503, description="status: 429, 500, 502, 503; echo_headers: 400-599")
    ratelimit_headers: bool = Field(default=True, description="429: send ratelimit-* headers")
    rate_limit_body: bool = Field(default=True, description="429: send PagerDuty's code 2020 body")
    reset_seconds: int = Field(default=1, ge=0, description="429: the ratelimit-reset header's value")
    # latency, timeout, lag
    latency_ms: float = Field(default=200.0, ge=0)
    hang_seconds: float = Field(default=60.0, gt=0, description="timeout: how long the answer hangs")
    lag_ms: float = Field(default=1000.0, gt=0, description="lag: reads answer the old state this long")
    # status, timeout, drop: before the endpoint (never processed) or after it (processed, answer lost)
    when: Literal["before", "after"] = "before"
    # truncate
    keep_share: float = Field(default=0.5, ge=0.0, lt=1.0, description="truncate: share of a page kept")
    # echo_headers
    echo_format: Literal["json", "text"] = Field(
        default="json", description="echo_headers: the provider's JSON error shape, or plain text"
    )

    @field_validator("status")
    @classmethod
    def _status_fits_the_kind(cls, status: int, info: ValidationInfo) -> int:
        allowed = ECHO_STATUSES if info.data.get("kind") == "echo_headers" else STATUSES
        if status not in allowed:
            shown = "400 to 599" if allowed is ECHO_STATUSES else ", ".join(map(str, STATUSES))
            raise ValueError(f"{info.data.get('kind')} answers {shown}, not {status}")
        return status

    @property
    def label(self) -> str:
        """How the request log and the counters name this fault."""
        if self.kind != "status":
            return self.kind
        if self.status != 429:
            return f"status_{self.status}"
        headers = "headers" if self.ratelimit_headers else "no_headers"
        body = "body" if self.rate_limit_body else "no_body"
        return f"status_429_{headers}_{body}"

    def matches(self, provider: str, endpoint: str) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        if self.kind == "lag" and endpoint.startswith("GET "):
            return False  # a lag window opens at a write; reads are answered by the window, not drawn
        if self.kind == "truncate" and not endpoint.startswith("GET "):
            return False
        if self.kind == "refuse_removal" and not (provider == "pagerduty" and endpoint.startswith("DELETE ")):
            return False
        return fnmatchcase(endpoint, self.endpoint)


class FaultPlan(BaseModel):
    """A seed and the rules it draws for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    rules: tuple[FaultRule, ...] = ()

    def choose(self, provider: str, endpoint: str, request_key: str, occurrence: int) -> FaultRule | None:
        """The fault for the `occurrence`-th time (from 0) `request_key` reached `endpoint`, or None."""
        matching = [
            rule
            for rule in self.rules
            if rule.matches(provider, endpoint)
            and (rule.first_arrivals is None or occurrence < rule.first_arrivals)
        ]
        if not matching:
            return None
        draw = uniform_draw(self.seed, request_key, occurrence)
        bound = 0.0
        for rule in matching:
            bound += rule.rate
            if draw < bound:
                return rule
        return None

    @property
    def has_lag(self) -> bool:
        return any(rule.kind == "lag" for rule in self.rules)


def uniform_draw(seed: int, request_key: str, occurrence: int) -> float:
    """A number in [0, 1) that depends only on its arguments."""
    digest = hashlib.blake2b(f"{seed}\0{request_key}\0{occurrence}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def request_key(method: str, path: str, query: Iterable[tuple[str, str]]) -> str:
    """A request's identity for the draw: the same method, path and query (in any order) are the same."""
    return f"{method} {path}?{'&'.join(f'{k}={v}' for k, v in sorted(query))}"


def parse_plan(data: Any) -> FaultPlan:
    """A plan from parsed YAML or JSON; `FaultPlanError` names every problem."""
    if data is None:
        return FaultPlan()
    try:
        return FaultPlan.model_validate(data)
    except ValidationError as error:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: {e['msg']}" for e in error.errors()]
        raise FaultPlanError("; ".join(problems)) from None


def load_plan(path: str | Path) -> FaultPlan:
    """A plan from a YAML or JSON file (JSON is YAML)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise FaultPlanError(f"{path}: not YAML or JSON ({error})") from None
    try:
        return parse_plan(data)
    except FaultPlanError as error:
        raise FaultPlanError(f"{path}: {error}") from None


def transient_mix(
    rate: float, seed: int = 0, *, lag_ms: float = 800.0, hang_seconds: float = 3.0
) -> FaultPlan:
    """`rate` of every request hit by a transient fault, spread evenly over the kinds that fit it (each
    429 variant, 500, 502, 503, latency, a timeout and a dropped connection before and after the endpoint
    runs; a listing page cut short too for reads), and every write that got none opening a lag window."""
    hitting: list[dict[str, Any]] = [
        {"kind": "status", "status": 429, "ratelimit_headers": True, "rate_limit_body": True},
        {"kind": "status", "status": 429, "ratelimit_headers": False, "rate_limit_body": True},
        {"kind": "status", "status": 429, "ratelimit_headers": False, "rate_limit_body": False},
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 502},
        {"kind": "status", "status": 503},
        {"kind": "latency", "latency_ms": 300},
        {"kind": "timeout", "hang_seconds": hang_seconds, "when": "before"},
        {"kind": "timeout", "hang_seconds": hang_seconds, "when": "after"},
        {"kind": "drop", "when": "before"},
        {"kind": "drop", "when": "after"},
    ]
    rules: list[dict[str, Any]] = []
    # "[!G]* *": every method but GET. Reads have one kind more, so each kind's share differs by method.
    for methods, kinds in (("GET *", [*hitting, {"kind": "truncate"}]), ("[!G]* *", hitting)):
        rules += [{**kind, "rate": rate / len(kinds), "endpoint": methods} for kind in kinds]
    rules += [{"kind": "lag", "rate": 1.0, "lag_ms": lag_ms}]
    return parse_plan({"seed": seed, "rules": rules})
