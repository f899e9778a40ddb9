"""`nthlayer demo`: the sandbox, a first refresh, then the Dagster webserver and daemon, stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from nthlayer_pipelines.processes import start_group, stop_group

INSTANCE_YAML = """\
# The embedded default: SQLite storage under DAGSTER_HOME. deploy/dagster.yaml is the Postgres one.
telemetry:
  enabled: false
nux:
  enabled: false
"""


def demo_environment(sandbox_url: str, dagster_home: Path) -> dict[str, str]:
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
        }
    )
    environ.setdefault("PAGERDUTY_API_TOKEN", DEFAULT_PAGERDUTY_TOKEN)
    environ.setdefault("CORTEX_API_TOKEN", DEFAULT_CORTEX_TOKEN)
    environ.setdefault("SLACK_BOT_TOKEN", DEFAULT_SLACK_TOKEN)
    environ.setdefault("NTHLAYER_DEFINITIONS", "examples/org")
    environ.setdefault("NTHLAYER_SLACK_CHANNEL", "ops-changes")
    return environ


def _wait_for(url: str, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f} s")


def run_demo(*, webserver_port: int, sandbox_port: int, seed: str) -> int:
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    environ = demo_environment(sandbox_url, dagster_home)
    bin_dir = Path(sys.executable).parent
    processes: list[subprocess.Popen[bytes]] = []

    def stop_on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Installed for SIGINT too: a demo started in the background inherits SIGINT ignored, and Ctrl-C (or
    # `kill -INT`) must still stop everything.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_on_signal)
    try:
        processes.append(
            start_group(
                [str(bin_dir / "nthlayer"), "sandbox", "--seed", seed, "--port", str(sandbox_port)], environ
            )
        )
        _wait_for(f"{sandbox_url}/_admin/health", timeout=30, what="the sandbox")
        print("first refresh: snapshots, divergences and plan ...", flush=True)
        subprocess.run(
            [
                str(bin_dir / "dagster"),
                "job",
                "execute",
                "-m",
                "nthlayer_pipelines.definitions",
                "-j",
                "refresh",
            ],
            env=environ,
            check=True,
        )
        processes.append(
            start_group(
                [
                    str(bin_dir / "dagster-webserver"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(webserver_port),
                    "-w",
                    "workspace.yaml",
                ],
                environ,
            )
        )
        processes.append(
            start_group([str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"], environ)
        )
        _wait_for(f"http://127.0.0.1:{webserver_port}/server_info", timeout=120, what="the Dagster webserver")
        print(
            f"\nnthlayer demo is up:\n"
            f"  Dagster UI   http://127.0.0.1:{webserver_port}  (assets, lineage, the plan in change_plan)\n"
            f"  Sandbox      {sandbox_url}  (request log at {sandbox_url}/_admin/requests)\n"
            f"  DAGSTER_HOME {dagster_home}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while all(p.poll() is None for p in processes):
            time.sleep(1)
        failed = next(p for p in processes if p.poll() is not None)
        print(f"{failed.args[0]} exited with {failed.returncode}; stopping the demo", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    finally:
        for process in reversed(processes):
            stop_group(process)
