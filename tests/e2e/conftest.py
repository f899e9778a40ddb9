"""Fixtures of the end-to-end tests: the example sandbox, the deployment on Postgres, and Chromium.

Each is started once per module: every start-up costs seconds. Tests that need a deployment of their own
create a database on `postgres_server_url` (see `deployment.deployment_on_fresh_database`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy.engine import URL

from nthlayer_pipelines.sandbox import (
    DEFAULT_CORTEX_TOKEN,
    DEFAULT_PAGERDUTY_TOKEN,
    DEFAULT_SLACK_TOKEN,
    RunningSandbox,
    load_seed,
    running_sandbox,
)
from tests.e2e.deployment import DagsterUi, DeploymentError, running_deployment
from tests.postgres import (
    PostgresUnavailable,
    postgres_server,
    postgres_url,  # noqa: F401 (a fixture)
)
from tests.support import ARTIFACTS, EXAMPLE_DEFINITIONS, EXAMPLE_SEED, REPO, pipeline_environment

E2E_ARTIFACTS = ARTIFACTS / "e2e"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def e2e_sandbox() -> Iterator[RunningSandbox]:
    """The example sandbox for the whole module, accepting the documented default tokens."""
    tokens = {
        "pagerduty": DEFAULT_PAGERDUTY_TOKEN,
        "cortex": DEFAULT_CORTEX_TOKEN,
        "slack": DEFAULT_SLACK_TOKEN,
    }
    with running_sandbox(load_seed(EXAMPLE_SEED), tokens=tokens) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[URL]:
    """The admin URL of a PostgreSQL server where each deployment creates a database of its own."""
    failure = None
    try:
        with postgres_server() as server:
            yield server
    except PostgresUnavailable as error:
        failure = str(error)  # reported outside the handler, so the message is shown once
    if failure:
        pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="module")
def dagster_ui(
    e2e_sandbox: RunningSandbox,
    postgres_url: str,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DagsterUi]:
    """dagster-webserver and dagster-daemon on deploy/dagster.yaml and the test database."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        # No policy approvals: an apply and the refresh after it would replace the plan a test approves.
        # The whole example org, its services with its teams: the UI shows every kind.
        **pipeline_environment(
            e2e_sandbox,
            home,
            NTHLAYER_LEDGER_URL=postgres_url,
            NTHLAYER_PRE_APPROVED_KINDS="",
            NTHLAYER_DEFINITIONS=str(EXAMPLE_DEFINITIONS),
        ),
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": postgres_url,
    }
    failure = None
    try:
        with running_deployment(env, logs=E2E_ARTIFACTS) as ui:
            yield ui
    except DeploymentError as error:
        failure = str(error)  # reported outside the handler, so the message is shown once
    if failure:
        pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright: a browser downloaded by a test tool is never used."""
    executable = os.environ.get("NTHLAYER_CHROMIUM", "/usr/bin/chromium")
    if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
        pytest.fail(
            f"Chromium is missing at {executable}: run `make browser` (installs Debian's chromium where "
            "it can), or `sudo apt-get install chromium`, or set NTHLAYER_CHROMIUM to a Chromium binary.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def _page(browser, width: int, height: int):
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser):
    # Large enough that the whole asset graph fits at full scale, where nodes show their names untruncated.
    with _page(browser, 2400, 1500) as opened:
        yield opened


@pytest.fixture
def laptop_page(browser):
    """A common laptop's window: what the UI must show whole."""
    with _page(browser, 1280, 1000) as opened:
        yield opened
