"""Cortex's teams API as a desired-state source: a client on httpx with the shared retries, and its models
(its Dagster resource is resource.py). Every failure is a `SourceError`, never an empty list of teams."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nthlayer_pipelines.core.model import SourceError
from nthlayer_pipelines.resources.http.client import ApiClient, RequestFailed, RetryPolicy

logger = logging.getLogger("nthlayer_pipelines.cortex")

DEFAULT_API_URL = "https://api.getcortexapp.com"
TOKEN_ENV_VAR = "CORTEX_API_TOKEN"
TEAMS_PATH = "/api/v1/teams"
DEFAULT_ROLE_MAP = {
    "manager": "manager",
    "oncall-manager": "manager",
    "responder": "responder",
    "observer": "observer",
}


class _CortexObject(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class CortexRole(_CortexObject):
    """A member's role: Cortex-defined roles carry a `tag`; roles synced from an IdP only a `name`."""

    tag: str | None = None
    name: str | None = None
    type: str | None = None
    source: str | None = None


class CortexMember(_CortexObject):
    email: str | None = None  # required by Cortex for its own members, optional for IdP members
    name: str | None = None
    role: CortexRole | None = None  # the older single-role field
    roles: tuple[CortexRole, ...] = ()

    @property
    def all_roles(self) -> tuple[CortexRole, ...]:
        return (self.role, *self.roles) if self.role else self.roles


class CortexTeamMetadata(_CortexObject):
    name: str
    description: str | None = None
    summary: str | None = None


class CortexMembers(_CortexObject):
    members: tuple[CortexMember, ...]


class CortexIdpGroup(_CortexObject):
    group: str
    provider: str | None = None
    members: tuple[CortexMember, ...]


class CortexTeam(_CortexObject):
    """One entry of `GET /api/v1/teams`: a Cortex-managed team or one backed by an IdP group."""

    id: str | None = None
    team_tag: str = Field(alias="teamTag")
    is_archived: bool = Field(alias="isArchived")
    type: str | None = None  # CORTEX | IDP
    metadata: CortexTeamMetadata
    cortex_team: CortexMembers | None = Field(default=None, alias="cortexTeam")
    idp_group: CortexIdpGroup | None = Field(default=None, alias="idpGroup")

    @property
    def members(self) -> tuple[CortexMember, ...]:
        if self.cortex_team is not None:
            return self.cortex_team.members
        if self.idp_group is not None:
            return self.idp_group.members
        return ()


class CortexTeamsResponse(_CortexObject):
    teams: tuple[CortexTeam, ...]


def parse_teams(text: str | bytes, *, where: str = f"GET {TEAMS_PATH}") -> list[CortexTeam]:
    """The teams of a `GET /api/v1/teams` body; `SourceError` naming the field and reason otherwise."""
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"Cortex {where}: the answer is not valid JSON ({exc})") from exc
    try:
        return list(CortexTeamsResponse.model_validate(body).teams)
    except ValidationError as exc:
        problems = "; ".join(f"{_field_path(e['loc'], body)}: {e['msg']}" for e in exc.errors()[:5])
        more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise SourceError(f"Cortex {where}: the answer does not parse: {problems}{more}") from exc


def _field_path(loc: tuple[int | str, ...], body: Any) -> str:
    """`teams[3](payments).metadata.name` from pydantic's location, naming the team by its tag."""
    path = ""
    node = body
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("teamTag"), str):
                path += f"({node['teamTag']})"
        else:
            path += f".{part}" if path else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return path or "the body"


def error_message(response: httpx.Response) -> str:
    """Cortex's own words for a failed request: `message` (+ `details`), or a problem+json `detail`."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("title")
        if message:
            details = body.get("details")
            return f"{message} ({details})" if details and details != message else str(message)
    return response.reason_phrase or "no error message"


class CortexClient(ApiClient):
    """Cortex's REST API on one `httpx.Client`. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        api_token: str = "",
        *,
        timeout: float = 30.0,
        max_attempts: int = 6,
        max_backoff_seconds: float = 60.0,
        backoff_base_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_token.strip():
            raise SourceError(f"Cortex: no API token is set; set {TOKEN_ENV_VAR}")
        self.api_url = api_url.rstrip("/")
        super().__init__(
            httpx.Client(
                base_url=self.api_url,
                headers={"Authorization": f"Bearer {api_token}", "Accept": "application/json"},
                timeout=timeout,
            ),
            RetryPolicy(max_attempts, backoff_base_seconds, max_backoff_seconds),
            sleep,
            secrets=[api_token],
        )

    def __repr__(self) -> str:
        return f"CortexClient(api_url={self.api_url!r})"

    def list_teams(self, include_without_members: bool = True) -> list[CortexTeam]:
        """Every team, archived ones included (the mapping drops them). Cortex answers in one page."""
        params = {"includeTeamsWithoutMembers": "true" if include_without_members else "false"}
        request = self._http.build_request("GET", TEAMS_PATH, params=params)
        where = f"GET {TEAMS_PATH}"
        try:
            response, attempts = self.send(
                lambda: self._http.send(request), method="GET", path=TEAMS_PATH, logger=logger
            )
        except RequestFailed as failure:
            raise SourceError(f"Cortex {where}: {failure.reason}") from failure
        if response.status_code == 401:
            message = error_message(response)
            raise SourceError(f"Cortex {where}: {message} (HTTP 401); check the API token in {TOKEN_ENV_VAR}")
        if not response.is_success:
            after = f", after {attempts} attempts" if attempts > 1 else ""
            raise SourceError(
                f"Cortex {where}: {error_message(response)} (HTTP {response.status_code}{after})"
            )
        return parse_teams(response.content, where=where)
