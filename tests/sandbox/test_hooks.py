"""Hooks per provider and endpoint: the slot fault injection plugs into."""

import httpx
from sandbox_seed import PAGERDUTY_TOKEN
from starlette.responses import JSONResponse, Response

from nthlayer_pipelines.sandbox import RequestContext, RunningSandbox

AUTH = {"Authorization": f"Token token={PAGERDUTY_TOKEN}"}


def test_a_before_hook_answers_for_its_endpoint_only(sandbox: RunningSandbox) -> None:
    async def unavailable(ctx: RequestContext) -> Response | None:
        return JSONResponse({"error": {"message": "Service Unavailable", "code": 5003}}, 503)

    sandbox.hooks.add_before(unavailable, provider="pagerduty", endpoint="GET /teams")

    assert httpx.get(sandbox.pagerduty_url + "/teams", headers=AUTH).status_code == 503
    assert httpx.get(sandbox.pagerduty_url + "/users", headers=AUTH).status_code == 200
    # A hooked answer skips the gate, so it carries no rate-limit headers: a 429 "without headers" fault.
    hooked = httpx.get(sandbox.pagerduty_url + "/teams", headers=AUTH)
    assert "ratelimit-limit" not in hooked.headers
    assert [(e["endpoint"], e["status"]) for e in sandbox.requests("pagerduty")] == [
        ("GET /teams", 503),
        ("GET /users", 200),
        ("GET /teams", 503),
    ]


def test_an_after_hook_can_replace_the_answer(sandbox: RunningSandbox) -> None:
    seen: list[int] = []

    async def observe(ctx: RequestContext, response: Response) -> Response:
        seen.append(response.status_code)
        return Response(status_code=502) if ctx.endpoint == "GET /users" else response

    sandbox.hooks.add_after(observe, provider="pagerduty")

    assert httpx.get(sandbox.pagerduty_url + "/users", headers=AUTH).status_code == 502
    assert httpx.get(sandbox.pagerduty_url + "/teams", headers=AUTH).status_code == 200
    assert seen == [200, 200]

    sandbox.hooks.clear()
    assert httpx.get(sandbox.pagerduty_url + "/users", headers=AUTH).status_code == 200
