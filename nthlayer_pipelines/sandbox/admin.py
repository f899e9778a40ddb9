"""The sandbox's own endpoints under `/_admin`: request log, state dump, settings, fault plan, health.
Loopback only, no auth."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nthlayer_pipelines.sandbox.core import PROVIDERS, SandboxSettings, SandboxState, json_response
from nthlayer_pipelines.sandbox.faults import FaultPlanError, parse_plan
from nthlayer_pipelines.sandbox.pagerduty.audit import AUDIT_ACCESS

PREFIX = "/_admin"


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_routes(sandbox: SandboxState) -> list[Route]:
    def loopback_only(handler):
        async def guarded(request: Request) -> Response:
            if not _is_loopback(request):
                return json_response({"error": "the admin endpoints answer loopback clients only"}, 403)
            return await handler(request)

        return guarded

    async def health(request: Request) -> Response:
        org = sandbox.org
        with org.lock:
            counts = {
                "pagerduty_users": len(org.pagerduty.users),
                "pagerduty_teams": len(org.pagerduty.teams),
                "pagerduty_memberships": sum(len(m) for m in org.pagerduty.memberships.values()),
                "pagerduty_escalation_policies": len(org.pagerduty.escalation_policies),
                "cortex_teams": len(org.cortex.teams),
                "slack_channels": len(org.slack.channels),
                "slack_messages": len(org.slack.messages),
            }
            accounts = {"pagerduty": {"subdomain": org.pagerduty.subdomain}}
        return json_response(
            {"status": "ok", "providers": list(PROVIDERS), "accounts": accounts, "counts": counts}
        )

    async def list_requests(request: Request) -> Response:
        provider = request.query_params.get("provider")
        if provider is not None and provider not in PROVIDERS:
            return json_response({"error": f"provider must be one of {', '.join(PROVIDERS)}"}, 400)
        entries = sandbox.log.entries(provider=provider, method=request.query_params.get("method"))
        return json_response({"requests": entries, "dropped": sandbox.log.dropped})

    async def clear_requests(request: Request) -> Response:
        sandbox.log.clear()
        return Response(status_code=204)

    async def state(request: Request) -> Response:
        return json_response(sandbox.org.to_dict())

    async def get_settings(request: Request) -> Response:
        return json_response(dataclasses.asdict(sandbox.settings))

    async def patch_settings(request: Request) -> Response:
        """Change some settings while the sandbox runs, e.g. `{"audit_records": "payment_required"}`."""
        try:
            changes = json.loads(await request.body() or b"{}")
        except ValueError:
            return json_response({"error": "the body is not JSON"}, 400)
        if not isinstance(changes, dict):
            return json_response({"error": "the body must be a JSON object of settings"}, 400)
        problems = [problem for name, value in changes.items() if (problem := _setting_problem(name, value))]
        if problems:
            return json_response({"error": "; ".join(problems)}, 400)
        for name, value in changes.items():
            setattr(sandbox.settings, name, value)
        return json_response(dataclasses.asdict(sandbox.settings))

    def faults_view() -> Response:
        injector = sandbox.faults
        return json_response({"plan": injector.plan.model_dump(mode="json"), "injected": injector.injected()})

    async def get_faults(request: Request) -> Response:
        return faults_view()

    async def put_faults(request: Request) -> Response:
        """Replace the fault plan (`{"seed": 7, "rules": [...]}`); counting and drawing start over."""
        try:
            plan = parse_plan(json.loads(await request.body() or b"{}"))
        except ValueError as error:  # FaultPlanError, or a body that is not JSON
            message = str(error) if isinstance(error, FaultPlanError) else "the body is not JSON"
            return json_response({"error": message}, 400)
        sandbox.faults.set_plan(plan)
        return faults_view()

    async def delete_faults(request: Request) -> Response:
        sandbox.faults.set_plan(parse_plan(None))
        return Response(status_code=204)

    return [
        Route(PREFIX + "/faults", loopback_only(get_faults), methods=["GET"]),
        Route(PREFIX + "/faults", loopback_only(put_faults), methods=["PUT"]),
        Route(PREFIX + "/faults", loopback_only(delete_faults), methods=["DELETE"]),
        Route(PREFIX + "/health", loopback_only(health), methods=["GET"]),
        Route(PREFIX + "/requests", loopback_only(list_requests), methods=["GET"]),
        Route(PREFIX + "/requests", loopback_only(clear_requests), methods=["DELETE"]),
        Route(PREFIX + "/state", loopback_only(state), methods=["GET"]),
        Route(PREFIX + "/settings", loopback_only(get_settings), methods=["GET"]),
        Route(PREFIX + "/settings", loopback_only(patch_settings), methods=["PATCH"]),
    ]


def _setting_problem(name: str, value: Any) -> str | None:
    """Why a setting cannot take this value, or None when it can."""
    known = [f.name for f in dataclasses.fields(SandboxSettings)]
    if name not in known:
        return f"{name}: not a setting (settings: {', '.join(known)})"
    if name == "audit_records":
        return None if value in AUDIT_ACCESS else f"audit_records: must be one of {', '.join(AUDIT_ACCESS)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name}: must be a number"
    if name == "rate_limit" and (not isinstance(value, int) or value < 1):
        return "rate_limit: must be an integer >= 1"
    if name == "rate_window_seconds" and value <= 0:
        return "rate_window_seconds: must be > 0"
    if name == "latency_ms" and value < 0:
        return "latency_ms: must be >= 0"
    return None
