"""`nthlayer demo`: the sandbox, a first refresh, then the Dagster webserver and daemon, stopped together.

Every start is a fresh start: the sandbox is seeded anew, so DAGSTER_HOME (runs, sensor cursors, the
ledger with its stored snapshot) is emptied too. A ledger kept from a previous sandbox would plan from
that sandbox's state, and the UI would show a plan `nthlayer plan` contradicts.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from nthlayer_pipelines.processes import start_group, stop_group
from nthlayer_pipelines.ui_links import LINEAGE_EXPANDED_PATH

INSTANCE_YAML = """\
# The embedded default: SQLite storage under DAGSTER_HOME. deploy/dagster.yaml is the Postgres one.
telemetry:
  enabled: false
nux:
  enabled: false
# The clients' warnings (each retry, Slack refusing a message) in the run's event log, beside its steps.
python_logs:
  managed_python_loggers: [nthlayer_pipelines]
"""
# What earlier demos wrote: a home holding one of these (and no lock file) is a demo's too.
EARLIER_INSTANCE_YAMLS = (
    """\
# The embedded default: SQLite storage under DAGSTER_HOME. deploy/dagster.yaml is the Postgres one.
telemetry:
  enabled: false
nux:
  enabled: false
""",
)
# Held (flock) by a running demo, and the sign that a DAGSTER_HOME is the demo's to empty.
HOME_LOCK = "nthlayer-demo.lock"
LEDGER_FILE = "nthlayer-ledger.db"
HOST = "127.0.0.1"
# The run's events are all stored as usual; only the terminal is spared Dagster's DEBUG event lines.
QUIET_REFRESH_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
SANDBOX_TIMEOUT_SECONDS = 120
WEBSERVER_TIMEOUT_SECONDS = 180


class DemoError(Exception):
    """The demo cannot start, or went down: the message says why and what to do."""


@dataclass(frozen=True)
class Child:
    """A process of the demo, with the name its messages give it."""

    name: str
    process: subprocess.Popen[bytes]

    def exited(self) -> str | None:
        """ "<name> exited (code N)" once it has exited, else None."""
        code = self.process.poll()
        return None if code is None else f"{self.name} exited ({describe_exit(code)})"


def describe_exit(returncode: int) -> str:
    """`code 1`, or `killed by SIGKILL` for Popen's negative return codes."""
    if returncode >= 0:
        return f"code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def _port_problem(port: int) -> str | None:
    """Why the demo cannot listen on HOST:port, or None when it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds (the sandbox and the webserver both serve with it): a connection of a stopped
        # demo left in TIME_WAIT does not hold the port, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return "in use"
            return f"not available ({error.strerror})"
    return None


def check_ports(*, webserver_port: int, sandbox_port: int) -> None:
    """Refuse, before anything starts, ports the webserver or the sandbox could not listen on: otherwise
    the first refresh or the UI check would talk to whatever already answers there."""
    if webserver_port == sandbox_port:
        raise DemoError(
            f"--port and --sandbox-port are both {webserver_port}: the Dagster webserver and the sandbox "
            "need a port each"
        )
    problems = []
    for port, whose, flag in (
        (sandbox_port, "the sandbox", "--sandbox-port"),
        (webserver_port, "the Dagster webserver", "--port"),
    ):
        problem = _port_problem(port)
        if problem:
            problems.append(
                f"port {port} for {whose} is {problem}: choose another with {flag} "
                f'(make demo ARGS="{flag} N")'
            )
    if problems:
        raise DemoError("\n".join(problems))


def _is_demo_home(home: Path) -> bool:
    """Empty, or made by the demo: its lock file, or (a home from before the lock file) the demo's
    dagster.yaml. Anything else may be someone's instance, which the demo must never empty."""
    if not any(home.iterdir()):
        return True
    if (home / HOME_LOCK).exists():
        return True
    instance = home / "dagster.yaml"
    return instance.is_file() and instance.read_text() in (INSTANCE_YAML, *EARLIER_INSTANCE_YAMLS)


def claim_fresh_home(home: Path) -> IO[str]:
    """Lock DAGSTER_HOME for this demo and empty it; returns the open lock file (held until closed)."""
    home.mkdir(parents=True, exist_ok=True)
    if not _is_demo_home(home):
        raise DemoError(
            f"DAGSTER_HOME {home} holds something the demo did not create, and each demo starts by "
            "emptying its DAGSTER_HOME: unset DAGSTER_HOME (the demo then uses .dagster_home/) or point it "
            "at an empty folder"
        )
    lock = (home / HOME_LOCK).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DemoError(
            f"another nthlayer demo is running on DAGSTER_HOME {home}: stop it first, or give this one "
            "a DAGSTER_HOME of its own"
        ) from None
    for entry in home.iterdir():
        if entry.name == HOME_LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    return lock


def demo_environment(sandbox_url: str, dagster_home: Path, webserver_port: int) -> dict[str, str]:
    from nthlayer_pipelines.sandbox import (
        DEFAULT_CORTEX_TOKEN,
        DEFAULT_PAGERDUTY_TOKEN,
        DEFAULT_SLACK_TOKEN,
    )

    environ = dict(os.environ)
    environ.update(
        {
            "DAGSTER_HOME": str(dagster_home),
            "PAGERDUTY_API_URL": f"{sandbox_url}/pagerduty",
            "CORTEX_API_URL": f"{sandbox_url}/cortex",
            "SLACK_API_URL": f"{sandbox_url}/slack/api/",
            # The demo's own ledger, emptied with its DAGSTER_HOME; never one NTHLAYER_LEDGER_URL names.
            "NTHLAYER_LEDGER_URL": f"sqlite:///{dagster_home / LEDGER_FILE}",
            # Slack's run links point at this demo's webserver, whatever --port is.
            "NTHLAYER_DAGSTER_URL": f"http://{HOST}:{webserver_port}",
        }
    )
    environ.setdefault("PAGERDUTY_API_TOKEN", DEFAULT_PAGERDUTY_TOKEN)
    environ.setdefault("CORTEX_API_TOKEN", DEFAULT_CORTEX_TOKEN)
    environ.setdefault("SLACK_BOT_TOKEN", DEFAULT_SLACK_TOKEN)
    environ.setdefault("NTHLAYER_DEFINITIONS", "examples/org")
    environ.setdefault("NTHLAYER_SLACK_CHANNEL", "ops-changes")
    return environ


