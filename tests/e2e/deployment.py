"""dagster-webserver and dagster-daemon run as a deployment runs them, as subprocesses of the tests, and
what the tests ask them through GraphQL: launch a job, follow its runs, read sensor ticks and event logs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy.engine import URL

from nthlayer_pipelines.processes import STOP_TIMEOUT_SECONDS, start_group, stop_group
from tests.postgres import free_port, fresh_database, render
from tests.support import REPO

LOCATION = "nthlayer_pipelines"
REPOSITORY = "__repository__"  # the one repository of a Definitions object
STARTUP_TIMEOUT_SECONDS = 120
RUN_TIMEOUT_SECONDS = 90
FINISHED_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

T = TypeVar("T")


class DeploymentError(RuntimeError):
    """The webserver or the daemon did not come up."""


def wait_until(what: str, probe: Callable[[], T | None], timeout_seconds: float = RUN_TIMEOUT_SECONDS) -> T:
    """Call `probe` until it returns something truthy (not None, False or an empty list), and return that."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_seconds:.0f}s waiting for {what}")
        time.sleep(0.5)


@dataclass(frozen=True)
class RunView:
    """A run as the UI lists it."""

    run_id: str
    job: str
    status: str
    tags: dict[str, str]
    start_time: float | None
    end_time: float | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclass(frozen=True)
class TickView:
    """One evaluation of a sensor by the daemon."""

    tick_id: str
    status: str
    timestamp: float
    run_ids: tuple[str, ...]
    run_keys: tuple[str, ...]
    skip_reason: str | None


RUN_FIELDS = "runId jobName status tags { key value } startTime endTime"
LAUNCH_MUTATION = """mutation($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message } } }"""
RUN_QUERY = f"""query($runId: ID!) {{ runOrError(runId: $runId) {{
    __typename ... on Run {{ {RUN_FIELDS} }} }} }}"""
RUNS_QUERY = f"""query($filter: RunsFilter) {{ runsOrError(filter: $filter) {{
    ... on Runs {{ results {{ {RUN_FIELDS} }} }} }} }}"""
TICKS_QUERY = """query($selector: SensorSelector!, $after: Float) { sensorOrError(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { ticks(limit: 200, afterTimestamp: $after) {
        tickId status timestamp runIds runKeys skipReason } } } } }"""
EVENTS_QUERY = """query($runId: ID!) { logsForRun(runId: $runId) {
    __typename ... on EventConnection { events { __typename ... on MessageEvent { message } } } } }"""
STEP_STATS_QUERY = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run {
    stepStats { stepKey status } } } }"""
MATERIALIZATIONS_QUERY = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run {
    assetMaterializations { assetKey { path }
    metadataEntries { label ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue } }
} } } }"""
WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


def _run_view(raw: Mapping[str, Any]) -> RunView:
    return RunView(
        run_id=raw["runId"],
        job=raw["jobName"],
        status=raw["status"],
        tags={tag["key"]: tag["value"] for tag in raw["tags"]},
        start_time=raw["startTime"],
        end_time=raw["endTime"],
    )


