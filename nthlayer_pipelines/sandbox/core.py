"""The machinery every emulated provider shares: request context, hooks, request log, rate limits.

A request to a provider goes: latency -> faults (sandbox/injection.py) -> before-hooks -> the provider's
gate (auth, rate limit) -> the endpoint -> faults -> after-hooks -> the provider's finishing touches
(headers) -> the request log.
A fault plan covers the faults real providers show; hooks are for anything else a test needs: a
before-hook may answer instead of the endpoint, an after-hook may replace the answer. Both are chosen
per provider and endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nthlayer_pipelines.sandbox.faults import FaultRule
from nthlayer_pipelines.sandbox.org import SandboxOrg

if TYPE_CHECKING:
    from nthlayer_pipelines.sandbox.injection import FaultInjector

DEFAULT_PAGERDUTY_TOKEN = "sandbox-pagerduty-token"
DEFAULT_CORTEX_TOKEN = "sandbox-cortex-token"
DEFAULT_SLACK_TOKEN = "xoxb-sandbox-token"

TOKEN_ENV_VARS = {
    "pagerduty": "PAGERDUTY_API_TOKEN",
    "cortex": "CORTEX_API_TOKEN",
    "slack": "SLACK_BOT_TOKEN",
}
DEFAULT_TOKENS = {
    "pagerduty": DEFAULT_PAGERDUTY_TOKEN,
    "cortex": DEFAULT_CORTEX_TOKEN,
    "slack": DEFAULT_SLACK_TOKEN,
}
PROVIDERS = tuple(TOKEN_ENV_VARS)
REDACTED = "[REDACTED]"


def tokens_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The token each provider accepts: the pipeline's own variables, else the documented defaults."""
    return {
        provider: environ.get(variable) or DEFAULT_TOKENS[provider]
        for provider, variable in TOKEN_ENV_VARS.items()
    }


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(
        content, status, headers=dict(headers or {}), media_type="application/json; charset=utf-8"
    )


@dataclass
class SandboxSettings:
    """Knobs that may change while the sandbox runs."""

    rate_limit: int = 960
    rate_window_seconds: float = 60.0
    latency_ms: float = 0.0
    audit_records: str = "available"  # PagerDuty's audit trail: available | payment_required | forbidden


@dataclass
class RequestContext:
    provider: str
    endpoint: str  # method and the provider's path template, e.g. "GET /teams/{id}/members"
    request: Request
    body: bytes = b""
    started: float = field(default_factory=time.perf_counter)
    received_at: float = field(default_factory=time.time)
    # Filled by the provider's gate: the rate-limit decision, and arguments parsed from the body.
    rate: RateDecision | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    # Filled by fault injection: the rule drawn for this request, and the fault it got (logged by label).
    fault_rule: FaultRule | None = None
    fault: str | None = None

    @property
    def path_params(self) -> dict[str, Any]:
        return self.request.path_params

    def json_body(self) -> Any:
        """The body as JSON; raises ValueError when it is not."""
        return json.loads(self.body) if self.body else None


BeforeHook = Callable[[RequestContext], Awaitable[Response | None]]
AfterHook = Callable[[RequestContext, Response], Awaitable[Response]]


class HookRegistry:
    """Hooks per provider and endpoint; None for either matches all."""

    def __init__(self) -> None:
        self._before: list[tuple[str | None, str | None, BeforeHook]] = []
        self._after: list[tuple[str | None, str | None, AfterHook]] = []
        self._lock = threading.Lock()

    def add_before(
        self, hook: BeforeHook, *, provider: str | None = None, endpoint: str | None = None
    ) -> None:
        with self._lock:
            self._before = [*self._before, (provider, endpoint, hook)]

    def add_after(self, hook: AfterHook, *, provider: str | None = None, endpoint: str | None = None) -> None:
        with self._lock:
            self._after = [*self._after, (provider, endpoint, hook)]

    def clear(self) -> None:
        with self._lock:
            self._before, self._after = [], []

    async def run_before(self, ctx: RequestContext) -> Response | None:
        for provider, endpoint, hook in self._before:
            if _matches(provider, endpoint, ctx):
                response = await hook(ctx)
                if response is not None:
                    return response
        return None

    async def run_after(self, ctx: RequestContext, response: Response) -> Response:
        for provider, endpoint, hook in self._after:
            if _matches(provider, endpoint, ctx):
                response = await hook(ctx, response)
        return response


def _matches(provider: str | None, endpoint: str | None, ctx: RequestContext) -> bool:
    return (provider is None or provider == ctx.provider) and (endpoint is None or endpoint == ctx.endpoint)


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


