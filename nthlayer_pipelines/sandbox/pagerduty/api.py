"""PagerDuty REST API v2, as much of it as the reconciler uses, under PagerDuty's own paths.

Shapes, pagination, errors and rate-limit headers follow PagerDuty's published OpenAPI description
and observed answers (error texts as the API returns them).
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable, Iterable, Sequence, Set
from itertools import islice
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
from nthlayer_pipelines.sandbox.pagerduty.audit import (
    AuditOrigin,
    AuditQueryError,
    parse_query,
    render_record,
)
from nthlayer_pipelines.sandbox.pagerduty.errors import (
    ACCESS_DENIED,
    ARGUMENTS_ERROR,
    EP_BLOCKS_REMOVAL,
    MISSING_ABILITY,
    OFFSET_TOO_LARGE,
    PagerDutyError,
    invalid_input,
    not_found,
)
from nthlayer_pipelines.sandbox.pagerduty.org import (
    PAGERDUTY_TEAM_ROLES,
    EscalationPolicy,
    PagerDutyOrg,
    PagerDutyTeam,
    PagerDutyUser,
)

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_OFFSET_PLUS_LIMIT = 10_000


class PagerDutyApi:
    name = "pagerduty"
    prefix = "/pagerduty"

    def __init__(self, sandbox: SandboxState) -> None:
        self._sandbox = sandbox
        self._org: PagerDutyOrg = sandbox.org.pagerduty
        self._limiter = FixedWindowRateLimiter(sandbox.settings)

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
            Endpoint("GET", "/escalation_policies", self._guard(self.list_policies)),
            Endpoint("GET", "/escalation_policies/{id}", self._guard(self.get_policy)),
            Endpoint("GET", "/audit/records", self._guard(self.list_audit_records)),
            Endpoint("GET", "/teams/{id}/audit/records", self._guard(self.list_team_audit_records)),
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

    # -- rendering -----------------------------------------------------------------------------------
    def _base(self, ctx: RequestContext) -> str:
        request = ctx.request
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        return f"{request.url.scheme}://{host}{self.prefix}"

    def _html_url(self, collection: str, object_id: str) -> str:
        """In the account's web UI: its subdomain is how a client tells one account from another."""
        return f"{self._org.html_base}/{collection}/{object_id}"

    def _reference(
        self, base: str, kind: str, collection: str, object_id: str, summary: str
    ) -> dict[str, Any]:
        return {
            "id": object_id,
            "type": f"{kind}_reference",
            "summary": summary,
            "self": f"{base}/{collection}/{object_id}",
            "html_url": self._html_url(collection, object_id),
        }

    def _team_ref(self, base: str, team: PagerDutyTeam) -> dict[str, Any]:
        return self._reference(base, "team", "teams", team.id, team.name)

    def _user_ref(self, base: str, user: PagerDutyUser) -> dict[str, Any]:
        return self._reference(base, "user", "users", user.id, user.name)

    def _team(self, base: str, team: PagerDutyTeam) -> dict[str, Any]:
        return {
            "id": team.id,
            "type": "team",
            "summary": team.name,
            "self": f"{base}/teams/{team.id}",
            "html_url": self._html_url("teams", team.id),
            "name": team.name,
            "description": team.description,
            "default_role": team.default_role,
        }

    def _user(self, base: str, user: PagerDutyUser, includes: Set[str] = frozenset()) -> dict[str, Any]:
        teams = [self._org.teams[team_id] for team_id in self._org.teams_of(user.id)]
        render_team = self._team if "teams" in includes else self._team_ref
        return {
            "id": user.id,
            "type": "user",
            "summary": user.name,
            "self": f"{base}/users/{user.id}",
            "html_url": self._html_url("users", user.id),
            "name": user.name,
            "email": user.email,
            "time_zone": user.time_zone,
            "color": "purple",
            "role": user.role,
            "avatar_url": "https://secure.gravatar.com/avatar/sandbox.png?d=mm&r=PG",
            "description": None,
            "invitation_sent": False,
            "created_via_sso": False,
            "job_title": user.job_title,
            "teams": [render_team(base, team) for team in teams],
            "contact_methods": [],
            "notification_rules": [],
        }

    def _policy(self, base: str, policy: EscalationPolicy) -> dict[str, Any]:
        users = self._org.users
        return {
            "id": policy.id,
            "type": "escalation_policy",
            "summary": policy.name,
            "self": f"{base}/escalation_policies/{policy.id}",
            "html_url": self._html_url("escalation_policies", policy.id),
            "name": policy.name,
            "description": policy.description,
            "num_loops": policy.num_loops,
            "on_call_handoff_notifications": "if_has_services",
            "escalation_rules": [
                {
                    "id": rule.id,
                    "escalation_delay_in_minutes": rule.escalation_delay_in_minutes,
                    "targets": [self._user_ref(base, users[user_id]) for user_id in rule.target_user_ids],
                }
                for rule in policy.rules
            ],
            "services": [],
            "teams": [self._team_ref(base, self._org.teams[team_id]) for team_id in policy.team_ids],
        }

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
        base = self._base(ctx)
        return page.respond("users", users, lambda u: self._user(base, u, includes))

    def get_user(self, ctx: RequestContext) -> Response:
        user = self._org.users.get(ctx.path_params["id"])
        if user is None:
            raise not_found("User")
        includes = set(ctx.request.query_params.getlist("include[]"))
        return json_response({"user": self._user(self._base(ctx), user, includes)})

    # -- teams ---------------------------------------------------------------------------------------
    def list_teams(self, ctx: RequestContext) -> Response:
        page = Page.from_query(ctx)
        query = (ctx.request.query_params.get("query") or "").casefold()
        teams: Sequence[PagerDutyTeam] = self._org.teams_by_name
        if query:
            teams = [t for t in teams if query in t.name.casefold()]
        base = self._base(ctx)
        return page.respond("teams", teams, lambda t: self._team(base, t))

    def get_team(self, ctx: RequestContext) -> Response:
        team = self._require_team(ctx.path_params["id"])
        return json_response({"team": self._team(self._base(ctx), team)})

    def create_team(self, ctx: RequestContext) -> Response:
        body = _json_object(ctx)
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
        created = self._org.add_team(name, description, origin=self._origin(ctx))
        return json_response({"team": self._team(self._base(ctx), created)}, 201)

    def list_members(self, ctx: RequestContext) -> Response:
        page = Page.from_query(ctx)
        team = self._require_team(ctx.path_params["id"])
        members = self._org.memberships[team.id]
        expand = "users" in ctx.request.query_params.getlist("include[]")
        base = self._base(ctx)
        users = self._org.users

        def render(item: tuple[str, str]) -> dict[str, Any]:
            user = users[item[0]]
            rendered = self._user(base, user) if expand else self._user_ref(base, user)
            return {"user": rendered, "role": item[1]}

        return page.respond_items("members", members.items(), len(members), render)

    def put_membership(self, ctx: RequestContext) -> Response:
        team = self._require_team(ctx.path_params["id"])
        user = self._require_user(ctx.path_params["user_id"])
        body = _json_object(ctx, allow_empty=True)
        role = body.get("role")
        current = self._org.memberships[team.id].get(user.id)
        if role is None:
            role = current or "manager"
        if role not in PAGERDUTY_TEAM_ROLES:
            raise invalid_input(f"Role must be one of {', '.join(PAGERDUTY_TEAM_ROLES)}")
        self._org.set_membership(team.id, user.id, role, origin=self._origin(ctx))
        return Response(status_code=204)

    def delete_membership(self, ctx: RequestContext) -> Response:
        team = self._require_team(ctx.path_params["id"])
        user = self._require_user(ctx.path_params["user_id"])
        if user.id in self._org.memberships[team.id] and self._org.blocking_policies(team.id, user.id):
            raise invalid_input(EP_BLOCKS_REMOVAL)
        self._org.remove_membership(team.id, user.id, origin=self._origin(ctx))
        return Response(status_code=204)

    # -- escalation policies -------------------------------------------------------------------------
    def list_policies(self, ctx: RequestContext) -> Response:
        page = Page.from_query(ctx)
        params = ctx.request.query_params
        query = (params.get("query") or "").casefold()
        team_ids = set(params.getlist("team_ids[]"))
        user_ids = params.getlist("user_ids[]")
        policies: Sequence[EscalationPolicy] = self._org.policies_by_name
        if user_ids:
            wanted: set[str] = set()
            for user_id in user_ids:
                wanted |= self._org.policies_targeting(user_id)
            policies = [p for p in policies if p.id in wanted]
        if team_ids:
            policies = [p for p in policies if team_ids.intersection(p.team_ids)]
        if query:
            policies = [p for p in policies if query in p.name.casefold()]
        base = self._base(ctx)
        return page.respond("escalation_policies", policies, lambda p: self._policy(base, p))

    def get_policy(self, ctx: RequestContext) -> Response:
        policy = self._org.escalation_policies.get(ctx.path_params["id"])
        if policy is None:
            raise not_found("Escalation policy")
        return json_response({"escalation_policy": self._policy(self._base(ctx), policy)})

    # -- audit records -------------------------------------------------------------------------------
    def list_audit_records(self, ctx: RequestContext) -> Response:
        """The whole account's records: admin tokens only, and only on plans with Audit Trail."""
        self._require_audit_trail(account_wide=True)
        return self._audit_page(ctx, root_id=None)

    def list_team_audit_records(self, ctx: RequestContext) -> Response:
        """One team's records: any token that can read the team."""
        self._require_audit_trail(account_wide=False)
        team = self._require_team(ctx.path_params["id"])
        return self._audit_page(ctx, root_id=team.id)

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
        base, trail_html = self._base(ctx), self._org.html_base
        return json_response(
            {
                "records": [render_record(base, record, html_base=trail_html) for record in records],
                "limit": query.limit,
                "next_cursor": next_cursor,
            }
        )

    def _origin(self, ctx: RequestContext) -> AuditOrigin:
        """How a write through the API is recorded: by the token that made it (admit() checked it)."""
        token = ctx.request.headers.get("authorization", "").removeprefix("Token token=")
        client = ctx.request.client
        return AuditOrigin.api_token(
            token, request_id=uuid.uuid4().hex, remote_address=client.host if client else None
        )

    # -- helpers -------------------------------------------------------------------------------------
    def _require_team(self, team_id: str) -> PagerDutyTeam:
        team = self._org.teams.get(team_id)
        if team is None:
            raise not_found("Team")
        return team

    def _require_user(self, user_id: str) -> PagerDutyUser:
        user = self._org.users.get(user_id)
        if user is None:
            raise not_found("User")
        return user


class Page:
    """PagerDuty's classic pagination: limit (default 25, at most 100), offset, more, total."""

    def __init__(self, limit: int, offset: int, want_total: bool) -> None:
        self.limit, self.offset, self.want_total = limit, offset, want_total

    @classmethod
    def from_query(cls, ctx: RequestContext) -> Page:
        params = ctx.request.query_params
        limit = _int_param(params.get("limit"), "limit", DEFAULT_LIMIT)
        offset = _int_param(params.get("offset"), "offset", 0)
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


def _int_param(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid_input(f"{name} must be an integer") from None


def _json_object(ctx: RequestContext, *, allow_empty: bool = False) -> dict[str, Any]:
    if not ctx.body.strip() and allow_empty:
        return {}
    try:
        body = ctx.json_body()
    except ValueError:
        raise invalid_input("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_input("The request body must be a JSON object")
    return body
