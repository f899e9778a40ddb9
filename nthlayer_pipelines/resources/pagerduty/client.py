"""PagerDuty REST API v2: a client on httpx with retries in one layer (its Dagster resource is resource.py).

Request headers, response parsing and pagination are pure (`request_headers`, `error_from_response`,
`OffsetPager`); `PagerDutyClient` only sends. With `max_concurrency` above 1 it reads the pages of a listing
and the members of many teams from a thread pool, every request paced by one `TokenBucket` per API key.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from nthlayer_pipelines.core.model import Role, team_name_key
from nthlayer_pipelines.resources.http.client import (
    ApiClient,
    RequestFailed,
    RetryPolicy,
    answer_may_follow_write,
)
from nthlayer_pipelines.resources.http.ratelimit import (
    TokenBucket,
)
from nthlayer_pipelines.resources.pagerduty.incremental import (
    subdomain_from_html_url,
)
from nthlayer_pipelines.resources.pagerduty.models import (
    EscalationRuleSpec,
    PagerDutyEscalationPolicy,
    PagerDutyMember,
    PagerDutySchedule,
    PagerDutyService,
    PagerDutyTeam,
    PagerDutyUrgencyRule,
    PagerDutyUser,
)

logger = logging.getLogger("nthlayer_pipelines.pagerduty")
T = TypeVar("T")
A = TypeVar("A")

DEFAULT_API_URL = "https://api.pagerduty.com"
TOKEN_ENV_VAR = "PAGERDUTY_API_TOKEN"
PAGE_SIZE = 100  # PagerDuty's maximum
OFFSET_LIMIT = 10_000  # offset + limit may not exceed this: PagerDuty answers 400 past it
MAX_SHORT_PAGES = 3  # consecutive pages with fewer items than asked for while `more` is still true
# Threads share an httpx.Client up to this many; more get another client. httpx 0.28 stalls with many
# connections in one client: 800 requests at 250 ms each took 5.8 s over 200 connections in one client
# and 1.4 s over 8 clients of 25 (against the sandbox under uvicorn).
CONNECTIONS_PER_CLIENT = 25


class _Unset(Enum):
    UNSET = "UNSET"


# "Not given", where None has a meaning of its own (a timeout of None turns it off).
UNSET = _Unset.UNSET
Unset = Literal[_Unset.UNSET]


class PagerDutyError(Exception):
    """An answer PagerDuty refused to give, or one that could not be read."""

    hint = ""

    def __init__(
        self,
        status: int | None,
        code: int | None,
        message: str,
        errors: Sequence[str] = (),
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.errors = tuple(errors)
        self.method = method
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"PagerDuty {self.method} {self.path}".rstrip()
        text = f"{where}: {self.message}"
        details = [f"HTTP {self.status}"] if self.status else []
        if self.code is not None:
            details.append(f"code {self.code}")
        if details:
            text += f" ({', '.join(details)})"
        if self.errors:
            text += ": " + "; ".join(self.errors)
        return text + self.hint


class PagerDutyAuthError(PagerDutyError):
    """401: the token is missing, wrong or revoked."""

    hint = f"; check the API token in {TOKEN_ENV_VAR}"


class PaginationLimitError(PagerDutyError):
    """A listing longer than PagerDuty's offset pagination can reach: reading on would truncate it."""


class AmbiguousUserError(PagerDutyError):
    """More than one user carries an email exactly: which one is meant is not for nthlayer to guess."""


class WriteOutcomeUnknownError(PagerDutyError):
    """A write that got no answer and may have been applied: read the state before writing again."""


# ---- pure parts: headers, errors, pages --------------------------------------------------------------


def request_headers(api_token: str) -> dict[str, str]:
    return {
        "Authorization": f"Token token={api_token}",
        "Accept": "application/vnd.pagerduty+json;version=2",
        "Content-Type": "application/json",
    }


