"""What loading the code location costs a run worker, measured in fresh interpreters.

Every run of the deployment starts a process that imports Dagster, its Postgres storage and then the code
location (`nthlayer_pipelines.definitions`). The baseline is the first two, which any Dagster deployment
on Postgres pays; what the code location adds on top is the part this project can cut. Median of `runs`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BASELINE = "import dagster, dagster_postgres"
CODE_LOCATION = "import nthlayer_pipelines.definitions"
# Modules the code location should not need before a step uses them; reported when they load anyway.
HEAVY = ("pandas", "numpy", "alembic", "jsonschema", "slack_sdk", "httpx")

_PROBE = """
import sys, time
started = time.perf_counter()
{baseline}
baseline = time.perf_counter() - started
before = set(sys.modules)
started = time.perf_counter()
{code}
code = time.perf_counter() - started
loaded = [name for name in {heavy!r} if name in sys.modules and name not in before]
print(json.dumps({{"baseline": baseline, "code_location": code, "heavy_loaded": loaded}}))
"""


def measure_imports(runs: int = 5, repo: Path = REPO) -> dict[str, Any]:
    """The medians, for the code of `repo` (a checkout of this project)."""
    probe = "import json\n" + _PROBE.format(baseline=BASELINE, code=CODE_LOCATION, heavy=HEAVY)
    samples = []
    for _ in range(runs):
        completed = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
            check=True,
        )
        samples.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    baseline = statistics.median(s["baseline"] for s in samples)
    code = statistics.median(s["code_location"] for s in samples)
    return {
        "runs": runs,
        "baseline_seconds": baseline,
        "code_location_seconds": code,
        "code_location_vs_baseline": code / baseline,
        "heavy_loaded": samples[-1]["heavy_loaded"],
    }


if __name__ == "__main__":
    print(json.dumps(measure_imports(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
