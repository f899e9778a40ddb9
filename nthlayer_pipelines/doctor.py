"""`nthlayer doctor`: can this deployment do its work? One read-only check per part, said in words.

Each provider is asked one read-only question with the configured token; the Dagster instance under
DAGSTER_HOME must list its runs and hear from its daemon; the ledger must hold its tables. A check never
writes to a provider, and a secret never reaches its message.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from nthlayer_pipelines.core.model import SourceError
from nthlayer_pipelines.resources.http.client import Redactor

if TYPE_CHECKING:
    from nthlayer_pipelines.resources.ledger.migrate import Revision

DAEMON_MAX_AGE_SECONDS = 60.0  # the daemon beats every 30 s: two missed beats is down or stuck
TIMEOUT_SECONDS = 10.0
SECRET_VARIABLES = ("PAGERDUTY_API_TOKEN", "CORTEX_API_TOKEN", "SLACK_BOT_TOKEN")
URL_VARIABLES = ("NTHLAYER_LEDGER_URL", "DAGSTER_POSTGRES_URL")


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str

    def line(self) -> str:
        return f"{self.status.value:<4}  {self.name}: {self.message}"


@dataclass(frozen=True)
class Heartbeat:
    """A daemon's latest heartbeat: when (seconds since the epoch) and the errors it reported."""

    timestamp: float
    errors: tuple[str, ...] = ()


# ---- pure verdicts ------------------------------------------------------------------------------------


def assess_daemon(
    required: Sequence[str],
    heartbeats: Mapping[str, Heartbeat],
    now: float,
    max_age_seconds: float = DAEMON_MAX_AGE_SECONDS,
) -> CheckResult:
    """Alive when every daemon the instance requires beat within `max_age_seconds`."""
    if not required:
        return CheckResult("daemon", Status.WARN, "this instance is ephemeral: it runs no daemon")
    if not heartbeats:
        return CheckResult(
            "daemon",
            Status.FAIL,
            "no dagster-daemon has ever run on this instance: schedules, sensors and the approval gate "
            "do nothing without it; start `dagster-daemon run -w workspace.yaml`",
        )
    silent = sorted(name for name in required if name not in heartbeats)
    if silent:
        return CheckResult(
            "daemon", Status.FAIL, f"no heartbeat from {', '.join(silent)}: start the full dagster-daemon"
        )
    ages = {name: now - heartbeats[name].timestamp for name in required}
    stale = sorted(name for name, age in ages.items() if age > max_age_seconds)
    if stale:
        newest = min(ages.values())
        return CheckResult(
            "daemon",
            Status.FAIL,
            f"the last heartbeat came {_age(newest)} ago (over {max_age_seconds:.0f}s; "
            f"{', '.join(stale)}): dagster-daemon is down or stuck",
        )
    failing = sorted(name for name in required if heartbeats[name].errors)
    newest = _age(max(0.0, min(ages.values())))
    if failing:
        first = heartbeats[failing[0]].errors[0].strip().splitlines()[0]
        return CheckResult(
            "daemon",
            Status.WARN,
            f"alive (last heartbeat {newest} ago) but {', '.join(failing)} reports errors: {first}",
        )
    return CheckResult("daemon", Status.OK, f"alive: {len(required)} daemons, last heartbeat {newest} ago")


def assess_ledger_schema(
    expected: Mapping[str, set[str]],
    present: Mapping[str, set[str]],
    where: str,
    revision: Revision | None = None,
) -> CheckResult:
    """The ledger's schema revision is this version's, and every table has every column it should.
    `revision` is None when the database holds no ledger yet: the first refresh creates it."""
    if revision is None or revision.empty:
        return CheckResult(
            "ledger", Status.WARN, f"{where} holds no ledger tables yet: the first refresh creates them"
        )
    if not revision.at_head:
        return CheckResult(
            "ledger",
            Status.FAIL,
            f"{where} is at schema revision {revision.current}, this version needs {revision.head}: "
            "run `nthlayer db upgrade` to migrate it in place (a newer revision: run the nthlayer that "
            "wrote it)",
        )
    differences = [
        f"{name} lacks {', '.join(sorted(columns - present.get(name, set())))}"
        if name in present
        else f"{name} is missing"
        for name, columns in sorted(expected.items())
        if name not in present or columns - present[name]
    ]
    if differences:
        return CheckResult(
            "ledger",
            Status.FAIL,
            f"{where}: {'; '.join(differences)}, although its revision is {revision.current}: the tables "
            "were changed by hand; restore them from a backup",
        )
    return CheckResult(
        "ledger",
        Status.OK,
        f"{where}: schema revision {revision.current} (the latest), {len(expected)} tables",
    )


