"""No token leaks: the whole pipeline runs on the daemon with distinctive tokens, one run fails on a 401,
a refresh fails on a Cortex that echoes the request's headers in its error, an apply fails on a PagerDuty
that echoes them to every write (its Slack summary refused by a proxy echoing them too, its failure
announced in Slack), and then every place a person or a log reader can look is searched for the tokens.

The places: every table of the deployment's Postgres database (event log, runs with their config, ticks,
the ledger), every file under DAGSTER_HOME (captured compute logs), the webserver's and the daemon's stdout
and stderr (which the run workers inherit), the GraphQL answers the UI reads (runs and their config, every
event with its errors, materialization metadata, captured logs, sensor ticks), the sandbox's request log,
the messages Slack received, and the output of the CLI, `nthlayer doctor` included. Each search is first
shown to reach what it should hold (the run ids, a step's log line, the echoed errors), so a search of
nothing cannot pass.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from starlette.responses import JSONResponse

from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.sandbox import RequestContext, RunningSandbox, load_seed, running_sandbox
from nthlayer_pipelines.sandbox.faults import parse_plan
from tests.e2e.deployment import (
    STARTUP_TIMEOUT_SECONDS,
    DagsterUi,
    Deployment,
    DeploymentError,
    _process,
    deployment_on_fresh_database,
    wait_until,
)
from tests.e2e.test_apply_e2e import NOT_DURING_THE_TESTS, SENSOR_INTERVAL_SECONDS, approve_config
from tests.postgres import free_port
from tests.reliability import Reliability
from tests.support import ARTIFACTS, EXAMPLE_SEED, REPO, pipeline_environment, slack_messages

pytestmark = pytest.mark.postgres

NTHLAYER = Path(sys.executable).parent / "nthlayer"
# Distinctive and fresh for each run, so a hit can only come from this test's tokens.
TOKENS = {
    "pagerduty": f"pd-canary-{secrets.token_hex(12)}",
    "cortex": f"cortex-canary-{secrets.token_hex(12)}",
    "slack": f"xoxb-canary-{secrets.token_hex(12)}",
}

RUNS_QUERY = """{ runsOrError { ... on Runs { results { runId jobName status runConfigYaml
    tags { key value } } } } }"""
EVENTS_QUERY = """query($runId: ID!) { logsForRun(runId: $runId) { __typename
    ... on EventConnection { events { __typename
        ... on MessageEvent { message stepKey }
        ... on ExecutionStepFailureEvent { error { message stack causes { message stack } } }
        ... on RunFailureEvent { pipelineRunFailureError: error { message stack } }
        ... on LogsCapturedEvent { fileKey stepKeys }
        ... on MaterializationEvent { metadataEntries { label
            ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr }
            ... on JsonMetadataEntry { jsonString } ... on UrlMetadataEntry { url } } }
        ... on StepWorkerStartedEvent { message }
    } } } }"""
CAPTURED_LOGS_QUERY = """query($logKey: [String!]!) { capturedLogs(logKey: $logKey) { stdout stderr } }"""
TICKS_QUERY = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 100) { status skipReason runIds
        error { message stack } } } } } }"""
LOGS = ARTIFACTS / "e2e" / "secrets"
SENSORS = ("approved_plans_sensor", "refresh_after_apply", "run_failure_to_slack")


def hits(text: str) -> list[str]:
    """The providers whose token appears in `text`, whole or hex-encoded (a bytea column reads as hex)."""
    return [
        provider
        for provider, token in TOKENS.items()
        if token in text or token.encode().hex() in text.lower()
    ]


