"""The sandbox's own endpoints under `/_admin`: request log, state dump, health. Loopback only, no auth."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nthlayer_pipelines.sandbox.core import PROVIDERS, SandboxState, json_response

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
        return json_response({"status": "ok", "providers": list(PROVIDERS), "counts": counts})

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

    return [
        Route(PREFIX + "/health", loopback_only(health), methods=["GET"]),
        Route(PREFIX + "/requests", loopback_only(list_requests), methods=["GET"]),
        Route(PREFIX + "/requests", loopback_only(clear_requests), methods=["DELETE"]),
        Route(PREFIX + "/state", loopback_only(state), methods=["GET"]),
    ]
