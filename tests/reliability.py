"""The figures behind the README's reliability table, written by the tests that produce them.

A test takes the `reliability` fixture and records what its scenario injected and found; at the end of
the session the figures go to `test-artifacts/reliability.json`, merged by scenario with the figures of
earlier runs so a run of one suite keeps the others'. Counts add up within a session.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.support import ARTIFACTS

RELIABILITY_FILE = ARTIFACTS / "reliability.json"


class Reliability:
    """Counts per scenario: faults injected by kind, and named figures (writes, duplicates, lost, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.scenarios: dict[str, dict[str, Any]] = {}

    def _scenario(self, name: str) -> dict[str, Any]:
        return self.scenarios.setdefault(name, {"faults": {}, "figures": {}})

    def count_faults(self, scenario: str, injected: Mapping[str, int]) -> None:
        with self._lock:
            faults = self._scenario(scenario)["faults"]
            for kind, count in injected.items():
                faults[kind] = faults.get(kind, 0) + count

    def count(self, scenario: str, **figures: int) -> None:
        with self._lock:
            recorded = self._scenario(scenario)["figures"]
            for name, value in figures.items():
                recorded[name] = recorded.get(name, 0) + value


def merged(previous: Mapping[str, Any], scenarios: Mapping[str, Any]) -> dict[str, Any]:
    """This session's scenarios over the file's, with totals across all of them."""
    kept = {**previous.get("scenarios", {}), **scenarios}
    faults: dict[str, int] = {}
    figures: dict[str, int] = {}
    for scenario in kept.values():
        for kind, count in scenario["faults"].items():
            faults[kind] = faults.get(kind, 0) + count
        for name, value in scenario["figures"].items():
            figures[name] = figures.get(name, 0) + value
    totals = {
        "faults_injected": sum(faults.values()),
        "faults_by_kind": dict(sorted(faults.items())),
        **figures,
    }
    return {"scenarios": dict(sorted(kept.items())), "totals": totals}


@pytest.fixture(scope="session")
def reliability() -> Iterator[Reliability]:
    figures = Reliability()
    yield figures
    if not figures.scenarios:
        return
    previous = json.loads(RELIABILITY_FILE.read_text()) if RELIABILITY_FILE.exists() else {}
    RELIABILITY_FILE.parent.mkdir(parents=True, exist_ok=True)
    RELIABILITY_FILE.write_text(json.dumps(merged(previous, figures.scenarios), indent=2) + "\n")