def redact(text: str, secrets: Sequence[str]) -> str:
    """The text with every form of every secret value replaced, by the clients' own redactor (short values
    are left, since they would mangle words)."""
    return Redactor(secrets)(text)


def secrets_of(environ: Mapping[str, str]) -> list[str]:
    """The secret values the environment holds: tokens, and the passwords in database URLs."""
    found = [environ[name] for name in SECRET_VARIABLES if environ.get(name)]
    for name in URL_VARIABLES:
        if environ.get(name):
            try:
                password = make_url(environ[name]).password
            except (sa.exc.ArgumentError, ValueError):
                continue
            if password:
                found.append(str(password))
    return found


def shown_url(url: str) -> str:
    """A database URL fit to print: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "an unparseable URL"


def _age(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# ---- the checks ---------------------------------------------------------------------------------------


def check_pagerduty(environ: Mapping[str, str], timeout: float = TIMEOUT_SECONDS) -> CheckResult:
    from nthlayer_pipelines.resources.pagerduty.client import (
        DEFAULT_API_URL,
        TOKEN_ENV_VAR,
        PagerDutyError,
        error_from_response,
        parse_body,
        request_headers,
    )

    token = environ.get(TOKEN_ENV_VAR, "").strip()
    if not token:
        return CheckResult("pagerduty", Status.FAIL, f"{TOKEN_ENV_VAR} is not set: every refresh needs it")
    url = (environ.get("PAGERDUTY_API_URL") or DEFAULT_API_URL).rstrip("/")
    try:
        with httpx.Client(base_url=url, headers=request_headers(token), timeout=timeout) as http:
            response = http.get("/users", params={"limit": 1})
        if not response.is_success:
            raise error_from_response(response, "GET", "/users")
        users = parse_body(response, "GET", "/users").get("users")
    except PagerDutyError as error:
        return CheckResult("pagerduty", Status.FAIL, f"{url}: {error}")
    except httpx.HTTPError as error:
        return CheckResult("pagerduty", Status.FAIL, f"{url} is unreachable ({_reason(error)})")
    if not isinstance(users, list):
        return CheckResult("pagerduty", Status.FAIL, f"{url}: GET /users answered without a 'users' list")
    return CheckResult("pagerduty", Status.OK, f"{url} accepts the token in {TOKEN_ENV_VAR} (GET /users)")


def check_cortex(environ: Mapping[str, str], timeout: float = TIMEOUT_SECONDS) -> CheckResult:
    from nthlayer_pipelines.resources.cortex.client import TEAMS_PATH, TOKEN_ENV_VAR, CortexClient

    url = environ.get("CORTEX_API_URL", "").strip()
    if not url:
        return CheckResult("cortex", Status.OK, "off (CORTEX_API_URL is not set)")
    if not environ.get(TOKEN_ENV_VAR, "").strip():
        return CheckResult("cortex", Status.FAIL, f"CORTEX_API_URL is set but {TOKEN_ENV_VAR} is not")
    try:
        with CortexClient(url, environ[TOKEN_ENV_VAR], timeout=timeout, max_attempts=1) as client:
            teams = client.list_teams()
    except SourceError as error:
        return CheckResult("cortex", Status.FAIL, f"{url}: {error}")
    active = sum(1 for team in teams if not team.is_archived)
    return CheckResult(
        "cortex",
        Status.OK,
        f"{url} accepts the token in {TOKEN_ENV_VAR} (GET {TEAMS_PATH}: {active} active teams)",
    )


def check_slack(environ: Mapping[str, str], timeout: float = TIMEOUT_SECONDS) -> CheckResult:
    from slack_sdk.errors import SlackApiError, SlackClientError

    from nthlayer_pipelines.resources.slack.resource import SLACK_PUBLIC_API, RedactedWebClient

    token = environ.get("SLACK_BOT_TOKEN", "").strip()
    channel = environ.get("NTHLAYER_SLACK_CHANNEL", "").strip()
    if not token:
        if channel:
            return CheckResult(
                "slack",
                Status.WARN,
                "NTHLAYER_SLACK_CHANNEL is set but SLACK_BOT_TOKEN is not: nothing is announced",
            )
        return CheckResult("slack", Status.OK, "off (SLACK_BOT_TOKEN and NTHLAYER_SLACK_CHANNEL are not set)")
    url = environ.get("SLACK_API_URL") or SLACK_PUBLIC_API
    try:
        answer = RedactedWebClient(token, base_url=url, timeout=int(timeout)).auth_test()
    except SlackApiError as error:
        reason = error.response.get("error", "unknown error") if error.response is not None else "refused"
        return CheckResult("slack", Status.FAIL, f"{url} refused the token in SLACK_BOT_TOKEN: {reason}")
    except (SlackClientError, OSError) as error:
        return CheckResult("slack", Status.FAIL, f"{url} is unreachable ({_reason(error)})")
    who = f"bot {answer.get('user')!s} of {answer.get('team')!s}"
    if not channel:
        return CheckResult(
            "slack",
            Status.WARN,
            f"the token works ({who}) but NTHLAYER_SLACK_CHANNEL is not set: nothing is announced",
        )
    return CheckResult(
        "slack", Status.OK, f"{url} accepts the token in SLACK_BOT_TOKEN ({who}, channel {channel})"
    )


def check_definitions(environ: Mapping[str, str]) -> CheckResult:
    from nthlayer_pipelines.desired.git import validate_definitions
    from nthlayer_pipelines.resources.settings import DEFAULT_DEFINITIONS

    path = environ.get("NTHLAYER_DEFINITIONS", DEFAULT_DEFINITIONS).strip()
    if not path:
        if environ.get("CORTEX_API_URL", "").strip():
            return CheckResult("definitions", Status.OK, "off (NTHLAYER_DEFINITIONS is empty): Cortex only")
        return CheckResult(
            "definitions",
            Status.FAIL,
            "no desired-state source: NTHLAYER_DEFINITIONS is empty and CORTEX_API_URL is not set",
        )
    problems = validate_definitions(path)
    if problems:
        return CheckResult(
            "definitions",
            Status.FAIL,
            f"{len(problems)} problem(s) in {path}, the first: {problems[0]}; run `nthlayer validate {path}`",
        )
    return CheckResult("definitions", Status.OK, f"{path} is valid")


def check_settings(environ: Mapping[str, str]) -> CheckResult:
    """Every setting the code location reads parses: the same check, and the same line, as its load. A
    variable a slip away from a setting's (NTHLAYER_APPROVER) is read by nothing: a warning names both."""
    from nthlayer_pipelines.resources.settings import SettingsError, misspelt

    try:
        from nthlayer_pipelines.definitions import build_definitions

        build_definitions(environ)
    except SettingsError as error:
        return CheckResult("settings", Status.FAIL, str(error))
    valid = "every setting the code location reads is valid"
    slips = misspelt(environ)
    if slips:
        named = "; ".join(f"{given} is read by nothing: {meant}?" for given, meant in slips)
        return CheckResult("settings", Status.WARN, f"{valid}, but {named}")
    return CheckResult("settings", Status.OK, valid)