def error_from_response(
    response: httpx.Response, method: str, path: str, attempts: int = 1
) -> PagerDutyError:
    """PagerDuty's `{"error": {"message", "code", "errors"}}` as an exception; any other body is described."""
    message, code, errors = "", None, ()
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code = error.get("code") if isinstance(error.get("code"), int) else None
        listed = error.get("errors")
        errors = tuple(str(e) for e in listed if e) if isinstance(listed, list) else ()
    if not message:
        message = response.reason_phrase or "no error message"
    if attempts > 1:
        message += f" (after {attempts} attempts)"
    status = response.status_code
    kind = PagerDutyAuthError if status == 401 else PagerDutyError
    if answer_may_follow_write(method, status):
        kind = WriteOutcomeUnknownError
    return kind(status, code, message, errors, method, path)


def parse_body(response: httpx.Response, method: str, path: str) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PagerDutyError(
            response.status_code, None, f"the answer is not JSON ({exc})", (), method, path
        ) from exc
    if not isinstance(body, dict):
        raise PagerDutyError(
            response.status_code, None, f"expected a JSON object, got {type(body).__name__}", (), method, path
        )
    return body


def unwrap(body: dict[str, Any], key: str, method: str, path: str) -> dict[str, Any]:
    """The object under `key` of a `{key: {...}}` answer."""
    value = body.get(key)
    if not isinstance(value, dict):
        raise PagerDutyError(None, None, f"the answer has no {key!r} object", (), method, path)
    return value


@dataclass
class OffsetPager:
    """PagerDuty's classic offset pagination as a state machine without I/O.

    Ask `params()` for the next request's query, feed its body to `accept()`, stop when `done`. Refuses
    to stop short: the 10,000 offset limit raises `PaginationLimitError`, and a listing that says `more`
    without making progress raises `PagerDutyError` instead of looping.
    """

    path: str
    collection: str
    key: Callable[[dict[str, Any]], object] | None = None  # identifies an item; default: its "id"
    page_size: int = PAGE_SIZE
    offset: int = 0
    done: bool = False
    pages: int = 0
    short_pages: int = 0
    _seen: set[object] = field(default_factory=set, repr=False)

    @property
    def limit(self) -> int:
        return min(self.page_size, OFFSET_LIMIT - self.offset)

    def params(self) -> dict[str, int]:
        return {"limit": self.limit, "offset": self.offset}

    def accept(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The page's new items in order; repeats of earlier pages (a listing that shifted) are dropped."""
        items = body.get(self.collection)
        if not isinstance(items, list):
            raise self._error(f"the answer has no {self.collection!r} list")
        more = body.get("more")
        if not isinstance(more, bool):
            raise self._error(f"the answer at offset {self.offset} has no boolean 'more'")
        if not all(isinstance(item, dict) for item in items):
            raise self._error(f"{self.collection} at offset {self.offset} holds something other than objects")
        asked = self.limit
        fresh: list[dict[str, Any]] = []
        identify = self.key or _item_id
        for item in items:
            key = identify(item)
            if key is not None and key in self._seen:
                continue
            if key is not None:
                self._seen.add(key)
            fresh.append(item)
        self.pages += 1
        self.offset += len(items)
        if not more:
            self.done = True
            return fresh
        if not fresh:
            raise self._error(
                f"the page at offset {self.offset - len(items)} says more=true but brings no new items"
            )
        self.short_pages = self.short_pages + 1 if len(items) < asked else 0
        if self.short_pages >= MAX_SHORT_PAGES:
            raise self._error(
                f"{self.short_pages} pages in a row held fewer items than the {asked} asked for while "
                f"saying more=true (offset {self.offset}): the listing is not paginating"
            )
        if self.limit <= 0:
            raise PaginationLimitError(
                None,
                None,
                f"more than {self.offset} {self.collection}: PagerDuty's offset pagination stops at "
                f"{OFFSET_LIMIT}, so this listing cannot be read in full; narrow it with a filter",
                (),
                "GET",
                self.path,
            )
        return fresh

    def _error(self, message: str) -> PagerDutyError:
        return PagerDutyError(None, None, message, (), "GET", self.path)


def _item_id(item: dict[str, Any]) -> object:
    return _usable_key(item.get("id"))


def _member_key(item: dict[str, Any]) -> object:
    user = item.get("user")
    return _usable_key(user.get("id")) if isinstance(user, dict) else None


def _member_with_user(team_id: str, item: dict[str, Any]) -> tuple[PagerDutyMember, PagerDutyUser]:
    """A member read with `include[]=users`: its role, and the whole user object in place of a reference."""
    return PagerDutyMember.from_api(team_id, item), PagerDutyUser.model_validate(item.get("user"))


def _usable_key(value: object) -> object:
    """An id to recognise repeats by; a malformed one (a list, an object) is left to the item's parser."""
    return value if isinstance(value, str | int) else None


def _segment(value: str) -> str:
    return quote(value, safe="")


def _timeout(name: str, seconds: int | None) -> int | None:
    """A service timeout as sent: whole seconds, or None (JSON null) for off."""
    if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 1):
        raise ValueError(f"{name} must be a positive number of seconds, or None to turn it off: {seconds!r}")
    return seconds