@pytest.fixture(scope="module")
def canary_sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(load_seed(EXAMPLE_SEED), tokens=TOKENS) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def deployment(
    canary_sandbox: RunningSandbox, postgres_server_url: URL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("dagster_home")
    environ = pipeline_environment(
        canary_sandbox,
        home,
        PAGERDUTY_API_TOKEN=TOKENS["pagerduty"],
        CORTEX_API_TOKEN=TOKENS["cortex"],
        SLACK_BOT_TOKEN=TOKENS["slack"],
        NTHLAYER_SENSOR_INTERVAL_SECONDS=str(SENSOR_INTERVAL_SECONDS),
        NTHLAYER_REFRESH_CRON=NOT_DURING_THE_TESTS,
        NTHLAYER_AUDIT_CRON=NOT_DURING_THE_TESTS,
    )
    failure = None
    try:
        with deployment_on_fresh_database(postgres_server_url, environ, home, LOGS) as started:
            yield started
    except DeploymentError as error:
        failure = str(error)
    if failure:
        pytest.fail(failure, pytrace=False)


def revoke_pagerduty_token(sandbox: RunningSandbox) -> None:
    """PagerDuty answers every request as it answers a revoked token."""

    async def revoked(ctx: RequestContext) -> JSONResponse:
        return JSONResponse({"error": {"message": "Authentication failed", "code": 2006}}, 401)

    sandbox.hooks.add_before(revoked, provider="pagerduty")


def fail_on_echoed_headers(ui: DagsterUi, sandbox: RunningSandbox, ledger: Ledger) -> dict[str, int]:
    """A refresh refused by a Cortex echoing the request's headers; then drift the policy approves, whose
    apply meets a PagerDuty echoing them to every write and a proxy echoing them to its first Slack
    summary, fails, and is announced in Slack. Returns the echoes injected."""
    injected: dict[str, int] = {}

    def use(*rules: dict[str, object]) -> None:
        for label, count in sandbox.faults.injected().items():
            injected[label] = injected.get(label, 0) + count
        sandbox.faults.set_plan(parse_plan({"rules": list(rules)}))

    echo = {"kind": "echo_headers", "status": 400}
    use({**echo, "provider": "cortex"})
    refused = ui.wait_for_run(ui.launch_run("refresh"))
    assert refused.status == "FAILURE"
    assert any("Cortex GET /api/v1/teams" in m for m in failure_messages(ui, refused.run_id))
    # The failure sensor announces the refused refresh; heard before the next faults are set, so that
    # the proxy's echo below meets the apply's own summary, not this notice.
    wait_until(
        "the refused refresh to be announced in Slack",
        lambda: any("the refresh failed" in m for m in slack_messages(sandbox)),
        timeout_seconds=120,
    )

    # Carol leaves Payments through the API (so the audit trail has it): the next plan adds her back.
    org = sandbox.state.pagerduty
    team = org.team_by_name("Payments")
    carol = next(u for u in org.users.values() if u.email == "carol@example.com")
    assert team is not None
    headers = {"Authorization": f"Token token={TOKENS['pagerduty']}"}
    removed = httpx.delete(f"{sandbox.pagerduty_url}/teams/{team.id}/users/{carol.id}", headers=headers)
    assert removed.status_code == 204
    use(
        {**echo, "provider": "pagerduty", "endpoint": "[!G]* *"},
        {**echo, "provider": "slack", "echo_format": "text", "first_arrivals": 1},
    )
    try:
        assert ui.wait_for_run(ui.launch_run("refresh")).status == "SUCCESS"
        plan_id = ledger.latest_plan_id()
        policy = ledger.latest_approval(plan_id)
        assert policy is not None and policy.source == "policy"
        failed = ui.wait_for_tagged_run(
            "apply_plan", {"nthlayer/approval_id": policy.id}, timeout_seconds=180
        )
        assert failed.status == "FAILURE"

        def announced() -> bool:
            messages = sandbox.state.to_dict()["slack"]["messages"]
            return any(f"applying plan {plan_id} failed" in m["text"] for m in messages)

        wait_until("the failed apply to be announced in Slack", announced, timeout_seconds=120)
    finally:
        use()
    return injected


def run_everything(deployment: Deployment, sandbox: RunningSandbox, reliability: Reliability) -> list[str]:
    """Refresh, the policy's apply, a person's approval and its apply, the runs failed by echoed headers,
    then a refresh refused with a 401. Returns the run ids."""
    ui, ledger = deployment.ui, Ledger(deployment.database_url)
    try:
        assert ui.wait_for_run(ui.launch_run("refresh")).status == "SUCCESS"
        policy = ledger.latest_approval(ledger.latest_plan_id())
        assert policy is not None and policy.source == "policy"
        assert ui.wait_for_tagged_run("apply_plan", {"nthlayer/approval_id": policy.id}).status == "SUCCESS"
        plan_id = ledger.latest_plan_id()
        assert ui.wait_for_run(ui.launch_run("approve_plan", approve_config(plan_id))).status == "SUCCESS"
        approval = ledger.latest_approval(plan_id)
        assert approval is not None and approval.approver == "alice"
        assert ui.wait_for_tagged_run("apply_plan", {"nthlayer/approval_id": approval.id}).status == "SUCCESS"
        reliability.count_faults("token_leaks", fail_on_echoed_headers(ui, sandbox, ledger))

        revoke_pagerduty_token(sandbox)
        try:
            refused = ui.wait_for_run(ui.launch_run("refresh"))
        finally:
            sandbox.hooks.clear()
        assert refused.status == "FAILURE"
        failures = failure_messages(ui, refused.run_id)
        # It fails fast, naming the variable and quoting PagerDuty's 401.
        said = "Authentication failed (HTTP 401, code 2006)"
        assert any(said in m and "PAGERDUTY_API_TOKEN" in m for m in failures), failures
    finally:
        ledger.dispose()
    return [run["runId"] for run in ui.graphql(RUNS_QUERY)["runsOrError"]["results"]]


def failure_messages(ui: DagsterUi, run_id: str) -> list[str]:
    events = ui.graphql(EVENTS_QUERY, runId=run_id)["logsForRun"]["events"]
    return [
        cause["message"]
        for event in events
        if event["__typename"] == "ExecutionStepFailureEvent"
        for cause in [event["error"], *event["error"]["causes"]]
    ]


def database_text(database_url: str) -> dict[str, str]:
    """Every row of every table of the database, as Postgres prints it."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            tables = sa.inspect(connection).get_table_names()
            return {
                table: "\n".join(
                    connection.execute(sa.text(f'SELECT CAST(t AS text) FROM "{table}" AS t')).scalars()
                )
                for table in tables
            }
    finally:
        engine.dispose()


def files_text(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_bytes().decode("utf-8", errors="replace")
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def ui_answers(ui: DagsterUi, run_ids: list[str]) -> dict[str, str]:
    """What the UI reads through GraphQL about every run and sensor, each answer as its JSON text."""
    answers = {"runs": json.dumps(ui.graphql(RUNS_QUERY))}
    for run_id in run_ids:
        events = ui.graphql(EVENTS_QUERY, runId=run_id)
        answers[f"events {run_id}"] = json.dumps(events)
        for event in events["logsForRun"]["events"]:
            if event["__typename"] == "LogsCapturedEvent":
                key = [run_id, "compute_logs", event["fileKey"]]
                answers[f"captured logs {'/'.join(key)}"] = json.dumps(
                    ui.graphql(CAPTURED_LOGS_QUERY, logKey=key)
                )
    for sensor in SENSORS:
        selector = {
            "repositoryLocationName": "nthlayer_pipelines",
            "repositoryName": "__repository__",
            "sensorName": sensor,
        }
        answers[f"ticks {sensor}"] = json.dumps(ui.graphql(TICKS_QUERY, selector=selector))
    return answers


def cli_output(environ: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(NTHLAYER), *args], cwd=REPO, env=environ, capture_output=True, text=True, timeout=120
    )
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def test_no_token_reaches_any_place_a_person_or_a_log_can_read(
    deployment: Deployment, canary_sandbox: RunningSandbox, reliability: Reliability
) -> None:
    run_ids = run_everything(deployment, canary_sandbox, reliability)
    # refresh, apply, refresh after, approve, apply, refresh after, two refreshes and the failed apply of
    # the echoes, refused refresh
    assert len(run_ids) >= 10

    places: dict[str, dict[str, str]] = {
        "postgres": database_text(deployment.database_url),
        "DAGSTER_HOME": files_text(Path(deployment.env["DAGSTER_HOME"])),
        "webserver and daemon output": files_text(LOGS),
        "GraphQL": ui_answers(deployment.ui, run_ids),
        "sandbox request log": {"requests": str(canary_sandbox.requests())},
        "Slack": {"messages": json.dumps(canary_sandbox.state.to_dict()["slack"]["messages"])},
    }

    # Each search reaches what it should: the event log holds every run, the compute logs a step's lines.
    everything_in_postgres = "\n".join(places["postgres"].values())
    assert all(run_id in everything_in_postgres for run_id in run_ids)
    assert "runs" in places["postgres"] and "event_logs" in places["postgres"]
    assert any("stderr" in name or name.endswith(".err") for name in places["DAGSTER_HOME"]), list(
        places["DAGSTER_HOME"]
    )
    assert any("change_plan" in text for name, text in places["GraphQL"].items() if "captured" in name)
    assert "Token token=[REDACTED]" in places["sandbox request log"]["requests"]
    # ... and the echoed errors: the refused writes and the Slack refusal in the event log, the notice.
    assert "(HTTP 400, code 2002)" in everything_in_postgres
    assert "Slack refused the message: Received a response in a non-JSON format" in everything_in_postgres
    assert "PagerDuty apply failed" in places["Slack"]["messages"]

    # The CLI, with the same environment: a plan, the doctor, and the doctor facing a revoked token.
    environ = {**os.environ, **deployment.env}
    cli = {"nthlayer plan": cli_output(environ, "plan"), "nthlayer doctor": cli_output(environ, "doctor")}
    # With the webserver and daemon up, the doctor finds nothing wrong (the approvers list is a warning).
    assert cli["nthlayer doctor"].startswith("exit 0\n"), cli["nthlayer doctor"]
    assert re.search(r"^ok\s+daemon: alive", cli["nthlayer doctor"], re.MULTILINE), cli["nthlayer doctor"]
    revoke_pagerduty_token(canary_sandbox)
    try:
        cli["nthlayer doctor, token revoked"] = cli_output(environ, "doctor")
        cli["nthlayer plan, token revoked"] = cli_output(environ, "plan")
    finally:
        canary_sandbox.hooks.clear()
    assert "PAGERDUTY_API_TOKEN" in cli["nthlayer plan, token revoked"]
    assert "Authentication failed" in cli["nthlayer doctor, token revoked"]
    places["CLI"] = cli

    leaks = [
        f"{place}: {name}: {provider} token"
        for place, texts in places.items()
        for name, text in texts.items()
        for provider in hits(text)
    ]
    searched = sum(len(text) for texts in places.values() for text in texts.values())
    reliability.count(
        "token_leaks",
        places_searched=sum(len(texts) for texts in places.values()),
        characters_searched=searched,
        token_leaks=len(leaks),
    )
    assert leaks == [], f"tokens found in {len(leaks)} places of {searched:,} characters searched"


# ---- the viewer everyone else uses -------------------------------------------------------------------

APPROVE_MUTATION = """mutation($params: ExecutionParams!) {
    launchPipelineExecution(executionParams: $params) { __typename
        ... on UnauthorizedError { message } ... on LaunchRunSuccess { run { runId } } } }"""


def test_a_read_only_viewer_shows_the_history_and_launches_nothing(deployment: Deployment) -> None:
    """The second webserver of the README's deployment: `--read-only` on the same instance."""
    port = free_port()
    viewer = DagsterUi(url=f"http://127.0.0.1:{port}")
    command = [
        str(Path(sys.executable).parent / "dagster-webserver"),
        *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port), "--read-only"),
    ]
    with _process(command, deployment.env, LOGS / "read-only-webserver.log"):
        wait_until(
            "the read-only webserver to serve",
            lambda: _serving(viewer),
            timeout_seconds=STARTUP_TIMEOUT_SECONDS,
        )
        seen = {run["runId"] for run in viewer.graphql(RUNS_QUERY)["runsOrError"]["results"]}
        written = {run["runId"] for run in deployment.ui.graphql(RUNS_QUERY)["runsOrError"]["results"]}
        assert seen == written and seen

        ledger = Ledger(deployment.database_url)
        try:
            plan_id = ledger.latest_plan_id() or "plan-none"
            approvals_before = ledger.latest_approval(plan_id)
        finally:
            ledger.dispose()
        params = {
            "selector": {
                "repositoryLocationName": "nthlayer_pipelines",
                "repositoryName": "__repository__",
                "jobName": "approve_plan",
            },
            "runConfigData": approve_config(plan_id),
        }
        launched = viewer.graphql(APPROVE_MUTATION, params=params)["launchPipelineExecution"]
        assert launched["__typename"] == "UnauthorizedError", launched
        assert {run["runId"] for run in viewer.graphql(RUNS_QUERY)["runsOrError"]["results"]} == seen
        ledger = Ledger(deployment.database_url)
        try:
            assert ledger.latest_approval(plan_id) == approvals_before
        finally:
            ledger.dispose()


def _serving(ui: DagsterUi) -> bool:
    try:
        return httpx.get(f"{ui.url}/server_info", timeout=2).status_code == 200 and bool(
            ui.graphql(RUNS_QUERY)["runsOrError"].get("results") is not None
        )
    except httpx.TransportError:
        return False