def check_approvers(environ: Mapping[str, str]) -> CheckResult:
    from nthlayer_pipelines.resources.settings import APPROVERS_ENV_VAR, Approvers

    try:
        approvers = Approvers.from_env(environ)
    except ValueError as error:
        return CheckResult("approvers", Status.FAIL, str(error))
    if approvers.allowed is None:
        return CheckResult("approvers", Status.WARN, approvers.warning)
    if not approvers.allowed:
        return CheckResult(
            "approvers",
            Status.WARN,
            f"{APPROVERS_ENV_VAR} is empty: no person may approve, only the pre-approval policy does",
        )
    return CheckResult(
        "approvers",
        Status.OK,
        f"{len(approvers.allowed)} may approve: {', '.join(sorted(approvers.allowed))}",
    )


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Storage libraries log their retries to the root logger; the check's line says it once."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def check_instance(
    environ: Mapping[str, str],
    now: Callable[[], float] = time.time,
    max_age_seconds: float = DAEMON_MAX_AGE_SECONDS,
) -> list[CheckResult]:
    """The Dagster instance under DAGSTER_HOME: its run storage answers, and its daemon is alive."""
    home = environ.get("DAGSTER_HOME", "").strip()
    if not home:
        return [
            CheckResult(
                "storage",
                Status.FAIL,
                "DAGSTER_HOME is not set: the webserver and daemon would keep runs in a temporary folder",
            ),
            CheckResult("daemon", Status.FAIL, "no instance to ask: set DAGSTER_HOME"),
        ]
    if not Path(home).is_dir():
        return [
            CheckResult("storage", Status.FAIL, f"DAGSTER_HOME={home} is not a folder"),
            CheckResult("daemon", Status.FAIL, "no instance to ask: DAGSTER_HOME is not a folder"),
        ]
    import dagster as dg

    try:
        with _quiet_libraries():
            instance = dg.DagsterInstance.from_config(home)
            try:
                records = instance.get_run_records(limit=1)
                required = list(instance.get_required_daemon_types())
                heartbeats = {
                    name: Heartbeat(beat.timestamp, tuple(error.message for error in beat.errors or ()))
                    for name, beat in instance.get_daemon_heartbeats().items()
                }
                storage = instance.run_storage
            finally:
                instance.dispose()
    except Exception as error:  # any failure to open or read the instance is the finding
        reason = _reason(error)
        return [
            CheckResult("storage", Status.FAIL, f"the instance in {home} cannot list its runs ({reason})"),
            CheckResult("daemon", Status.FAIL, "no instance to ask: its storage does not answer"),
        ]
    postgres_url = getattr(storage, "postgres_url", None)
    where = (
        f"Postgres at {shown_url(postgres_url)}"
        if postgres_url
        else f"SQLite under {home} (one machine only)"
    )
    latest = (
        f"latest run {records[0].dagster_run.run_id[:8]} {records[0].dagster_run.status.value.lower()}"
        if records
        else "no runs yet"
    )
    return [
        CheckResult("storage", Status.OK, f"runs in {where}: {latest}"),
        assess_daemon(required, heartbeats, now(), max_age_seconds),
    ]


