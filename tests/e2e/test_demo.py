"""`nthlayer demo` as a user runs it: busy ports refused before anything starts, a restart that shows the
plan `nthlayer plan` shows, a process that dies named, and `make demo` passing ARGS.

Each demo gets its own DAGSTER_HOME and free ports; whatever it started is found by that DAGSTER_HOME in
/proc, so a test can assert nothing is left (and kills what is, so a failure leaves nothing running).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from nthlayer_pipelines.processes import start_group, stop_group
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.sandbox import DEFAULT_CORTEX_TOKEN, DEFAULT_PAGERDUTY_TOKEN
from tests.e2e.deployment import wait_until
from tests.postgres import free_port
from tests.support import REPO

NTHLAYER = Path(sys.executable).parent / "nthlayer"
UP = "nthlayer demo is up"
# A start on two busy cores: the first refresh and the webserver each take tens of seconds here.
START_TIMEOUT_SECONDS = 240
CHANGE_PLAN_QUERY = """query { assetOrError(assetKey: {path: ["change_plan"]}) { ... on Asset {
    assetMaterializations(limit: 1) { runId metadataEntries { label ... on TextMetadataEntry { text } } }
} } }"""


def demo_processes(home: Path) -> list[int]:
    """Processes (not yet reaped zombies aside) whose environment names this DAGSTER_HOME: everything a
    demo on it started, whichever process group it ended up in."""
    needle = f"DAGSTER_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def assert_nothing_left(home: Path) -> None:
    """No process of the demo survives it; any that did is killed (so the machine is left clean) and
    the test fails."""
    left = wait_until_gone(home)
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the demo on {home} still running: {left}"


def wait_until_gone(home: Path, timeout_seconds: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout_seconds
    while (left := demo_processes(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def clean_env() -> dict[str, str]:
    """The tests' environment without any nthlayer or Dagster setting a developer may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("NTHLAYER_", "DAGSTER_"))}


def demo_env(home: Path, **overrides: str) -> dict[str, str]:
    return {**clean_env(), "DAGSTER_HOME": str(home), **overrides}


class _Answers200(BaseHTTPRequestHandler):
    """Anything that happens to answer HTTP on a port: a 200 with an empty JSON object to every GET."""

    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        body = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_server_on_a_port() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers200)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_demo_to_exit(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(NTHLAYER), "demo", *args],
            cwd=REPO,
            env=demo_env(home),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS,
        )
    finally:
        assert_nothing_left(home)


@pytest.mark.parametrize(
    ("busy", "flag"), [("sandbox", "--sandbox-port"), ("webserver", "--port")], ids=["sandbox", "webserver"]
)
def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path, busy: str, flag: str) -> None:
    home = tmp_path / "home"
    with http_server_on_a_port() as server:
        taken = server.server_address[1]
        ports = {"sandbox": free_port(), "webserver": free_port(), busy: taken}
        result = run_demo_to_exit(
            home, "--port", str(ports["webserver"]), "--sandbox-port", str(ports["sandbox"])
        )
        assert server.paths == [], f"the demo talked to what answers on port {taken}: {server.paths}"
    assert result.returncode == 1, result.stderr
    assert f"port {taken}" in result.stderr and flag in result.stderr, result.stderr
    assert UP not in result.stdout
    assert "first refresh" not in result.stdout
    assert not home.exists(), "the demo touched DAGSTER_HOME before refusing"


@dataclass
class RunningDemo:
    process: subprocess.Popen[bytes]
    home: Path
    log: Path
    webserver_url: str
    sandbox_url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, line: str) -> None:
        """Until the demo prints `line`."""

        def printed() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the demo exited ({self.process.returncode}):\n{self.output()[-4000:]}")
            return line in self.output()

        wait_until(f"the demo to print {line!r}", printed, START_TIMEOUT_SECONDS)

    def wait_until_up(self) -> None:
        self.wait_for(UP)

    def interrupt(self) -> int:
        """Ctrl-C, as a user stops it."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)

    def ledger(self) -> Ledger:
        return Ledger(f"sqlite:///{self.home / 'nthlayer-ledger.db'}")


@contextmanager
def running_demo(home: Path, log: Path, **env: str) -> Iterator[RunningDemo]:
    webserver_port, sandbox_port = free_port(), free_port()
    with log.open("wb") as out:
        process = start_group(
            [str(NTHLAYER), "demo", "--port", str(webserver_port), "--sandbox-port", str(sandbox_port)],
            demo_env(home, **env),
            cwd=REPO,
            output=out,
        )
    demo = RunningDemo(
        process, home, log, f"http://127.0.0.1:{webserver_port}", f"http://127.0.0.1:{sandbox_port}"
    )
    try:
        yield demo
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        stop_group(process)
        assert_nothing_left(home)


def ui_plan_id(webserver_url: str) -> str:
    """The plan id the UI shows on the change_plan asset's latest materialization."""
    response = httpx.post(f"{webserver_url}/graphql", json={"query": CHANGE_PLAN_QUERY}, timeout=30)
    response.raise_for_status()
    (latest,) = response.json()["data"]["assetOrError"]["assetMaterializations"]
    return next(m["text"] for m in latest["metadataEntries"] if m["label"] == "plan_id")


