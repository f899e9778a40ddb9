"""Child processes that are stopped with everything they started: dagster-webserver, dagster-daemon and
their code servers and run workers. Used by the demo, the benchmark's deployment and the tests."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO

STOP_TIMEOUT_SECONDS = 15


def start_group(
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    output: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """The command as the leader of a process group of its own, with default signal handling restored
    (a child that inherits ignored SIGINT/SIGTERM outlives a kill); stdout and stderr go to `output`."""
    return subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env),
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        restore_signals=True,
        start_new_session=True,
    )


def stop_group(process: subprocess.Popen[bytes], timeout_seconds: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM to the group, then SIGKILL to whatever of it is left: the leader, or the code servers and
    run workers it leaves behind when it exits first."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_seconds)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout_seconds)
