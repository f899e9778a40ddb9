"""`nthlayer sandbox --generate-teams N` in a process of its own, and its request log."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BENCH_TOKEN = "bench-pagerduty-token"
STARTUP_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class SandboxProcess:
    url: str
    pid: int

    @property
    def pagerduty_url(self) -> str:
        return f"{self.url}/pagerduty"

    def clear_requests(self) -> None:
        httpx.delete(f"{self.url}/_admin/requests").raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/_admin/requests", params={"provider": "pagerduty"}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body["dropped"]:
            raise RuntimeError(f"the sandbox's request log dropped {body['dropped']} entries")
        return body["requests"]

    def state(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_admin/state", timeout=60)
        response.raise_for_status()
        return response.json()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nthlayer_command() -> list[str]:
    script = Path(sys.executable).with_name("nthlayer")
    if script.exists():
        return [str(script)]
    found = shutil.which("nthlayer")
    return [found] if found else [sys.executable, "-m", "nthlayer_pipelines.cli"]


@contextlib.contextmanager
def sandbox_process(
    teams: int,
    users: int,
    *,
    rate_limit: int,
    latency_ms: int,
    log: Path,
    seed: Path | None = None,
) -> Iterator[SandboxProcess]:
    """Serve a generated org of `teams` teams (10 members each) and `users` users, or the org of a seed
    file when `seed` is given, until the block ends; the server's output goes to `log`."""
    port = _free_port()
    org = ["--seed", str(seed)] if seed else ["--generate-teams", str(teams), "--generate-users", str(users)]
    command = [
        *_nthlayer_command(),
        "sandbox",
        *org,
        "--port",
        str(port),
        "--rate-limit",
        str(rate_limit),
        "--latency-ms",
        str(latency_ms),
    ]
    environ = {**os.environ, "PAGERDUTY_API_TOKEN": BENCH_TOKEN}
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=environ, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the sandbox exited with {process.returncode}; see {log}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/_admin/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not answer within {STARTUP_TIMEOUT_SECONDS:.0f} s")
            time.sleep(0.1)
        yield SandboxProcess(url, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
