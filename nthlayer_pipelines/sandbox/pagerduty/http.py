"""What every PagerDuty endpoint of the sandbox reads from a request: classic pagination, a JSON body,
`include[]` and `sort_by`, the API's base URL, and who is writing (for the audit trail)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any, TypeVar

from starlette.responses import Response

from nthlayer_pipelines.sandbox.core import RequestContext, json_response
from nthlayer_pipelines.sandbox.pagerduty.audit import AuditOrigin
from nthlayer_pipelines.sandbox.pagerduty.errors import (
    ARGUMENTS_ERROR,
    OFFSET_TOO_LARGE,
    PagerDutyError,
    invalid_input,
)

PREFIX = "/pagerduty"
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_OFFSET_PLUS_LIMIT = 10_000
SORT_BY_NAME = ("name", "name:asc", "name:desc")


def api_base(ctx: RequestContext) -> str:
    """The API's URL as this request reached it: the base of every object's `self`."""
    request = ctx.request
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}{PREFIX}"


def write_origin(ctx: RequestContext) -> AuditOrigin:
    """How a write through the API is recorded: by the token that made it (the gate checked it)."""
    token = ctx.request.headers.get("authorization", "").removeprefix("Token token=")
    client = ctx.request.client
    return AuditOrigin.api_token(
        token, request_id=uuid.uuid4().hex, remote_address=client.host if client else None
    )


def includes(ctx: RequestContext, allowed: Iterable[str]) -> frozenset[str]:
    """The `include[]` values asked for that this endpoint offers; the others change nothing."""
    return frozenset(ctx.request.query_params.getlist("include[]")).intersection(allowed)


T = TypeVar("T")


def sorted_by_name(ctx: RequestContext, items: Sequence[T]) -> Sequence[T]:
    """`items` (kept sorted by name) in the order `sort_by` asks for."""
    sort_by = ctx.request.query_params.get("sort_by") or "name"
    if sort_by not in SORT_BY_NAME:
        raise invalid_input(f"sort_by must be one of {', '.join(SORT_BY_NAME)}")
    return items[::-1] if sort_by == "name:desc" else items


class Page:
    """PagerDuty's classic pagination: limit (default 25, at most 100), offset, more, total."""

    def __init__(self, limit: int, offset: int, want_total: bool) -> None:
        self.limit, self.offset, self.want_total = limit, offset, want_total

    @classmethod
    def from_query(cls, ctx: RequestContext) -> Page:
        params = ctx.request.query_params
        limit = int_param(params.get("limit"), "limit", DEFAULT_LIMIT)
        offset = int_param(params.get("offset"), "offset", 0)
        if limit < 1:
            raise invalid_input("limit must be greater than 0")
        if offset < 0:
            raise invalid_input("offset must be greater than or equal to 0")
        limit = min(limit, MAX_LIMIT)
        if offset + limit > MAX_OFFSET_PLUS_LIMIT:
            raise PagerDutyError(400, ARGUMENTS_ERROR[0], ARGUMENTS_ERROR[1], [OFFSET_TOO_LARGE])
        return cls(limit, offset, (params.get("total") or "").lower() == "true")

    def respond(self, key: str, items: Sequence[Any], render: Callable[[Any], dict[str, Any]]) -> Response:
        window = items[self.offset : self.offset + self.limit]
        return self._answer(key, [render(item) for item in window], len(items))

    def respond_items(
        self, key: str, items: Iterable[Any], count: int, render: Callable[[Any], dict[str, Any]]
    ) -> Response:
        """For collections without slicing (dict views): walks at most offset + limit items."""
        window = islice(items, self.offset, self.offset + self.limit)
        return self._answer(key, [render(item) for item in window], count)

    def _answer(self, key: str, rendered: list[dict[str, Any]], count: int) -> Response:
        return json_response(
            {
                key: rendered,
                "limit": self.limit,
                "offset": self.offset,
                "more": self.offset + len(rendered) < count,
                "total": count if self.want_total else None,
            }
        )


def int_param(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid_input(f"{name} must be an integer") from None


def json_object(ctx: RequestContext, *, allow_empty: bool = False) -> dict[str, Any]:
    if not ctx.body.strip() and allow_empty:
        return {}
    try:
        body = ctx.json_body()
    except ValueError:
        raise invalid_input("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_input("The request body must be a JSON object")
    return body