def cli_plan(sandbox_url: str) -> dict[str, object]:
    """`nthlayer plan --json` against the demo's sandbox, as a user runs it beside the demo."""
    env = {
        **clean_env(),
        "PAGERDUTY_API_URL": f"{sandbox_url}/pagerduty",
        "PAGERDUTY_API_TOKEN": DEFAULT_PAGERDUTY_TOKEN,
        "CORTEX_API_URL": f"{sandbox_url}/cortex",
        "CORTEX_API_TOKEN": DEFAULT_CORTEX_TOKEN,
        "NTHLAYER_DEFINITIONS": "examples/org",
    }
    result = subprocess.run(
        [str(NTHLAYER), "plan", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr  # drift
    return json.loads(result.stdout)


def test_a_restarted_demo_shows_the_plan_nthlayer_plan_shows(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # First start: the policy's additions are applied by the sensor, and the refresh after the apply
    # stores a snapshot that has them.
    with running_demo(home, tmp_path / "first.log", NTHLAYER_SENSOR_INTERVAL_SECONDS="5") as first:
        first.wait_until_up()
        with first.ledger() as ledger:
            seeded_plan = ledger.latest_plan_id()

        def refreshed_after_apply() -> bool:
            with first.ledger() as ledger:
                applied = [row for row in ledger.audit() if row.status == "applied"]
                return bool(applied) and ledger.latest_plan_id() != seeded_plan

        # The snapshot is stored before the plan is recorded: a new plan means the snapshot has them.
        try:
            wait_until("the sensor's apply and the refresh after it", refreshed_after_apply, 300)
        except AssertionError as error:
            raise AssertionError(f"{error}:\n{first.output()[-6000:]}") from None
        assert first.interrupt() == 0, first.output()[-4000:]

    # Second start on the same DAGSTER_HOME, its sandbox seeded anew. No policy this time, so the plan
    # the first refresh records stays the latest while it is compared.
    with running_demo(home, tmp_path / "second.log", NTHLAYER_PRE_APPROVED_KINDS="") as second:
        second.wait_until_up()
        expected = cli_plan(second.sandbox_url)
        assert ui_plan_id(second.webserver_url) == expected["plan_id"]
        with second.ledger() as ledger:
            plan = ledger.get_plan(ledger.latest_plan_id() or "")
        assert plan is not None
        assert [c.id for c in plan.changes] == [c["id"] for c in expected["changes"]]  # type: ignore[index]
        assert second.interrupt() == 0


@pytest.mark.parametrize(
    ("program", "name", "when"),
    [
        ("dagster-daemon", "dagster-daemon", UP),
        # During the first refresh: the refresh fails then too, and the message says why.
        ("nthlayer", "the sandbox", "first refresh:"),
    ],
    ids=["daemon", "sandbox"],
)
def test_a_process_that_dies_is_named(tmp_path: Path, program: str, name: str, when: str) -> None:
    home = tmp_path / "home"
    with running_demo(home, tmp_path / "demo.log") as demo:
        demo.wait_for(when)
        # The demo itself is an `nthlayer` group leader too; the sandbox is the other one.
        victims = [
            pid for pid in demo_processes(home) if pid != demo.process.pid and pid == _leader_if(pid, program)
        ]
        assert len(victims) == 1, victims
        os.kill(victims[0], signal.SIGKILL)
        assert demo.process.wait(timeout=60) == 1
        output = demo.output()
    assert f"{name} exited (killed by SIGKILL); stopping the demo" in output, output[-4000:]
    assert "exited with -" not in output


def _leader_if(pid: int, program: str) -> int | None:
    with suppress(OSError):
        argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        if any(Path(arg.decode()).name == program for arg in argv[:2]) and os.getpgid(pid) == pid:
            return pid
    return None


def test_make_demo_passes_args() -> None:
    result = subprocess.run(
        ["make", "-n", "demo", "ARGS=--port 3001 --sandbox-port 8788"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "nthlayer demo --port 3001 --sandbox-port 8788" in result.stdout