def _policy_settings(num_loops: int, rules: Sequence[EscalationRuleSpec]) -> dict[str, Any]:
    """A policy's loops and rules as a create or update sends them; PagerDuty wants at least one rule."""
    if not isinstance(num_loops, int) or isinstance(num_loops, bool) or num_loops < 0:
        raise ValueError(f"num_loops must be a whole number of 0 or more: {num_loops!r}")
    if not rules:
        raise ValueError("an escalation policy needs at least one rule")
    return {"num_loops": num_loops, "escalation_rules": [rule.to_api() for rule in rules]}


# ---- the client ---------------------------------------------------------------------------------------


class PagerDutyClient(ApiClient):
    """PagerDuty's REST API v2 on httpx. Use as a context manager, or call `close()`.

    `max_concurrency` requests may be in flight at once (1: one at a time); `rate_limiter`, when given,
    paces every request, retries included, and learns from the rate-limit headers of every answer.
    """

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        api_token: str = "",
        *,
        timeout: float = 30.0,
        max_attempts: int = 6,
        max_backoff_seconds: float = 60.0,
        backoff_base_seconds: float = 0.5,
        from_email: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_concurrency: int = 1,
        rate_limiter: TokenBucket | None = None,
        read_only: bool = False,
    ) -> None:
        if not api_token.strip():
            raise PagerDutyAuthError(None, None, "no API token is set")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
        self.api_url = api_url.rstrip("/")
        self.read_only = read_only
        self.max_concurrency = max_concurrency
        self.rate_limiter = rate_limiter
        self._from_email = from_email
        self._new_http = partial(
            httpx.Client,
            base_url=self.api_url,
            headers=request_headers(api_token),
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=CONNECTIONS_PER_CLIENT),
        )
        super().__init__(
            self._new_http(),
            RetryPolicy(max_attempts, backoff_base_seconds, max_backoff_seconds),
            sleep,
            secrets=[api_token],
        )
        self._lanes = [self._http]  # httpx clients; each worker thread sticks to one
        self._lanes_lock = threading.Lock()
        self._thread = threading.local()
        self._subdomains: set[str] = set()

    def __repr__(self) -> str:
        return f"PagerDutyClient(api_url={self.api_url!r})"

    @property
    def account_subdomains(self) -> frozenset[str]:
        """The account subdomains named in the `html_url` of every object this client has read: one for
        any sound account (its web UI's, `acme` of https://acme.pagerduty.com), which tells the account a
        snapshot was read from at no extra call."""
        return frozenset(self._subdomains)

    def note_account(self, item: object) -> None:
        """Remember the subdomain an answer's object names in its `html_url`, if any."""
        subdomain = subdomain_from_html_url(item.get("html_url")) if isinstance(item, dict) else None
        if subdomain is not None:
            self._subdomains.add(subdomain)  # a set's add is atomic: the reading threads share it

    def close(self) -> None:
        with self._lanes_lock:
            lanes, self._lanes = self._lanes, [self._http]
        for http in lanes:
            http.close()

    # ---- reads

    def list_users(self) -> list[PagerDutyUser]:
        return self._read_all("/users", "users", PagerDutyUser.model_validate, concurrent=True)

    def list_users_within_limit(self) -> tuple[list[PagerDutyUser] | None, int | None]:
        """Every user and the listing's total, when the listing can be read in full; (None, total) when
        its first page (`total=true`) counts more than `OFFSET_LIMIT`, which only that page is read for.
        As many calls as `list_users` otherwise: the first page is the listing's own."""
        path, collection = "/users", "users"
        first, body = self._first_page(path, collection)
        total = _total(body)
        if total is not None and total > OFFSET_LIMIT:
            return None, total
        items = self._after_first_page(path, collection, first, body)
        return [self._parse(PagerDutyUser.model_validate, item, path) for item in items], total

    def find_user_by_email(self, email: str) -> PagerDutyUser | None:
        """The one user whose email is `email` ignoring case, or None. PagerDuty's `query` matches any
        part of a name or an email (`ann@x.com` finds `joann@x.com`), so it only narrows the listing; two
        users with the email exactly raise `AmbiguousUserError` naming both."""
        wanted = email.strip().casefold()
        candidates = self._read_all("/users", "users", PagerDutyUser.model_validate, params={"query": wanted})
        matches = [user for user in candidates if user.email.strip().casefold() == wanted]
        if len(matches) > 1:
            named = ", ".join(f"{u.id} ({u.name})" for u in matches)
            message = f"{len(matches)} users have the email {email!r}: {named}"
            raise AmbiguousUserError(None, None, message, (), "GET", "/users")
        return matches[0] if matches else None

    def find_users_by_email(self, emails: Sequence[str]) -> dict[str, PagerDutyUser | None]:
        """`find_user_by_email` of each email, by email in the order given, up to `max_concurrency` at a
        time. Every email two users carry is refused together, in one `AmbiguousUserError`."""
        unique = list(dict.fromkeys(emails))

        def find(email: str) -> PagerDutyUser | AmbiguousUserError | None:
            try:
                return self.find_user_by_email(email)
            except AmbiguousUserError as ambiguous:
                return ambiguous

        found = self._map_concurrently(find, unique)
        refused = [f.message for f in found if isinstance(f, AmbiguousUserError)]
        if refused:
            raise AmbiguousUserError(None, None, "; ".join(refused), (), "GET", "/users")
        return {e: f for e, f in zip(unique, found, strict=True) if not isinstance(f, AmbiguousUserError)}

    def list_teams(self) -> list[PagerDutyTeam]:
        return self._read_all("/teams", "teams", PagerDutyTeam.model_validate, concurrent=True)

    def list_team_members(self, team_id: str) -> list[PagerDutyMember]:
        path = f"/teams/{_segment(team_id)}/members"
        parse = partial(PagerDutyMember.from_api, team_id)
        return self._read_all(path, "members", parse, key=_member_key)

    def list_members_of_teams(self, team_ids: Sequence[str]) -> dict[str, list[PagerDutyMember]]:
        """Each team's members, by team id in the order given; every team read once, up to
        `max_concurrency` teams at a time. The first failure cancels the reads not yet started."""
        unique = list(dict.fromkeys(team_ids))
        return dict(zip(unique, self._map_concurrently(self.list_team_members, unique), strict=True))

    def list_team_members_with_users(self, team_id: str) -> list[tuple[PagerDutyMember, PagerDutyUser]]:
        """The team's members with their whole user objects (`include[]=users`), at no extra call."""
        path = f"/teams/{_segment(team_id)}/members"
        parse = partial(_member_with_user, team_id)
        return self._read_all(path, "members", parse, params={"include[]": ["users"]}, key=_member_key)

    def list_members_with_users_of_teams(
        self, team_ids: Sequence[str]
    ) -> dict[str, list[tuple[PagerDutyMember, PagerDutyUser]]]:
        """`list_members_of_teams` with each member's user object (`list_team_members_with_users`)."""
        unique = list(dict.fromkeys(team_ids))
        read = self.list_team_members_with_users
        return dict(zip(unique, self._map_concurrently(read, unique), strict=True))

    def get_team(self, team_id: str) -> PagerDutyTeam | None:
        """The team, or None when PagerDuty does not know the id (404)."""
        return self._get_one(f"/teams/{_segment(team_id)}", "team", PagerDutyTeam.model_validate)

    def find_team_by_name(self, name: str) -> PagerDutyTeam | None:
        """The team whose name equals `name` ignoring case; `query` only narrows the listing."""
        candidates = self._read_all(
            "/teams", "teams", PagerDutyTeam.model_validate, params={"query": name.strip()}
        )
        wanted = name.strip().casefold()
        matches = [team for team in candidates if team.name.strip().casefold() == wanted]
        if len(matches) > 1:
            ids = ", ".join(t.id for t in matches)
            message = f"{len(matches)} teams are named {name!r} ({ids})"
            raise PagerDutyError(None, None, message, (), "GET", "/teams")
        return matches[0] if matches else None

    def list_escalation_policies(self, team_ids: Sequence[str] = ()) -> list[PagerDutyEscalationPolicy]:
        """Every policy (of these teams, when given) with its rules, loops and the services on it: a
        policy's `services` references come with it, so no `include[]` is asked for."""
        params = {"team_ids[]": list(team_ids)} if team_ids else None
        parse = PagerDutyEscalationPolicy.from_api
        return self._read_all(
            "/escalation_policies", "escalation_policies", parse, params=params, concurrent=True
        )

    def get_escalation_policy(self, policy_id: str) -> PagerDutyEscalationPolicy | None:
        """The policy, or None when PagerDuty does not know the id (404)."""
        path = f"/escalation_policies/{_segment(policy_id)}"
        return self._get_one(path, "escalation_policy", PagerDutyEscalationPolicy.from_api)

    def find_escalation_policies_by_name(self, name: str) -> list[PagerDutyEscalationPolicy]:
        """Every policy named `name`, names compared as `team_name_key` compares them (case, and spaces
        around and between words, do not count). More than one is an ambiguity for the caller to refuse.

        `query` only narrows the listing: PagerDuty finds it anywhere in a name, so it is the name's
        longest word, which a name spaced otherwise (`Payments  (critical)`) holds too, where the whole
        name would miss it."""
        wanted = team_name_key(name)
        longest_word = max(wanted.split(), key=len, default="")
        candidates = self._read_all(
            "/escalation_policies",
            "escalation_policies",
            PagerDutyEscalationPolicy.from_api,
            params={"query": longest_word},
        )
        return [policy for policy in candidates if team_name_key(policy.name) == wanted]

    def list_services(self, team_ids: Sequence[str] = ()) -> list[PagerDutyService]:
        """Every service (of these teams, when given). Its policy and teams come as references, which is
        all the model reads, so no `include[]` is asked for."""
        params = {"team_ids[]": list(team_ids)} if team_ids else None
        parse = PagerDutyService.from_api
        return self._read_all("/services", "services", parse, params=params, concurrent=True)

    def get_service(self, service_id: str) -> PagerDutyService | None:
        """The service, or None when PagerDuty does not know the id (404)."""
        return self._get_one(f"/services/{_segment(service_id)}", "service", PagerDutyService.from_api)

    def list_schedules(self) -> list[PagerDutySchedule]:
        return self._read_all("/schedules", "schedules", PagerDutySchedule.from_api, concurrent=True)

    def get_schedule(self, schedule_id: str) -> PagerDutySchedule | None:
        """The schedule, or None when PagerDuty does not know the id (404)."""
        return self._get_one(f"/schedules/{_segment(schedule_id)}", "schedule", PagerDutySchedule.from_api)

    # ---- writes

    def set_membership(self, team_id: str, user_id: str, role: Role | str) -> None:
        """Add the user to the team or change their role. The role is always sent: PagerDuty's default
        for an omitted role has changed over time."""
        body = {"role": Role(role).value}
        self._request("PUT", f"/teams/{_segment(team_id)}/users/{_segment(user_id)}", body=body)

    def remove_membership(self, team_id: str, user_id: str) -> None:
        """Remove the user from the team. PagerDuty refuses (400, code 2001) while the user is a target of
        one of the team's escalation policies; that surfaces as `PagerDutyError` with PagerDuty's message."""
        self._request("DELETE", f"/teams/{_segment(team_id)}/users/{_segment(user_id)}")

    def create_team(self, name: str, description: str = "") -> PagerDutyTeam:
        """Create a team. Not retried once sent (see `http.POST_RETRYABLE_STATUSES`): on
        `WriteOutcomeUnknownError`, look it up with `find_team_by_name` before creating again."""
        response = self._request(
            "POST", "/teams", body={"team": {"type": "team", "name": name, "description": description}}
        )
        return self._answer(response, "team", PagerDutyTeam.model_validate, "POST", "/teams")

    def update_service(
        self,
        service_id: str,
        *,
        escalation_policy_id: str | None = None,
        urgency_rule: PagerDutyUrgencyRule | None = None,
        acknowledgement_timeout: int | Unset | None = UNSET,
        auto_resolve_timeout: int | Unset | None = UNSET,
    ) -> PagerDutyService:
        """Change only the fields given, and answer the service as PagerDuty returned it. A timeout of None
        turns it off (JSON null: a 0 may be taken as 0 seconds); a timeout not given is not sent. The
        read-only fields (status, teams, integrations...) are never sent: echoing a status PagerDuty set
        itself, such as `critical`, is refused (400, code 2001)."""
        service: dict[str, Any] = {"type": "service"}
        if escalation_policy_id is not None:
            service["escalation_policy"] = {"id": escalation_policy_id, "type": "escalation_policy_reference"}
        if urgency_rule is not None:
            service["incident_urgency_rule"] = urgency_rule.to_api()
        for field_name, timeout in (
            ("acknowledgement_timeout", acknowledgement_timeout),
            ("auto_resolve_timeout", auto_resolve_timeout),
        ):
            if timeout is not UNSET:
                service[field_name] = _timeout(field_name, timeout)
        if len(service) == 1:
            raise ValueError("update_service was given no field to change")
        path = f"/services/{_segment(service_id)}"
        response = self._request("PUT", path, body={"service": service})
        return self._answer(response, "service", PagerDutyService.from_api, "PUT", path)

    def create_escalation_policy(
        self,
        name: str,
        *,
        team_id: str | None,
        num_loops: int,
        rules: Sequence[EscalationRuleSpec],
        description: str = "",
    ) -> PagerDutyEscalationPolicy:
        """Create a policy with these rules, in order, on the team if one is given (PagerDuty allows one).
        Not retried once sent: on `WriteOutcomeUnknownError`, look with `find_escalation_policies_by_name`
        before creating again. A name already taken is refused (400, code 2001)."""
        policy = {
            "type": "escalation_policy",
            "name": name,
            "description": description,
            **_policy_settings(num_loops, rules),
        }
        if team_id is not None:
            policy["teams"] = [{"id": team_id, "type": "team_reference"}]
        path = "/escalation_policies"
        response = self._request("POST", path, body={"escalation_policy": policy})
        return self._answer(response, "escalation_policy", PagerDutyEscalationPolicy.from_api, "POST", path)

    def update_escalation_policy(
        self,
        policy_id: str,
        *,
        num_loops: int,
        rules: Sequence[EscalationRuleSpec],
        name: str | None = None,
    ) -> PagerDutyEscalationPolicy:
        """Replace the policy's rules and loop count; its team, description and services are not sent and
        stay as they are. PagerDuty's schema requires a policy's name in a PUT, so it is sent: `name` when
        given (the caller that just read the policy knows it), else the name a GET reads first. New rules
        get new ids."""
        path = f"/escalation_policies/{_segment(policy_id)}"
        self._refuse_if_read_only("PUT", path)  # before the GET that would only serve the PUT
        if name is None:  # a policy that is gone is PagerDuty's 404 to this GET
            parse = PagerDutyEscalationPolicy.from_api
            name = self._answer(self._request("GET", path), "escalation_policy", parse, "GET", path).name
        policy = {"type": "escalation_policy", "name": name, **_policy_settings(num_loops, rules)}
        response = self._request("PUT", path, body={"escalation_policy": policy})
        return self._answer(response, "escalation_policy", PagerDutyEscalationPolicy.from_api, "PUT", path)

    # ---- plumbing

    def _get_one(self, path: str, key: str, parse: Callable[[dict[str, Any]], T]) -> T | None:
        """The `{key: {...}}` object at `path`, or None when PagerDuty answers 404."""
        try:
            response = self._request("GET", path)
        except PagerDutyError as error:
            if error.status == 404:
                return None
            raise
        return self._answer(response, key, parse, "GET", path)

    def _answer(
        self, response: httpx.Response, key: str, parse: Callable[[dict[str, Any]], T], method: str, path: str
    ) -> T:
        """The object a `{key: {...}}` answer wraps, parsed."""
        item = unwrap(parse_body(response, method, path), key, method, path)
        return self._parse(parse, item, path, method)

    def _read_all(
        self,
        path: str,
        collection: str,
        parse: Callable[[dict[str, Any]], T],
        *,
        params: dict[str, Any] | None = None,
        key: Callable[[dict[str, Any]], object] | None = None,
        concurrent: bool = False,
    ) -> list[T]:
        if concurrent and self.max_concurrency > 1:
            items: Iterator[dict[str, Any]] | list[dict[str, Any]] = self._pages_concurrently(
                path, collection, params=params, key=key
            )
        else:
            items = self._pages(path, collection, params=params, key=key)
        return [self._parse(parse, item, path) for item in items]

    def _pages(
        self,
        path: str,
        collection: str,
        *,
        params: dict[str, Any] | None = None,
        key: Callable[[dict[str, Any]], object] | None = None,
        pager: OffsetPager | None = None,
        until: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The listing's items from the pager's offset to its end, or to the offset `until`."""
        pager = pager or OffsetPager(path, collection, key=key)
        while not pager.done and (until is None or pager.offset < until):
            response = self._request("GET", path, params={**(params or {}), **pager.params()})
            yield from pager.accept(parse_body(response, "GET", path))

    def _pages_concurrently(
        self,
        path: str,
        collection: str,
        *,
        params: dict[str, Any] | None = None,
        key: Callable[[dict[str, Any]], object] | None = None,
    ) -> list[dict[str, Any]]:
        """The same items in the same order as `_pages`, in as many requests: the first page asks for the
        listing's `total`, the other pages are then read at once. A listing that grew meanwhile is read on
        to its end; items that shifted into a later page are dropped as repeats."""
        first, body = self._first_page(path, collection, params=params, key=key)
        return self._after_first_page(path, collection, first, body, params=params, key=key)

    def _first_page(
        self,
        path: str,
        collection: str,
        *,
        params: dict[str, Any] | None = None,
        key: Callable[[dict[str, Any]], object] | None = None,
    ) -> tuple[OffsetPager, dict[str, Any]]:
        """The listing's first page, asked with `total=true`, and the pager that read it (not yet fed)."""
        first = OffsetPager(path, collection, key=key)
        response = self._request("GET", path, params={**(params or {}), **first.params(), "total": "true"})
        return first, parse_body(response, "GET", path)

    def _after_first_page(
        self,
        path: str,
        collection: str,
        first: OffsetPager,
        body: dict[str, Any],
        *,
        params: dict[str, Any] | None = None,
        key: Callable[[dict[str, Any]], object] | None = None,
    ) -> list[dict[str, Any]]:
        """The whole listing from its first page's answer: the other pages at once when the total is
        known and the client may read concurrently, else one after another."""
        items = first.accept(body)
        total = _total(body)
        if first.done or total is None or self.max_concurrency <= 1:
            return items + list(self._pages(path, collection, params=params, pager=first))
        if total > OFFSET_LIMIT:
            raise PaginationLimitError(
                None,
                None,
                f"{total} {collection}: PagerDuty's offset pagination stops at {OFFSET_LIMIT}, so this "
                "listing cannot be read in full; narrow it with a filter",
                (),
                "GET",
                path,
            )

        def read_page(offset: int) -> tuple[OffsetPager, list[dict[str, Any]]]:
            pager = OffsetPager(path, collection, key=key, offset=offset)
            page = self._request("GET", path, params={**(params or {}), **pager.params()})
            return pager, pager.accept(parse_body(page, "GET", path))

        starts = range(first.offset, total, first.page_size)
        pages = self._map_concurrently(read_page, starts)
        # A page cut short (fewer items than asked, `more` still true) leaves a gap before the next
        # page's offset: read it, or the snapshot silently lacks what the gap holds.
        for (pager, page_items), until in zip(pages, starts[1:], strict=False):
            page_items.extend(self._pages(path, collection, params=params, pager=pager, until=until))
        last = pages[-1][0] if pages else first
        if not last.done:  # the listing grew while it was read: read on to its end
            pages.append((last, list(self._pages(path, collection, params=params, pager=last))))
        identify = key or _item_id
        seen = {identify(item) for item in items}
        for _, page_items in pages:
            for item in page_items:
                ident = identify(item)
                if ident is None or ident not in seen:
                    seen.add(ident)
                    items.append(item)
        return items

    def _map_concurrently(self, read: Callable[[A], T], arguments: Sequence[A]) -> list[T]:
        """`read` of each argument, in order, at most `max_concurrency` at a time."""
        workers = min(self.max_concurrency, len(arguments))
        if workers <= 1:
            return [read(argument) for argument in arguments]
        lanes = self._ensure_lanes(math.ceil(workers / CONNECTIONS_PER_CLIENT))
        counter = itertools.count()
        tallies = self.stats.tallies()  # the caller's cost includes what its helper threads send

        def bind_lane() -> None:
            self._thread.http = lanes[next(counter) % len(lanes)]

        def counted(argument: A) -> T:
            with self.stats.counting_into(tallies):
                return read(argument)

        with ThreadPoolExecutor(workers, thread_name_prefix="pagerduty", initializer=bind_lane) as pool:
            futures = [pool.submit(counted, argument) for argument in arguments]
            wait(futures, return_when=FIRST_EXCEPTION)
            errors = [f.exception() for f in futures if f.done() and not f.cancelled()]
            error = next((e for e in errors if e is not None), None)
            if error is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise error
            return [future.result() for future in futures]

    def _ensure_lanes(self, count: int) -> list[httpx.Client]:
        with self._lanes_lock:
            while len(self._lanes) < count:
                self._lanes.append(self._new_http())
            return self._lanes[:count]

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        self._refuse_if_read_only(method, path)
        headers = {"From": self._from_email} if self._from_email and method != "GET" else None
        http: httpx.Client = getattr(self._thread, "http", self._http)
        request = http.build_request(method, path, params=params, json=body, headers=headers)
        try:
            response, attempts = self.send(
                partial(self._send, http, request), method=method, path=path, logger=logger
            )
        except RequestFailed as failure:
            kind = WriteOutcomeUnknownError if failure.may_have_been_applied else PagerDutyError
            raise kind(None, None, failure.reason, (), method, path) from failure
        if not response.is_success:
            raise error_from_response(response, method, path, attempts)
        return response

    def _refuse_if_read_only(self, method: str, path: str) -> None:
        if self.read_only and method != "GET":
            raise PagerDutyError(None, None, "refused: this client is read-only", (), method, path)

    def _send(self, http: httpx.Client, request: httpx.Request) -> httpx.Response:
        """One attempt, within the rate limit when there is a limiter."""
        limiter = self.rate_limiter
        if limiter is None:
            return http.send(request)
        limiter.acquire()
        try:
            response = http.send(request)
        except BaseException:
            limiter.release()
            raise
        limiter.release(response.headers)
        return response

    def _parse(
        self, parse: Callable[[dict[str, Any]], T], item: dict[str, Any], path: str, method: str = "GET"
    ) -> T:
        self.note_account(item)
        try:
            return parse(item)
        except (ValidationError, AttributeError, TypeError) as exc:
            ident = item.get("id") if isinstance(item, dict) else None
            what = f"item {ident!r}" if ident else "an item"
            reason = _validation_summary(exc) if isinstance(exc, ValidationError) else str(exc)
            raise PagerDutyError(None, None, f"{what} does not parse: {reason}", (), method, path) from exc


def _total(body: dict[str, Any]) -> int | None:
    """A listing's `total`, when the answer gives one (PagerDuty's is null unless `total=true`)."""
    total = body.get("total")
    return total if isinstance(total, int) and not isinstance(total, bool) else None


def _validation_summary(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors())
