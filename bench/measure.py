"""What every measurement shares: PagerDuty's pace, a scenario in a fresh interpreter, the calls served."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.sandbox_process import SandboxProcess

REAL_LATENCY_MS = 250
REAL_LIMIT_PER_MINUTE = 960


def run_scenario(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """One scenario in a fresh interpreter, so its memory is its own."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.scenarios", name, json.dumps(config)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"scenario {name} failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def served_calls(sandbox: SandboxProcess) -> tuple[int, int]:
    log = sandbox.requests()
    return len(log), sum(1 for entry in log if entry["status"] == 429)