def check_ledger(environ: Mapping[str, str]) -> CheckResult:
    from nthlayer_pipelines.resources.ledger import metadata, migrate

    url = environ.get("NTHLAYER_LEDGER_URL", "").strip()
    if not url:
        home = environ.get("DAGSTER_HOME", "").strip()
        if not home:
            return CheckResult("ledger", Status.FAIL, "neither NTHLAYER_LEDGER_URL nor DAGSTER_HOME is set")
        url = f"sqlite:///{Path(home) / 'nthlayer-ledger.db'}"
    where = shown_url(url)
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as error:
        return CheckResult("ledger", Status.FAIL, f"NTHLAYER_LEDGER_URL does not parse ({_reason(error)})")
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        return CheckResult("ledger", Status.WARN, f"no ledger yet at {where}: the first refresh creates it")
    connect_args = (
        {"connect_timeout": int(TIMEOUT_SECONDS)} if parsed.get_backend_name() == "postgresql" else {}
    )
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args)
        try:
            with engine.connect() as conn:
                inspector = sa.inspect(conn)
                present = {
                    name: {c["name"] for c in inspector.get_columns(name)}
                    for name in inspector.get_table_names()
                }
                revision = migrate.revision(conn)
        finally:
            engine.dispose()
    except (sa.exc.SQLAlchemyError, ImportError) as error:
        return CheckResult("ledger", Status.FAIL, f"cannot read the ledger at {where} ({_reason(error)})")
    expected = {name: {column.name for column in table.columns} for name, table in metadata.tables.items()}
    return assess_ledger_schema(expected, present, where, revision)


def run_checks(environ: Mapping[str, str] = os.environ) -> list[CheckResult]:
    """Every check, in the order a person fixes things: providers, sources, settings, approvers, instance,
    ledger.

    The instance's dagster.yaml reads its `env:` values from the process environment.
    """
    checks: list[tuple[str, Callable[[Mapping[str, str]], CheckResult | list[CheckResult]]]] = [
        ("pagerduty", check_pagerduty),
        ("cortex", check_cortex),
        ("slack", check_slack),
        ("definitions", check_definitions),
        ("settings", check_settings),
        ("approvers", check_approvers),
        ("storage", check_instance),
        ("ledger", check_ledger),
    ]
    results: list[CheckResult] = []
    for name, check in checks:
        try:
            found = check(environ)
        except Exception as error:  # a check that breaks is a failed check, never a traceback
            found = CheckResult(name, Status.FAIL, f"the check itself failed ({_reason(error)})")
        results.extend(found if isinstance(found, list) else [found])
    secrets = secrets_of(environ)
    return [CheckResult(r.name, r.status, redact(r.message, secrets)) for r in results]
