"""A provider (or a proxy in front of it) that repeats the request's headers in its error: no token reaches
an exception, its chain, a log line, `nthlayer plan`'s output, a Dagster run's event log and captured logs,
the ledger, or the Slack failure notice, and the error still says what failed where.

Each test searches what it produced for the tokens, whole, URL-encoded, JSON-escaped, or cut (any 12
characters of a token's random part in a row: slack_sdk cuts a body it cannot parse at 100 characters),
and first shows that the search reaches the echoed error (it holds `[REDACTED]` where the token was).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._serdes import serialize_value

from nthlayer_pipelines.core.model import SourceError
from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.orchestration.sensors import run_failure_to_slack
from nthlayer_pipelines.resources.cortex.client import CortexClient
from nthlayer_pipelines.resources.http.client import REDACTED
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.pagerduty.client import (
    PagerDutyClient,
    PagerDutyError,
    WriteOutcomeUnknownError,
)
from nthlayer_pipelines.resources.slack.resource import SlackNotifier
from nthlayer_pipelines.sandbox import RunningSandbox, load_seed, running_sandbox
from nthlayer_pipelines.sandbox.faults import parse_plan
from tests.reliability import Reliability
from tests.support import EXAMPLE_SEED, REPO, pipeline_environment

SCENARIO = "echoed_headers"
# Fresh for each run, so a hit can only come from these tokens; "+" changes under URL encoding (PagerDuty's
# user API keys start with "u+").
TOKENS = {
    "pagerduty": f"u+pd-canary-{secrets.token_hex(12)}",
    "cortex": f"cortex-canary-{secrets.token_hex(12)}",
    "slack": f"xoxb-canary-{secrets.token_hex(12)}",
}


def leaks(text: str) -> list[str]:
    """The providers whose token `text` holds: whole, URL-encoded, JSON-escaped, or 12 characters of it."""
    found = []
    for provider, token in TOKENS.items():
        random_part = token.rsplit("-", 1)[1]
        pieces = {token, quote(token, safe=""), json.dumps(token)[1:-1]}
        pieces |= {random_part[i : i + 12] for i in range(len(random_part) - 11)}
        if any(piece in text for piece in pieces):
            found.append(provider)
    return found


def searched(places: dict[str, str], reliability: Reliability) -> list[str]:
    """Every place's leaks; the places and what they held are counted for the reliability table."""
    found = [f"{place}: {provider} token" for place, text in places.items() for provider in leaks(text)]
    reliability.count(
        SCENARIO,
        places_searched=len(places),
        characters_searched=sum(len(text) for text in places.values()),
        token_leaks=len(found),
    )
    return found


def echo(sandbox: RunningSandbox, **rule: Any) -> None:
    sandbox.faults.set_plan(parse_plan({"rules": [{"kind": "echo_headers", "status": 400, **rule}]}))


def error_text(error: BaseException) -> str:
    """The exception as a traceback shows it, with every cause and context: what Dagster stores."""
    return "".join(traceback.format_exception(error))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(load_seed(EXAMPLE_SEED), tokens=TOKENS) as running:
        yield running


