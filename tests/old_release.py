"""Code of an earlier release, run beside this one: to build a ledger exactly as that release wrote it.

The release's `nthlayer_pipelines` is taken from Git (`git archive`) into a folder of its own and run in a
subprocess with this virtualenv's packages, so what it writes is what a deployment of it wrote.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.support import REPO

# The last release whose ledger had no migrations: its create_all schema is revision 0001.
UNVERSIONED_RELEASE = "20173e0"


def checkout(revision: str, into: Path) -> Path:
    """The release's package under `into`; fails, naming the cause, when Git cannot produce it."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "nthlayer_pipelines"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise RuntimeError(
            f"git archive {revision} failed ({archive.stderr.decode().strip()}): these tests need the "
            "repository's history (a full clone, not a shallow one)"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_script(release: Path, script: str, **environ: str) -> str:
    """Run `script` with the release's package first on the path; its stdout."""
    env = {**os.environ, **environ, "PYTHONPATH": str(release)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False, cwd=release
    )
    if result.returncode != 0:
        raise RuntimeError(f"the release's script failed:\n{result.stderr}")
    return result.stdout
