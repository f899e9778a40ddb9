"""Assemble the providers' emulators and the admin endpoints into one Starlette app."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.applications import Starlette

from nthlayer_pipelines.sandbox.admin import admin_routes
from nthlayer_pipelines.sandbox.core import (
    PROVIDERS,
    RequestLog,
    SandboxSettings,
    SandboxState,
    provider_routes,
    tokens_from_env,
)
from nthlayer_pipelines.sandbox.cortex.api import CortexApi
from nthlayer_pipelines.sandbox.faults import FaultPlan
from nthlayer_pipelines.sandbox.injection import FaultInjector
from nthlayer_pipelines.sandbox.org import SandboxOrg
from nthlayer_pipelines.sandbox.pagerduty.api import PagerDutyApi
from nthlayer_pipelines.sandbox.pagerduty.audit import AUDIT_ACCESS
from nthlayer_pipelines.sandbox.slack.api import SlackApi


def create_app(
    org: SandboxOrg,
    *,
    tokens: Mapping[str, str] | None = None,
    rate_limit: int = 960,
    rate_window_seconds: float = 60.0,
    latency_ms: float = 0,
    request_log_limit: int = 100_000,
    audit_records: str = "available",
    faults: FaultPlan | None = None,
) -> Starlette:
    """The sandbox app serving `org`.

    Args:
        tokens: token per provider ("pagerduty", "cortex", "slack"); missing ones come from the
            pipeline's environment variables, else the documented defaults.
        rate_limit: PagerDuty requests allowed per token per window.
        rate_window_seconds: length of a PagerDuty rate-limit window.
        latency_ms: delay added to every provider request, without blocking other requests.
        request_log_limit: how many requests the log keeps (oldest dropped first).
        audit_records: whether PagerDuty's `GET /audit/records` answers: "available", "payment_required"
            (402, a plan without Audit Trail) or "forbidden" (403, a token that is not an admin's).
            The org's changes are recorded from here on either way.
        faults: the fault plan in force from the start (see sandbox/faults.py); `/_admin/faults` changes it.
    """
    if rate_limit < 1 or rate_window_seconds <= 0 or latency_ms < 0:
        raise ValueError("rate_limit must be >= 1, rate_window_seconds > 0 and latency_ms >= 0")
    if audit_records not in AUDIT_ACCESS:
        raise ValueError(f"audit_records must be one of {', '.join(AUDIT_ACCESS)}, not {audit_records!r}")
    unknown = set(tokens or ()) - set(PROVIDERS)
    if unknown:
        raise ValueError(f"tokens for unknown providers: {', '.join(sorted(unknown))}")
    resolved = tokens_from_env() | {k: v for k, v in (tokens or {}).items() if v}
    sandbox = SandboxState(
        org=org,
        tokens=resolved,
        settings=SandboxSettings(rate_limit, rate_window_seconds, latency_ms, audit_records),
        log=RequestLog(request_log_limit),
        faults=FaultInjector(faults),
    )
    org.pagerduty.audit.start()
    routes = admin_routes(sandbox)
    for api in (PagerDutyApi(sandbox), CortexApi(sandbox), SlackApi(sandbox)):
        routes += provider_routes(sandbox, api)
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    return app


def sandbox_state(app: Starlette) -> SandboxState:
    """The org, settings, log, faults and hooks behind an app made by `create_app`."""
    return app.state.sandbox
