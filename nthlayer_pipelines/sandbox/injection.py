"""Carry out a fault plan (sandbox/faults.py) on the sandbox's requests.

The sandbox calls `before` ahead of the provider's gate and `after` once the endpoint answered. Before,
a request may be answered with an error status, hang, lose its connection, be delayed, be refused with
PagerDuty's 2001, be answered with an error repeating its headers, or (a read) be answered from the state
before a recent write. After, the endpoint has run: the answer may hang, be cut off mid-body, be replaced
by an error (repeating the headers or not), or (a listing) lose part of its page; a write may open a lag
window.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from nthlayer_pipelines.sandbox.core import RequestContext, json_response
from nthlayer_pipelines.sandbox.faults import FaultPlan, FaultRule, request_key
from nthlayer_pipelines.sandbox.pagerduty.errors import EP_BLOCKS_REMOVAL, invalid_input


class ConnectionDropped(Exception):
    """Raised inside the server to make it close the connection, mid-answer or before one."""


class _QuietDrops(logging.Filter):
    """uvicorn logs an application error when an answer is cut off; a dropped connection is on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class DroppedResponse(Response):
    """Sends the headers and half of `body`, then hangs up. With no body (the endpoint never ran, or
    answered 204) it promises one and hangs up after the headers: an ASGI server answers 500 for an app
    that sends nothing, so this is as close as ASGI gets to a connection lost before the answer."""

    def __init__(self, body: bytes | None, status_code: int = 200, headers: dict[str, str] | None = None):
        super().__init__(b"", status_code, headers)
        self._full = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, full = self.status_code, self._full or b""
        sent = full[: len(full) // 2]
        if not full:
            status, full = 200, b" " * 64
        headers = [(k, v) for k, v in self.raw_headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(full)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": sent, "more_body": True})
        raise ConnectionDropped("closed mid-answer")


@dataclass(frozen=True)
class _LagWindow:
    provider: str
    segments: tuple[str, ...]
    opened: float  # time.monotonic()
    closes: float


@dataclass(frozen=True)
class _CachedRead:
    at: float
    status: int
    body: bytes
    media_type: str


class FaultInjector:
    """The plan in force, how often each request was seen, what was injected, and the lag state."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self._plan = plan or FaultPlan()
        self._seen: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
        self._windows: list[_LagWindow] = []
        self._reads: dict[str, _CachedRead] = {}

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def set_plan(self, plan: FaultPlan) -> None:
        """Put `plan` in force from the next request, counting and drawing from scratch."""
        with self._lock:
            self._plan = plan
            self._seen.clear()
            self._injected.clear()
            self._windows.clear()
            self._reads.clear()

    def injected(self) -> dict[str, int]:
        """Faults injected since the plan was set, by label."""
        with self._lock:
            return dict(sorted(self._injected.items()))

    def _note(self, ctx: RequestContext, label: str) -> None:
        ctx.fault = label
        with self._lock:
            self._injected[label] += 1

    # -- before the endpoint ---------------------------------------------------------------------------
    async def before(self, ctx: RequestContext) -> Response | None:
        plan = self._plan
        if not plan.rules:
            return None
        request = ctx.request
        key = request_key(request.method, request.url.path, request.query_params.multi_items())
        with self._lock:
            occurrence = self._seen[key]
            self._seen[key] += 1
        if request.method == "GET" and plan.has_lag:
            stale = self._stale_read(ctx, key)
            if stale is not None:
                self._note(ctx, "stale_read")
                return stale
        rule = plan.choose(ctx.provider, ctx.endpoint, key, occurrence)
        ctx.fault_rule = rule
        if rule is None or rule.kind in ("truncate", "lag"):
            return None
        if rule.when == "before" or rule.kind in ("latency", "refuse_removal"):
            return await self._interrupt(ctx, rule, None)
        return None

    # -- after the endpoint ----------------------------------------------------------------------------
    async def after(self, ctx: RequestContext, response: Response) -> Response:
        plan, rule = self._plan, ctx.fault_rule
        if not plan.rules or ctx.fault is not None:
            return response
        if ctx.request.method == "GET" and plan.has_lag and response.status_code == 200 and rule is None:
            self._remember_read(ctx, response)
        if rule is None:
            return response
        if rule.kind == "truncate" and response.status_code == 200:
            cut = truncated_page(response, rule.keep_share)
            if cut is not None:
                self._note(ctx, rule.label)
                return cut
        elif rule.kind == "lag" and response.status_code < 300:
            self._open_window(ctx, rule)
            self._note(ctx, rule.label)
        elif rule.when == "after" and rule.kind in ("status", "timeout", "drop", "echo_headers"):
            return await self._interrupt(ctx, rule, response)
        return response

    async def _interrupt(
        self, ctx: RequestContext, rule: FaultRule, answer: Response | None
    ) -> Response | None:
        """The fault's answer: before the endpoint `answer` is None, after it is the endpoint's."""
        self._note(ctx, rule.label)
        match rule.kind:
            case "latency":
                await asyncio.sleep(rule.latency_ms / 1000)
                return answer
            case "status":
                return status_response(rule)
            case "timeout":
                await asyncio.sleep(rule.hang_seconds)
                return answer or json_response({"error": {"message": "Gateway Timeout"}}, 504)
            case "drop":
                if answer is None:
                    return DroppedResponse(None)
                return DroppedResponse(bytes(answer.body), answer.status_code, dict(answer.headers))
            case "refuse_removal":
                return invalid_input(EP_BLOCKS_REMOVAL).response()
            case "echo_headers":
                request = ctx.request
                headers = list(request.headers.items())
                return echo_headers_response(ctx.provider, request.method, request.url.path, headers, rule)
        raise AssertionError(f"{rule.kind} does not interrupt a request")  # pragma: no cover

    # -- read-after-write lag --------------------------------------------------------------------------
    def _open_window(self, ctx: RequestContext, rule: FaultRule) -> None:
        now = time.monotonic()
        window = _LagWindow(ctx.provider, _segments(ctx.request.url.path), now, now + rule.lag_ms / 1000)
        with self._lock:
            self._windows = [w for w in self._windows if w.closes > now] + [window]

    def _stale_read(self, ctx: RequestContext, key: str) -> Response | None:
        """The answer this read got before a related write, while that write's window is open."""
        now, segments = time.monotonic(), _segments(ctx.request.url.path)
        with self._lock:
            cached = self._reads.get(key)
            if cached is None:
                return None
            for window in self._windows:
                if (
                    window.provider == ctx.provider
                    and window.closes > now
                    and cached.at < window.opened
                    and _related(window.segments, segments)
                ):
                    return Response(cached.body, cached.status, media_type=cached.media_type)
        return None

    def _remember_read(self, ctx: RequestContext, response: Response) -> None:
        request = ctx.request
        key = request_key(request.method, request.url.path, request.query_params.multi_items())
        media_type = response.headers.get("content-type", "application/json")
        with self._lock:
            self._reads[key] = _CachedRead(
                time.monotonic(), response.status_code, bytes(response.body), media_type
            )


def status_response(rule: FaultRule) -> Response:
    """The error answer a status fault gives, in PagerDuty's shape (the shape the others tolerate)."""
    if rule.status == 429:
        headers = {}
        if rule.ratelimit_headers:
            headers = {
                "ratelimit-limit": "960",
                "ratelimit-remaining": "0",
                "ratelimit-reset": str(rule.reset_seconds),
            }
        if rule.rate_limit_body:
            return json_response({"error": {"message": "Rate Limit Exceeded", "code": 2020}}, 429, headers)
        return Response(b"", 429, headers)
    messages = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    return json_response({"error": {"message": messages[rule.status]}}, rule.status)


def echo_headers_response(
    provider: str, method: str, path: str, headers: list[tuple[str, str]], rule: FaultRule
) -> Response:
    """An error answer that repeats the request's headers as they arrived, as a gateway that names the
    credential it refused, or a provider's debugging error page, does: `Authorization` first, then every
    header. In the provider's error shape (PagerDuty's `message` and `errors`, Cortex's `details`, Slack's
    `response_metadata.messages`), or in plain text."""
    lines = [f"{name}: {value}" for name, value in headers]
    refused = next((line for line in lines if line.lower().startswith("authorization:")), "no authorization")
    said = f"refused {refused} for {method} {path}; the request carried {'; '.join(lines)}"
    if rule.echo_format == "text":
        try:
            phrase = HTTPStatus(rule.status).phrase
        except ValueError:  # a status without a standard name
            phrase = "Error"
        text = f"{rule.status} {phrase}: {said}\n\nRequest headers:\n" + "\n".join(lines) + "\n"
        return Response(text.encode(), rule.status, media_type="text/plain; charset=utf-8")
    body: dict[str, Any]
    if provider == "pagerduty":
        body = {"error": {"message": f"Arguments Caused Error: {said}", "code": 2002, "errors": lines}}
    elif provider == "cortex":
        body = {"type": "BAD_REQUEST", "message": "Bad request", "details": said, "httpStatus": rule.status}
    else:  # Slack: its error slug, and the detail where Slack puts its own, response_metadata.messages
        body = {
            "ok": False,
            "error": "invalid_request",
            "response_metadata": {"messages": [f"[ERROR] {said}", *(f"[ERROR] {line}" for line in lines)]},
        }
    return json_response(body, rule.status)


def truncated_page(response: Response, keep_share: float) -> Response | None:
    """A listing page cut short, `more` still honest (true: what was cut is still there to read); None when
    the answer is no listing page or has nothing to cut."""
    try:
        body: Any = json.loads(bytes(response.body))
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("more"), bool):
        return None
    lists = [key for key, value in body.items() if isinstance(value, list)]
    if len(lists) != 1 or len(body[lists[0]]) < 2:
        return None
    items = body[lists[0]]
    keep = max(1, int(len(items) * keep_share))
    return json_response({**body, lists[0]: items[:keep], "more": True}, response.status_code)


def _segments(path: str) -> tuple[str, ...]:
    """The resource a path names: provider prefix, collection and item id (`/pagerduty/teams/P1`)."""
    return tuple(part for part in path.split("/") if part)[:3]


def _related(written: tuple[str, ...], read: tuple[str, ...]) -> bool:
    """A read of the written resource, of something under it, or of the collection holding it."""
    shorter = min(len(written), len(read))
    return written[:shorter] == read[:shorter]