@dataclass
class DagsterUi:
    """A running webserver (and daemon) serving the nthlayer_pipelines code location."""

    url: str

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def launch_run(self, job: str, run_config: Mapping[str, Any] | None = None) -> str:
        """Launch a job with run config as the launchpad does; returns the run id."""
        params = {
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job},
            "runConfigData": dict(run_config or {}),
        }
        launched = self.graphql(LAUNCH_MUTATION, params=params)["launchPipelineExecution"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise AssertionError(f"launching {job} failed: {launched}")
        return launched["run"]["runId"]

    def run(self, run_id: str) -> RunView:
        found = self.graphql(RUN_QUERY, runId=run_id)["runOrError"]
        if found["__typename"] != "Run":
            raise AssertionError(f"no run {run_id}: {found['__typename']}")
        return _run_view(found)

    def runs(self, job: str | None = None, tags: Mapping[str, str] | None = None) -> list[RunView]:
        """Runs, newest first, of one job and with these tags when given."""
        run_filter: dict[str, Any] = {}
        if job:
            run_filter["pipelineName"] = job
        if tags:
            run_filter["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        results = self.graphql(RUNS_QUERY, filter=run_filter)["runsOrError"]["results"]
        return [_run_view(raw) for raw in results]

    def wait_for_run(self, run_id: str, timeout_seconds: float = RUN_TIMEOUT_SECONDS) -> RunView:
        """The run once it has finished (succeeded, failed or was canceled)."""

        def finished() -> RunView | None:
            run = self.run(run_id)
            return run if run.finished else None

        return wait_until(f"run {run_id} to finish", finished, timeout_seconds)

    def wait_for_tagged_run(
        self, job: str, tags: Mapping[str, str], timeout_seconds: float = RUN_TIMEOUT_SECONDS
    ) -> RunView:
        """The one run of `job` carrying `tags`, once it has finished (a sensor launches it later)."""
        deadline = time.monotonic() + timeout_seconds

        def launched() -> RunView | None:
            found = self.runs(job, tags)
            if len(found) > 1:
                raise AssertionError(f"{len(found)} runs of {job} carry {dict(tags)}: {found}")
            return found[0] if found else None

        run = wait_until(f"a run of {job} tagged {dict(tags)}", launched, timeout_seconds)
        return self.wait_for_run(run.run_id, max(1.0, deadline - time.monotonic()))

    def sensor_ticks(self, sensor: str, after: float | None = None) -> list[TickView]:
        """The sensor's ticks, newest first, after a moment when given."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": sensor}
        found = self.graphql(TICKS_QUERY, selector=selector, after=after)["sensorOrError"]
        if found["__typename"] != "Sensor":
            raise AssertionError(f"no sensor {sensor}: {found['__typename']}")
        return [
            TickView(
                tick_id=tick["tickId"],
                status=tick["status"],
                timestamp=tick["timestamp"],
                run_ids=tuple(tick["runIds"]),
                run_keys=tuple(tick["runKeys"]),
                skip_reason=tick["skipReason"],
            )
            for tick in found["sensorState"]["ticks"]
        ]

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's event log: each event's type and message."""
        return self.graphql(EVENTS_QUERY, runId=run_id)["logsForRun"]["events"]

    def step_statuses(self, run_id: str) -> dict[str, str]:
        """Each step that started: its final status."""
        stats = self.graphql(STEP_STATS_QUERY, runId=run_id)["runOrError"]["stepStats"]
        return {step["stepKey"]: step["status"] for step in stats}

    def materializations(self, run_id: str) -> dict[str, dict[str, object]]:
        """Each asset the run materialized, with its text and integer metadata."""
        events = self.graphql(MATERIALIZATIONS_QUERY, runId=run_id)["runOrError"]["assetMaterializations"]
        return {
            "/".join(e["assetKey"]["path"]): {
                m["label"]: m.get("text", m.get("intValue"))
                for m in e["metadataEntries"]
                if "text" in m or "intValue" in m
            }
            for e in events
        }

    def run_worker_pid(self, run_id: str) -> int:
        """The pid of the process executing the run, as the run worker records it when it starts."""
        pids = [
            int(match.group(1))
            for event in self.run_events(run_id)
            if (match := WORKER_PID.search(event.get("message") or ""))
        ]
        if len(pids) != 1:
            raise AssertionError(f"run {run_id} records {len(pids)} worker processes, not one: {pids}")
        return pids[0]


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The command in a process group of its own (stopped with its code servers and run workers), its
    output appended to log."""
    with log.open("ab") as out:
        return start_group(command, env, cwd=REPO, output=out)


@contextmanager
def _process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The command started afresh (see `_start`), stopped by group at the end."""
    log.unlink(missing_ok=True)
    process = _start(command, env, log)
    try:
        yield process
    finally:
        stop_group(process)


@dataclass
class Daemon:
    """The deployment's dagster-daemon, which a test may kill -9 and start again."""

    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]
    killed_groups: list[int] = field(default_factory=list)

    def kill(self) -> None:
        """SIGKILL to the daemon process alone, as when it crashes: the code servers it started stay up
        until their runs end, as they do in a deployment."""
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self.killed_groups.append(self.process.pid)

    def restart(self) -> None:
        """Start the daemon again, as a supervisor would after a crash."""
        if self.process.poll() is None:
            raise AssertionError("the daemon is still running: kill it first")
        self.process = _start(self.command, self.env, self.log)

    def stop(self) -> None:
        """Stop the daemon and whatever its killed predecessors left behind."""
        stop_group(self.process)
        for group in self.killed_groups:
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _wait_until_serving(ui: DagsterUi, processes: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> None:
    """Until /server_info answers and the code location has loaded; fail early when a process exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        for name, (process, log) in processes.items():
            if process.poll() is not None:
                raise DeploymentError(f"{name} exited with {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{ui.url}/server_info", timeout=2).status_code == 200:
                entries = ui.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
                (entry,) = [e for e in entries if e["name"] == LOCATION]
                loaded = entry["locationOrLoadError"]
                if loaded and loaded["__typename"] == "PythonError":
                    raise DeploymentError(f"code location {LOCATION} failed to load: {loaded['message']}")
                if entry["loadStatus"] == "LOADED" and loaded:
                    return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise DeploymentError(
                f"dagster-webserver did not serve {LOCATION} within {STARTUP_TIMEOUT_SECONDS}s"
            )
        time.sleep(0.25)


@contextmanager
def running_deployment(env: dict[str, str], logs: Path) -> Iterator[DagsterUi]:
    """The webserver on a free loopback port and the daemon, both on workspace.yaml, until the block ends.

    `env` must carry DAGSTER_HOME (with its dagster.yaml) and whatever the pipeline reads.
    """
    with _running_services(env, logs) as (ui, _daemon):
        yield ui


@contextmanager
def _running_services(env: dict[str, str], logs: Path) -> Iterator[tuple[DagsterUi, Daemon]]:
    port = free_port()
    ui = DagsterUi(url=f"http://127.0.0.1:{port}")
    bin_dir = Path(sys.executable).parent  # the virtualenv running the tests: .venv/bin under make
    webserver = [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1"]
    commands = {
        "dagster-webserver": [*webserver, "-p", str(port)],
        "dagster-daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"],
    }
    logs.mkdir(parents=True, exist_ok=True)
    # The schema first, as a deployment does before starting its services: the webserver and the daemon
    # both create it when they find an empty database, and at once they can collide.
    migrate = subprocess.run(
        [str(bin_dir / "dagster"), "instance", "migrate"], cwd=REPO, env=env, capture_output=True, text=True
    )
    if migrate.returncode != 0:
        raise DeploymentError(f"dagster instance migrate failed:\n{migrate.stdout}{migrate.stderr}")
    daemon_command = commands.pop("dagster-daemon")
    with ExitStack() as stack:
        processes = {}
        for name, command in commands.items():
            log = logs / f"{name}.log"
            processes[name] = (stack.enter_context(_process(command, env, log)), log)
        daemon_log = logs / "dagster-daemon.log"
        daemon_log.unlink(missing_ok=True)
        daemon = Daemon(daemon_command, env, daemon_log, _start(daemon_command, env, daemon_log))
        stack.callback(daemon.stop)
        processes["dagster-daemon"] = (daemon.process, daemon_log)
        _wait_until_serving(ui, processes)
        yield ui, daemon


@dataclass
class Deployment:
    """A running deployment, and what it runs on: one database for Dagster's storage and the ledger."""

    ui: DagsterUi
    env: dict[str, str]
    database_url: str
    daemon: Daemon


@contextmanager
def deployment_on_fresh_database(
    server: URL, pipeline_env: Mapping[str, str], home: Path, logs: Path
) -> Iterator[Deployment]:
    """deploy/dagster.yaml on a new database of `server`, the ledger beside Dagster's tables, dropped after.

    `pipeline_env` is what the pipeline reads (providers, definitions, settings); NTHLAYER_LEDGER_URL is
    set here.
    """
    with fresh_database(server, prefix="nthlayer_e2e") as database:
        url = render(database)
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            **pipeline_env,
            "NTHLAYER_LEDGER_URL": url,
            "DAGSTER_HOME": str(home),
            "DAGSTER_POSTGRES_URL": url,
        }
        with _running_services(env, logs=logs) as (ui, daemon):
            yield Deployment(ui=ui, env=env, database_url=url, daemon=daemon)
