"""Serve the sandbox: blocking (`serve`), in a background thread (`running_sandbox`), or for the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette

from nthlayer_pipelines.sandbox.app import create_app, sandbox_state
from nthlayer_pipelines.sandbox.core import DEFAULT_TOKENS, TOKEN_ENV_VARS, HookRegistry, SandboxSettings
from nthlayer_pipelines.sandbox.faults import load_plan
from nthlayer_pipelines.sandbox.generate import DEFAULT_MEMBERS_PER_TEAM, generate_org
from nthlayer_pipelines.sandbox.injection import FaultInjector
from nthlayer_pipelines.sandbox.org import SandboxOrg
from nthlayer_pipelines.sandbox.seed import load_seed

_STARTUP_TIMEOUT_SECONDS = 10.0


class _BackgroundServer(uvicorn.Server):
    """A uvicorn server that stops as soon as asked, rather than at its next 0.1 s tick."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own shutdown sleeps 0.1 s before it even looks; tests start and stop many servers.
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 5)
        while (self.server_state.connections or self.server_state.tasks) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for task in self.server_state.tasks:
            task.cancel()
        for server in self.servers:
            await server.wait_closed()

    def stop(self) -> None:
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop may have closed already
                loop.call_soon_threadsafe(wake.set)


def serve(app: Starlette, host: str = "127.0.0.1", port: int = 8787) -> None:
    """Serve until interrupted."""
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")


@dataclass
class RunningSandbox:
    """A sandbox served in this process; its base URLs follow each provider's client conventions."""

    app: Starlette
    url: str

    @property
    def pagerduty_url(self) -> str:
        return f"{self.url}/pagerduty"

    @property
    def cortex_url(self) -> str:
        return f"{self.url}/cortex"

    @property
    def slack_url(self) -> str:
        # slack_sdk joins method names onto a base URL ending in "/api/".
        return f"{self.url}/slack/api/"

    @property
    def state(self) -> SandboxOrg:
        """The live org: change it to create drift."""
        return sandbox_state(self.app).org

    @property
    def settings(self) -> SandboxSettings:
        return sandbox_state(self.app).settings

    @property
    def hooks(self) -> HookRegistry:
        return sandbox_state(self.app).hooks

    @property
    def faults(self) -> FaultInjector:
        """The fault plan in force and what it injected: `faults.set_plan(...)`, `faults.injected()`."""
        return sandbox_state(self.app).faults

    @property
    def tokens(self) -> dict[str, str]:
        return dict(sandbox_state(self.app).tokens)

    def requests(self, provider: str | None = None, method: str | None = None) -> list[dict[str, Any]]:
        """The request log, oldest first."""
        return sandbox_state(self.app).log.entries(provider=provider, method=method)

    def clear_requests(self) -> None:
        sandbox_state(self.app).log.clear()


@contextlib.contextmanager
def running_sandbox(org: SandboxOrg, *, port: int = 0, **create_app_kwargs: Any) -> Iterator[RunningSandbox]:
    """Serve `org` on a loopback port in a background thread until the block ends: a free one, or `port`
    (the port an earlier sandbox used, to start another on the same URL)."""
    app = create_app(org, **create_app_kwargs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5
    )
    server = _BackgroundServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sandbox", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.005)
        yield RunningSandbox(app, f"http://127.0.0.1:{port}")
    finally:
        server.stop()
        thread.join(timeout=_STARTUP_TIMEOUT_SECONDS)
        sock.close()


def run_cli(
    seed: str | None,
    generate_teams: int | None,
    host: str = "127.0.0.1",
    port: int = 8787,
    rate_limit: int = 960,
    latency_ms: float = 0,
    generate_users: int | None = None,
    faults_file: str | None = None,
    generate_members: int | None = None,
) -> None:
    """Build the org from a seed file or a generated size, print how to point the pipeline at it, serve."""
    if (seed is None) == (generate_teams is None):
        raise ValueError("give exactly one of a seed file or a number of teams to generate")
    if generate_users is not None and generate_teams is None:
        raise ValueError("a number of users goes with a number of teams to generate")
    if seed is not None:
        org = load_seed(seed)
    else:
        members = DEFAULT_MEMBERS_PER_TEAM if generate_members is None else generate_members
        org = generate_org(int(generate_teams or 0), members, users=generate_users)
    faults = load_plan(faults_file) if faults_file else None
    app = create_app(org, rate_limit=rate_limit, latency_ms=latency_ms, faults=faults)
    tokens = sandbox_state(app).tokens
    url = f"http://{host}:{port}"
    print(f"Sandbox on {url}")
    on_teams = len({u for members in org.pagerduty.memberships.values() for u in members})
    print(
        f"  PagerDuty  {url}/pagerduty  (account {org.pagerduty.html_base}: "
        f"{len(org.pagerduty.users)} users, {on_teams} on teams)"
    )
    print(f"  Cortex     {url}/cortex")
    print(f"  Slack      {url}/slack/api/")
    print(f"  Admin      {url}/_admin/requests  {url}/_admin/state  {url}/_admin/faults")
    if faults is not None:
        print(f"Fault plan from {faults_file}: {len(faults.rules)} rule(s), seed {faults.seed}")
    print("Point the pipeline at it:")
    print(f"  export PAGERDUTY_API_URL={url}/pagerduty")
    print(f"  export CORTEX_API_URL={url}/cortex")
    print(f"  export SLACK_API_URL={url}/slack/api/")
    for provider, variable in TOKEN_ENV_VARS.items():
        if tokens[provider] == DEFAULT_TOKENS[provider]:
            print(f"  export {variable}={tokens[provider]}")
        else:
            # Never echo a token that came from the environment.
            print(f"  # {variable}: the value already in your environment")
    sys.stdout.flush()
    serve(app, host=host, port=port)
