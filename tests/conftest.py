"""Shared fixtures: the sandbox seeded with the example org, and the environment the pipeline reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nthlayer_pipelines.sandbox import load_seed, running_sandbox
from tests.support import EXAMPLE_SEED, pipeline_environment

# The `reliability` fixture: figures for the README's reliability table (tests/reliability.py).
pytest_plugins = ["tests.reliability"]


@pytest.fixture
def example_sandbox(monkeypatch: pytest.MonkeyPatch):
    """The sandbox holding examples/sandbox-seed.yaml: examples/org/ with drift in it."""
    for name in ("PAGERDUTY_API_TOKEN", "CORTEX_API_TOKEN", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with running_sandbox(load_seed(EXAMPLE_SEED)) as sandbox:
        yield sandbox


@pytest.fixture
def pipeline_env(
    example_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The example sandbox plus those variables set in this process, as Dagster's EnvVar reads them."""
    environ = pipeline_environment(example_sandbox, tmp_path)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    yield environ