@pytest.fixture
def echoing(sandbox: RunningSandbox, reliability: Reliability) -> Iterator[RunningSandbox]:
    """The module's sandbox; what it echoed is counted and the plan cleared afterwards."""
    yield sandbox
    reliability.count_faults(SCENARIO, sandbox.faults.injected())
    sandbox.faults.set_plan(parse_plan(None))


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG, slack_sdk's and httpx's included: a deployment may turn them all on."""
    caplog.set_level(logging.DEBUG)
    return caplog


# ---- the clients ---------------------------------------------------------------------------------------


def pagerduty(sandbox: RunningSandbox, concurrency: int = 1) -> PagerDutyClient:
    return PagerDutyClient(
        sandbox.pagerduty_url,
        TOKENS["pagerduty"],
        max_attempts=2,
        sleep=lambda _seconds: None,
        max_concurrency=concurrency,
    )


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_pagerduty_read_refused_with_the_headers_echoed_names_the_endpoint_and_no_token(
    echoing: RunningSandbox, debug_logs: pytest.LogCaptureFixture, reliability: Reliability, concurrency: int
) -> None:
    echo(echoing, provider="pagerduty", endpoint="GET /teams/{id}/members")
    with pagerduty(echoing, concurrency) as client, pytest.raises(PagerDutyError) as raised:
        client.list_members_of_teams([team.id for team in client.list_teams()])

    error = raised.value
    assert searched({"exception": error_text(error), "log": debug_logs.text}, reliability) == []
    assert str(error).startswith("PagerDuty GET /teams/") and "/members: " in str(error)
    assert "(HTTP 400, code 2002)" in str(error)
    assert f"Token token={REDACTED}" in error.message
    assert f"authorization: Token token={REDACTED}" in error.errors


@pytest.mark.parametrize(
    ("status", "when", "raised_as"),
    [
        (400, "before", PagerDutyError),
        (500, "after", PagerDutyError),
        (502, "after", WriteOutcomeUnknownError),
    ],
)
def test_a_pagerduty_write_answered_with_the_headers_echoed_holds_no_token(
    echoing: RunningSandbox,
    debug_logs: pytest.LogCaptureFixture,
    reliability: Reliability,
    status: int,
    when: str,
    raised_as: type[PagerDutyError],
) -> None:
    echo(echoing, provider="pagerduty", endpoint="[!G]* *", status=status, when=when)
    with pagerduty(echoing) as client, pytest.raises(raised_as) as raised:
        if raised_as is WriteOutcomeUnknownError:  # a 502 to a POST: it may have been applied
            client.create_team(f"Echoed {secrets.token_hex(3)}")
        else:
            team = client.list_teams()[0]
            client.set_membership(team.id, next(iter(client.list_users())).id, "observer")

    assert searched({"exception": error_text(raised.value), "log": debug_logs.text}, reliability) == []
    assert f"(HTTP {status}, code 2002)" in str(raised.value)
    assert f"Token token={REDACTED}" in str(raised.value)


@pytest.mark.parametrize("status", [400, 401])
def test_cortex_refusing_with_the_headers_echoed_names_the_endpoint_and_no_token(
    echoing: RunningSandbox, debug_logs: pytest.LogCaptureFixture, reliability: Reliability, status: int
) -> None:
    echo(echoing, provider="cortex", status=status)
    with (
        CortexClient(echoing.cortex_url, TOKENS["cortex"], max_attempts=1) as client,
        pytest.raises(SourceError) as raised,
    ):
        client.list_teams()

    assert searched({"exception": error_text(raised.value), "log": debug_logs.text}, reliability) == []
    said = str(raised.value)
    assert said.startswith("Cortex GET /api/v1/teams: ") and f"(HTTP {status})" in said
    assert f"authorization: Bearer {REDACTED}" in said


def test_slack_behind_a_proxy_echoing_the_headers_in_plain_text_is_reported_without_the_token(
    echoing: RunningSandbox, debug_logs: pytest.LogCaptureFixture, reliability: Reliability
) -> None:
    echo(echoing, provider="slack", echo_format="text")
    slack = SlackNotifier(token=TOKENS["slack"], base_url=echoing.slack_url, channel="ops-changes")

    problem = slack.post(text="nthlayer: plan applied")

    assert problem is not None
    assert searched({"post": problem, "log": debug_logs.text}, reliability) == []
    assert problem.startswith("Slack refused the message: ")
    assert f"Bearer {REDACTED}" in problem  # the proxy's words, redacted before slack_sdk cut them short
    assert echoing.state.slack.messages == []


# ---- `nthlayer plan`, as a user runs it ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "said"), [("pagerduty", "PagerDuty GET /"), ("cortex", "Cortex GET /api/v1/teams")]
)
def test_nthlayer_plan_against_an_echoing_provider_fails_clearly_without_the_token(
    echoing: RunningSandbox, tmp_path: Path, reliability: Reliability, provider: str, said: str
) -> None:
    echo(echoing, provider=provider)
    environ = pipeline_environment(
        echoing,
        tmp_path,
        PAGERDUTY_API_TOKEN=TOKENS["pagerduty"],
        CORTEX_API_TOKEN=TOKENS["cortex"],
        SLACK_BOT_TOKEN=TOKENS["slack"],
    )
    run = subprocess.run(
        [str(Path(sys.executable).parent / "nthlayer"), "plan"],
        env={**os.environ, **environ},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert searched({"stdout": run.stdout, "stderr": run.stderr}, reliability) == []
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("error: ") and said in run.stderr and "(HTTP 400" in run.stderr
    assert f"Bearer {REDACTED}" in run.stderr or f"Token token={REDACTED}" in run.stderr


# ---- a Dagster run with storage, and the Slack failure notice ------------------------------------------


def event_records_text(instance: dg.DagsterInstance) -> dict[str, str]:
    """Every event of every run on the instance, serialized as the event log stores it."""
    return {
        f"events of run {run.run_id}": "\n".join(
            serialize_value(record.event_log_entry)
            for record in instance.get_records_for_run(run.run_id, limit=100_000).records
        )
        for run in instance.get_runs()
    }


def files_text(root: Path) -> dict[str, str]:
    return {
        str(path): path.read_bytes().decode("utf-8", errors="replace")
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def ledger_text(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return "\n".join(
                str(row)
                for table in sa.inspect(connection).get_table_names()
                for row in connection.execute(sa.text(f'SELECT * FROM "{table}"'))
            )
    finally:
        engine.dispose()


def test_an_apply_that_fails_on_an_echoed_error_leaves_no_token_in_the_run_the_ledger_or_slack(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: pytest.LogCaptureFixture,
    reliability: Reliability,
) -> None:
    with (
        running_sandbox(load_seed(EXAMPLE_SEED), tokens=TOKENS) as sandbox,
        dg.instance_for_test() as instance,
    ):
        environ = pipeline_environment(
            sandbox,
            tmp_path,
            PAGERDUTY_API_TOKEN=TOKENS["pagerduty"],
            CORTEX_API_TOKEN=TOKENS["cortex"],
            SLACK_BOT_TOKEN=TOKENS["slack"],
        )
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        defs = build_definitions(environ)
        refreshed = defs.resolve_job_def("refresh").execute_in_process(instance=instance)
        ledger = Ledger(environ["NTHLAYER_LEDGER_URL"])
        try:
            policy = ledger.latest_approval(ledger.latest_plan_id())
        finally:
            ledger.dispose()
        assert refreshed.success and policy is not None  # the policy approved the plan's additions

        # Every write is answered with the headers echoed; the apply's first Slack summary meets a proxy
        # echoing them in plain text, and the failure notice after it gets through.
        rules = [
            {"kind": "echo_headers", "status": 400, "provider": "pagerduty", "endpoint": "[!G]* *"},
            {
                "kind": "echo_headers",
                "status": 400,
                "provider": "slack",
                "echo_format": "text",
                "first_arrivals": 1,
            },
        ]
        sandbox.faults.set_plan(parse_plan({"rules": rules}))
        applied = defs.resolve_job_def("apply_plan").execute_in_process(
            run_config={"ops": {"apply_changes": {"config": {"approval_id": policy.id}}}},
            instance=instance,
            tags={"nthlayer/plan_id": policy.plan_id, "nthlayer/approval_id": policy.id},  # as the gate does
            raise_on_error=False,
        )
        assert not applied.success
        run = instance.get_run_by_id(applied.run_id)
        assert run is not None
        with dg.build_run_status_sensor_context(
            sensor_name="run_failure_to_slack",
            dagster_instance=instance,
            dagster_run=run,
            dagster_event=applied.get_run_failure_event(),
            resources={"slack": defs.resources["slack"]},
        ).for_run_failure() as context:
            run_failure_to_slack(context)
        injected = sandbox.faults.injected()
        reliability.count_faults(SCENARIO, injected)

        places = {
            **event_records_text(instance),
            **files_text(Path(instance.root_directory)),
            "ledger": ledger_text(environ["NTHLAYER_LEDGER_URL"]),
            "slack messages": json.dumps(sandbox.state.to_dict()["slack"]["messages"]),
            "log": debug_logs.text,
        }
        assert searched(places, reliability) == []
        # The search reached what it should: the refused writes in the run's events, its captured logs
        # and the ledger, the first summary's refusal, and the failure notice in Slack.
        apply_events = places[f"events of run {applied.run_id}"]
        assert "(HTTP 400, code 2002)" in apply_events and f"Token token={REDACTED}" in apply_events
        assert "Slack refused the message: Received a response in a non-JSON format" in apply_events
        captured = [text for name, text in places.items() if "compute_logs" in name]
        assert any(f"Token token={REDACTED}" in text for text in captured), list(places)
        assert f"Token token={REDACTED}" in places["ledger"]
        assert f"applying plan {policy.plan_id} failed" in places["slack messages"]
        assert injected["echo_headers"] > 1
