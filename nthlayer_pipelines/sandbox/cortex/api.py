"""Cortex's teams API: `GET /api/v1/teams` and `GET /api/v1/teams/{tagOrId}`, Bearer auth."""

from __future__ import annotations

import hmac
import uuid
from typing import Any

from starlette.responses import Response

from nthlayer_pipelines.sandbox.core import Endpoint, RequestContext, SandboxState, json_response
from nthlayer_pipelines.sandbox.cortex.org import CortexOrg, CortexTeam

# Cortex answers a role with its origin; roles declared on the team entity itself come from the entity.
ROLE_SOURCE = "ENTITY_DEFINED"


def cortex_error(status: int, error_type: str, message: str, details: str = "") -> Response:
    body = {
        "type": error_type,
        "message": message,
        "details": details,
        "httpStatus": status,
        "requestId": str(uuid.uuid4()),
    }
    return json_response(body, status)


def render_team(team: CortexTeam) -> dict[str, Any]:
    return {
        "id": team.id,
        "teamTag": team.tag,
        "catalogEntityTag": team.tag,
        "isArchived": team.archived,
        "type": "CORTEX",
        "metadata": {"name": team.name, "description": team.description, "summary": team.summary},
        "links": [dict(link) for link in team.links],
        "slackChannels": [{"name": name, "notificationsEnabled": True} for name in team.slack_channels],
        "cortexTeam": {
            "members": [
                {
                    "name": member.name,
                    "email": member.email,
                    "notificationsEnabled": member.notifications_enabled,
                    "roles": [
                        {"tag": role.tag, "type": "TEAM_ROLE", "name": role.name, "source": ROLE_SOURCE}
                        for role in member.roles
                    ],
                }
                for member in team.members
            ]
        },
    }


class CortexApi:
    name = "cortex"
    prefix = "/cortex"

    def __init__(self, sandbox: SandboxState) -> None:
        self._sandbox = sandbox
        self._org: CortexOrg = sandbox.org.cortex

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", "/api/v1/teams", self.list_teams),
            Endpoint("GET", "/api/v1/teams/{tagOrId}", self.get_team),
        ]

    def admit(self, ctx: RequestContext) -> Response | None:
        header = ctx.request.headers.get("authorization", "")
        expected = "Bearer " + self._sandbox.tokens["cortex"]
        if not hmac.compare_digest(header.encode(), expected.encode()):
            details = "Missing or invalid Authorization header: expected 'Bearer <API key>'"
            return cortex_error(401, "UNAUTHORIZED", "Unauthorized", details)
        return None

    def finish(self, ctx: RequestContext, response: Response) -> None:
        return None

    def not_found(self, ctx: RequestContext) -> Response:
        return cortex_error(404, "NOT_FOUND", "Not found", f"No endpoint {ctx.request.url.path}")

    def list_teams(self, ctx: RequestContext) -> Response:
        params = ctx.request.query_params
        raw = (params.get("includeTeamsWithoutMembers") or "false").lower()
        if raw not in ("true", "false"):
            return cortex_error(400, "BAD_REQUEST", "Invalid value for includeTeamsWithoutMembers", raw)
        tag = params.get("teamTag")
        if tag:
            # With teamTag, Cortex answers one team rather than a list.
            return self._one(tag)
        include_empty = raw == "true"
        teams = [render_team(t) for t in self._org.teams.values() if include_empty or t.members]
        return json_response({"teams": teams})

    def get_team(self, ctx: RequestContext) -> Response:
        return self._one(ctx.path_params["tagOrId"])

    def _one(self, tag_or_id: str) -> Response:
        team = self._org.find(tag_or_id)
        if team is None:
            return cortex_error(404, "NOT_FOUND", "Team not found", f"No team with tag or id {tag_or_id}")
        return json_response(render_team(team))
