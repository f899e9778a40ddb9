"""dagster-webserver and dagster-daemon run as a deployment runs them, as subprocesses of the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.postgres import free_port
from tests.support import REPO

LOCATION = "nthlayer_pipelines"
STARTUP_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 15


class DeploymentError(RuntimeError):
    """The webserver or the daemon did not come up."""


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


@contextmanager
def _process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The command in a process group of its own with default signal handling, stopped by group at the end.

    Stopping the group stops its children too (code servers, run workers), and restored signal handling
    means SIGTERM works even when the test runner was started with signals ignored.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            restore_signals=True,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group, then SIGKILL to whatever of it is left: the leader or children it left behind."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT_SECONDS)


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
    with ExitStack() as stack:
        processes = {}
        for name, command in commands.items():
            log = logs / f"{name}.log"
            processes[name] = (stack.enter_context(_process(command, env, log)), log)
        _wait_until_serving(ui, processes)
        yield ui