class FixedWindowRateLimiter:
    """Requests per key per window; a window opens with the key's first request."""

    def __init__(self, settings: SandboxSettings) -> None:
        self._settings = settings
        self._windows: dict[str, list[float]] = {}  # key -> [window start, count]

    def take(self, key: str, now: float | None = None) -> RateDecision:
        now = time.monotonic() if now is None else now
        limit, window = self._settings.rate_limit, self._settings.rate_window_seconds
        state = self._windows.get(key)
        if state is None or now - state[0] >= window:
            state = [now, 0]
            self._windows[key] = state
        allowed = state[1] < limit
        if allowed:
            state[1] += 1
        reset = max(0, math.ceil(state[0] + window - now))
        return RateDecision(allowed, limit, max(0, limit - int(state[1])), reset)


def credential_key(value: str) -> str:
    """A rate-limit bucket key for a credential that never keeps the credential itself."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def redact_authorization(value: str | None) -> str | None:
    """Keep the scheme, drop the secret: `Token token=[REDACTED]`, `Bearer [REDACTED]`."""
    if value is None:
        return None
    if value.startswith("Token token="):
        return "Token token=" + REDACTED
    scheme, _, rest = value.partition(" ")
    return f"{scheme} {REDACTED}" if rest else REDACTED


class RequestLog:
    """Every provider request the sandbox answered, newest last, without credentials."""

    def __init__(self, limit: int = 100_000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self._sequence = 0
        self.dropped = 0

    def record(self, ctx: RequestContext, status: int) -> None:
        request = ctx.request
        query: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            query.setdefault(key, []).append(REDACTED if key == "token" else value)
        entry = {
            "time": datetime.fromtimestamp(ctx.received_at, UTC).isoformat(timespec="milliseconds"),
            "provider": ctx.provider,
            "method": request.method,
            "path": request.url.path,
            "endpoint": ctx.endpoint,
            "query": query,
            "status": status,
            "duration_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
            "authorization": redact_authorization(request.headers.get("authorization")),
            "fault": ctx.fault,
        }
        with self._lock:
            self._sequence += 1
            entry["id"] = self._sequence
            if len(self._entries) == self._entries.maxlen:
                self.dropped += 1
            self._entries.append(entry)

    def entries(self, provider: str | None = None, method: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._entries)
        return [
            e
            for e in entries
            if (provider is None or e["provider"] == provider)
            and (method is None or e["method"] == method.upper())
        ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.dropped = 0


@dataclass
class SandboxState:
    """Everything behind one sandbox app; reachable as `app.state.sandbox`."""

    org: SandboxOrg
    tokens: dict[str, str]
    settings: SandboxSettings
    log: RequestLog
    faults: FaultInjector
    hooks: HookRegistry = field(default_factory=HookRegistry)


EndpointHandler = Callable[[RequestContext], Response]


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str  # the provider's own path, without the sandbox prefix
    handler: EndpointHandler


class ProviderApi(Protocol):
    """One emulated provider: its routes, and what it does around every request."""

    name: str
    prefix: str

    def endpoints(self) -> list[Endpoint]: ...

    def admit(self, ctx: RequestContext) -> Response | None:
        """Auth and rate limit: a response refuses the request, None lets it through."""
        ...

    def finish(self, ctx: RequestContext, response: Response) -> None:
        """Headers every answer of this provider carries."""
        ...

    def not_found(self, ctx: RequestContext) -> Response: ...


_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def provider_routes(sandbox: SandboxState, api: ProviderApi) -> list[Route]:
    """Starlette routes for a provider's endpoints, plus a catch-all answering in its 404 shape."""
    routes = [
        Route(
            api.prefix + endpoint.template,
            _wrap(sandbox, api, f"{endpoint.method} {endpoint.template}", endpoint.handler),
            methods=[endpoint.method],
        )
        for endpoint in api.endpoints()
    ]
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes.append(
        Route(api.prefix + "/{rest:path}", _wrap(sandbox, api, "*", api.not_found), methods=methods)
    )
    return routes


def _wrap(sandbox: SandboxState, api: ProviderApi, endpoint: str, handler: EndpointHandler):
    org, settings, hooks, log, faults = (
        sandbox.org,
        sandbox.settings,
        sandbox.hooks,
        sandbox.log,
        sandbox.faults,
    )

    async def handle(request: Request) -> Response:
        ctx = RequestContext(api.name, endpoint, request)
        if request.method in _METHODS_WITH_BODY:
            ctx.body = await request.body()
        if settings.latency_ms > 0:
            await asyncio.sleep(settings.latency_ms / 1000)
        response = await faults.before(ctx)
        if response is None:
            response = await hooks.run_before(ctx)
        if response is None:
            response = api.admit(ctx)
        if response is None:
            with org.lock:
                response = handler(ctx)
            response = await faults.after(ctx, response)
        response = await hooks.run_after(ctx, response)
        api.finish(ctx, response)
        log.record(ctx, response.status_code)
        return response

    return handle
