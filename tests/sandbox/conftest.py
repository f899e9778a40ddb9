"""A small org every sandbox test can start from, served over loopback."""

from collections.abc import Iterator

import httpx
import pytest
from sandbox_seed import CORTEX_TOKEN, PAGERDUTY_TOKEN, TOKENS, seeded_org

from nthlayer_pipelines.sandbox import RunningSandbox, SandboxOrg, running_sandbox


@pytest.fixture
def org() -> SandboxOrg:
    return seeded_org()


@pytest.fixture
def sandbox(org: SandboxOrg) -> Iterator[RunningSandbox]:
    with running_sandbox(org, tokens=TOKENS) as running:
        yield running


@pytest.fixture
def pd(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    """An HTTP client for the PagerDuty emulator with the right token."""
    headers = {
        "Authorization": f"Token token={PAGERDUTY_TOKEN}",
        "Accept": "application/vnd.pagerduty+json;version=2",
    }
    with httpx.Client(base_url=sandbox.pagerduty_url, headers=headers) as client:
        yield client


@pytest.fixture
def cortex(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sandbox.cortex_url, headers={"Authorization": f"Bearer {CORTEX_TOKEN}"}
    ) as client:
        yield client
