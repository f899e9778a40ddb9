"""PagerDuty REST API v2, as much of it as the reconciler uses, under PagerDuty's own paths: users, teams
and their members, services, escalation policies and schedules (services.py), and the audit trail.

Shapes, pagination, errors and rate-limit headers follow PagerDuty's published OpenAPI description
and observed answers (error texts as the API returns them).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.responses import Response

from nthlayer_pipelines.sandbox.core import (
    Endpoint,
    FixedWindowRateLimiter,
    RequestContext,
    SandboxState,
    credential_key,
    json_response,
)
from nthlayer_pipelines.sandbox.pagerduty.audit import AuditQueryError, parse_query, render_record
from nthlayer_pipelines.sandbox.pagerduty.errors import (
    ACCESS_DENIED,
    EP_BLOCKS_REMOVAL,
    MISSING_ABILITY,
    PagerDutyError,
    found,
    invalid_input,
)
from nthlayer_pipelines.sandbox.pagerduty.http import Page, api_base, json_object, write_origin
from nthlayer_pipelines.sandbox.pagerduty.models import PAGERDUTY_TEAM_ROLES, PagerDutyTeam, PagerDutyUser
from nthlayer_pipelines.sandbox.pagerduty.org import PagerDutyOrg
from nthlayer_pipelines.sandbox.pagerduty.render import Renderer
from nthlayer_pipelines.sandbox.pagerduty.services import ServiceEndpoints

# The resources with an audit trail of their own (`/{collection}/{id}/audit/records`): their objects, and
# what a 404 calls one.
_AUDITED: dict[str, Callable[[PagerDutyOrg], tuple[Mapping[str, Any], str]]] = {
    "teams": lambda org: (org.teams, "Team"),
    "services": lambda org: (org.services, "Service"),
    "escalation_policies": lambda org: (org.escalation_policies, "Escalation policy"),
}


class PagerDutyApi:
    name = "pagerduty"
    prefix = "/pagerduty"

    def __init__(self, sandbox: SandboxState) -> None:
        self._sandbox = sandbox
        self._org: PagerDutyOrg = sandbox.org.pagerduty
        self._limiter = FixedWindowRateLimiter(sandbox.settings)
        self._services = ServiceEndpoints(self._org)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", "/users", self._guard(self.list_users)),
            Endpoint("GET", "/users/{id}", self._guard(self.get_user)),
            Endpoint("GET", "/teams", self._guard(self.list_teams)),
            Endpoint("POST", "/teams", self._guard(self.create_team)),
            Endpoint("GET", "/teams/{id}", self._guard(self.get_team)),
            Endpoint("GET", "/teams/{id}/members", self._guard(self.list_members)),
            Endpoint("PUT", "/teams/{id}/users/{user_id}", self._guard(self.put_membership)),
            Endpoint("DELETE", "/teams/{id}/users/{user_id}", self._guard(self.delete_membership)),
            *self._services.endpoints(self._guard),
            Endpoint("GET", "/audit/records", self._guard(self.list_audit_records)),
            *(
                Endpoint(
                    "GET", f"/{collection}/{{id}}/audit/records", self._guard(self.list_resource_records)
                )
                for collection in _AUDITED
            ),
        ]

    # -- around every request ------------------------------------------------------------------------
    def admit(self, ctx: RequestContext) -> Response | None:
        header = ctx.request.headers.get("authorization", "")
        ctx.rate = self._limiter.take(credential_key(header))
        expected = "Token token=" + self._sandbox.tokens["pagerduty"]
        if not hmac.compare_digest(header.encode(), expected.encode()):
            return PagerDutyError(401, 2006, "Authentication failed", []).response()
        if not ctx.rate.allowed:
            return json_response({"error": {"message": "Rate Limit Exceeded", "code": 2020}}, 429)
        return None

    def finish(self, ctx: RequestContext, response: Response) -> None:
        if ctx.rate is not None:
            response.headers["ratelimit-limit"] = str(ctx.rate.limit)
            response.headers["ratelimit-remaining"] = str(ctx.rate.remaining)
            response.headers["ratelimit-reset"] = str(ctx.rate.reset_seconds)

    def not_found(self, ctx: RequestContext) -> Response:
        return PagerDutyError(404, 2100, "Not Found", []).response()

    @staticmethod
    def _guard(handler: Callable[[RequestContext], Response]) -> Callable[[RequestContext], Response]:
        def guarded(ctx: RequestContext) -> Response:
            try:
                return handler(ctx)
            except PagerDutyError as error:
                return error.response()

        return guarded

    def _render(self, ctx: RequestContext) -> Renderer:
        return Renderer(self._org, api_base(ctx))

    # -- users ---------------------------------------------------------------------------------------
    def list_users(self, ctx: RequestContext) -> Response:
        page = Page.from_query(ctx)
        params = ctx.request.query_params
        query = (params.get("query") or "").casefold()
        team_ids = params.getlist("team_ids[]")
        includes = set(params.getlist("include[]"))
        if team_ids:
            member_ids: dict[str, None] = {}
            for team_id in team_ids:
                member_ids.update(dict.fromkeys(self._org.memberships.get(team_id, ())))
            users: Sequence[PagerDutyUser] = sorted(
                (self._org.users[user_id] for user_id in member_ids), key=lambda u: u.sort_key
            )
        else:
            users = self._org.users_by_name
        if query:
            users = [u for u in users if query in u.name.casefold() or query in u.email.casefold()]
        render = self._render(ctx)
        return page.respond("users", users, lambda u: render.user(u, includes))

    def get_user(self, ctx: RequestContext) -> Response:
        user = found(self._org.users, ctx.path_params["id"], "User")
        includes = set(ctx.request.query_params.getlist("include[]"))
        return json_response({"user": self._render(ctx).user(user, includes)})

    # -- teams ---------------------------------------------------------------------------------------
    def list_teams(self, ctx: RequestContext) -> Response:
        page = Page.from_query(ctx)
        query = (ctx.request.query_params.get("query") or "").casefold()
        teams: Sequence[PagerDutyTeam] = self._org.teams_by_name
        if query:
            teams = [t for t in teams if query in t.name.casefold()]
        render = self._render(ctx)
        return page.respond("teams", teams, render.team)

    def get_team(self, ctx: RequestContext) -> Response:
        team = found(self._org.teams, ctx.path_params["id"], "Team")
        return json_response({"team": self._render(ctx).team(team)})

    def create_team(self, ctx: RequestContext) -> Response:
        body = json_object(ctx)
        team = body.get("team")
        if not isinstance(team, dict):
            raise invalid_input("Team must be an object")
        name = team.get("name")
        if not isinstance(name, str) or not name.strip():
            raise invalid_input("Name can't be blank")
        if len(name) > 100:
            raise invalid_input("Name is too long (maximum is 100 characters)")
        description = team.get("description") or ""
        if not isinstance(description, str) or len(description) > 1024:
            raise invalid_input("Description must be a string of at most 1024 characters")
        if self._org.team_by_name(name) is not None:
            raise invalid_input("Name has already been taken")
        created = self._org.add_team(name, description, origin=write_origin(ctx))
        return json_response({"team": self._render(ctx).team(created)}, 201)

    def list_members(self, ctx: RequestContext) -> Response:
        page = Page.from_query(ctx)
        team = found(self._org.teams, ctx.path_params["id"], "Team")
        members = self._org.memberships[team.id]
        expand = "users" in ctx.request.query_params.getlist("include[]")
        renderer = self._render(ctx)
        users = self._org.users

        def render(item: tuple[str, str]) -> dict[str, Any]:
            user = users[item[0]]
            rendered = renderer.user(user) if expand else renderer.user_ref(user)
            return {"user": rendered, "role": item[1]}

        return page.respond_items("members", members.items(), len(members), render)

    def put_membership(self, ctx: RequestContext) -> Response:
        team = found(self._org.teams, ctx.path_params["id"], "Team")
        user = found(self._org.users, ctx.path_params["user_id"], "User")
        body = json_object(ctx, allow_empty=True)
        role = body.get("role")
        current = self._org.memberships[team.id].get(user.id)
        if role is None:
            role = current or "manager"
        if role not in PAGERDUTY_TEAM_ROLES:
            raise invalid_input(f"Role must be one of {', '.join(PAGERDUTY_TEAM_ROLES)}")
        self._org.set_membership(team.id, user.id, role, origin=write_origin(ctx))
        return Response(status_code=204)

    def delete_membership(self, ctx: RequestContext) -> Response:
        team = found(self._org.teams, ctx.path_params["id"], "Team")
        user = found(self._org.users, ctx.path_params["user_id"], "User")
        if user.id in self._org.memberships[team.id] and self._org.blocking_policies(team.id, user.id):
            raise invalid_input(EP_BLOCKS_REMOVAL)
        self._org.remove_membership(team.id, user.id, origin=write_origin(ctx))
        return Response(status_code=204)

    # -- audit records -------------------------------------------------------------------------------
    def list_audit_records(self, ctx: RequestContext) -> Response:
        """The whole account's records: admin tokens only, and only on plans with Audit Trail."""
        self._require_audit_trail(account_wide=True)
        return self._audit_page(ctx, root_id=None)

    def list_resource_records(self, ctx: RequestContext) -> Response:
        """One team's, service's or escalation policy's records: any token that can read it."""
        self._require_audit_trail(account_wide=False)
        collection = ctx.endpoint.split("/")[1]  # "GET /services/{id}/audit/records"
        objects, what = _AUDITED[collection](self._org)
        found(objects, ctx.path_params["id"], what)
        return self._audit_page(ctx, root_id=ctx.path_params["id"])

    def _require_audit_trail(self, *, account_wide: bool) -> None:
        access = self._sandbox.settings.audit_records
        if access == "payment_required":
            raise PagerDutyError(
                402, *MISSING_ABILITY, ["The account's plan does not include the Audit Trail feature"]
            )
        if access == "forbidden" and account_wide:
            reason = "Only admins, account owners or global API tokens can list audit records"
            raise PagerDutyError(403, *ACCESS_DENIED, [reason])

    def _audit_page(self, ctx: RequestContext, *, root_id: str | None) -> Response:
        trail = self._org.audit
        try:
            query = parse_query(
                ctx.request.query_params, now=trail.clock(), root_id=root_id, filters=root_id is None
            )
        except AuditQueryError as error:
            raise PagerDutyError(400, error.code, error.message, error.errors) from None
        records, next_cursor = trail.select(query)
        base, trail_html = api_base(ctx), self._org.html_base
        return json_response(
            {
                "records": [render_record(base, record, html_base=trail_html) for record in records],
                "limit": query.limit,
                "next_cursor": next_cursor,
            }
        )

    # -- helpers -------------------------------------------------------------------------------------