def _first_exit(children: Sequence[Child]) -> str | None:
    return next((message for child in children if (message := child.exited())), None)


def _stopping(message: str) -> DemoError:
    return DemoError(f"{message}; stopping the demo")


def _wait_until_serving(
    child: Child, url: str, *, timeout: float, others: Sequence[Child], flag: str
) -> None:
    """Until `url` answers while `child` runs: an answer after `child` exited came from someone else."""
    deadline = time.monotonic() + timeout
    while True:
        if message := _first_exit(others):
            raise _stopping(message)
        if message := child.exited():
            raise _stopping(
                f"{message} before it answered at {url} (if the port was taken, choose another with {flag})"
            )
        try:
            if httpx.get(url, timeout=2).status_code < 500 and child.process.poll() is None:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise DemoError(f"{child.name} did not answer at {url} within {timeout:.0f} s")
        time.sleep(0.3)


def _refresh_command(bin_dir: Path) -> list[str]:
    """`dg launch --job refresh`: Dagster's replacement for the superseded `dagster job execute` (1.13
    says so when it runs). It calls the same code: the `refresh` job executed in that process, on
    DAGSTER_HOME's instance, so the UI lists it as a run of `refresh`."""
    dg_cli = bin_dir / "dg"
    if not dg_cli.exists():
        raise DemoError(
            f"Dagster's dg CLI is not installed in {bin_dir.parent}: the demo runs its first refresh with "
            "`dg launch`; install the demo extra (pip install 'nthlayer-pipelines[demo]'; make demo does)"
        )
    return [
        str(dg_cli),
        "launch",
        "--job",
        "refresh",
        "-m",
        "nthlayer_pipelines.definitions",
        "--config-json",
        json.dumps(QUIET_REFRESH_CONFIG),
    ]


def run_demo(*, webserver_port: int, sandbox_port: int, seed: str) -> int:
    bin_dir = Path(sys.executable).parent
    children: list[Child] = []
    lock: IO[str] | None = None

    def stop_on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Installed for SIGINT too: a demo started in the background inherits SIGINT ignored, and Ctrl-C (or
    # `kill -INT`) must still stop everything.
    previous = {signum: signal.signal(signum, stop_on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}

    def start(name: str, command: list[str]) -> Child:
        child = Child(name, start_group(command, environ))
        children.append(child)
        return child

    try:
        check_ports(webserver_port=webserver_port, sandbox_port=sandbox_port)
        refresh_command = _refresh_command(bin_dir)
        dagster_home = Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve()
        lock = claim_fresh_home(dagster_home)
        sandbox_url = f"http://{HOST}:{sandbox_port}"
        webserver_url = f"http://{HOST}:{webserver_port}"
        environ = demo_environment(sandbox_url, dagster_home, webserver_port)

        sandbox = start(
            "the sandbox",
            [
                str(bin_dir / "nthlayer"),
                "sandbox",
                "--seed",
                seed,
                "--host",
                HOST,
                "--port",
                str(sandbox_port),
            ],
        )
        _wait_until_serving(
            sandbox,
            f"{sandbox_url}/_admin/health",
            timeout=SANDBOX_TIMEOUT_SECONDS,
            others=(),
            flag="--sandbox-port",
        )

        print("first refresh: snapshots, divergences and plan ...", flush=True)
        refresh = start("the first refresh", refresh_command)
        while refresh.process.poll() is None and sandbox.process.poll() is None:
            time.sleep(0.3)
        if message := sandbox.exited():
            raise _stopping(message)  # the refresh fails too then, for that reason
        children.remove(refresh)
        if refresh.process.returncode != 0:
            raise DemoError(f"{refresh.exited()}: its errors are above")

        webserver = start(
            "dagster-webserver",
            [
                str(bin_dir / "dagster-webserver"),
                "-h",
                HOST,
                "-p",
                str(webserver_port),
                "-w",
                "workspace.yaml",
            ],
        )
        _wait_until_serving(
            webserver,
            f"{webserver_url}/server_info",
            timeout=WEBSERVER_TIMEOUT_SECONDS,
            others=[sandbox],
            flag="--port",
        )
        # After the webserver answers: the daemon applies pre-approved changes, which should happen in a
        # demo the user can watch, never behind a webserver that failed to start.
        start("dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"])
        print(
            f"\nnthlayer demo is up:\n"
            f"  Dagster UI   {webserver_url}  (assets, lineage, the plan in change_plan)\n"
            f"  Lineage      {webserver_url}{LINEAGE_EXPANDED_PATH}  (every group open)\n"
            f"  Sandbox      {sandbox_url}  (request log at {sandbox_url}/_admin/requests)\n"
            f"  DAGSTER_HOME {dagster_home}  (emptied at each start: the sandbox starts from the seed)\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while not (message := _first_exit(children)):
            time.sleep(1)
        raise _stopping(message)
    except KeyboardInterrupt:
        return 0
    except DemoError as error:
        print(f"nthlayer demo: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second Ctrl-C while stopping must not leave the rest running.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        for child in reversed(children):
            stop_group(child.process)
        if lock is not None:
            lock.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
