"""Drift to fix on a running deployment: the sandbox, dagster-daemon on deploy/dagster.yaml (Postgres), and
a pre-approved change applied by the daemon's sensor.

The sandbox serves examples/sandbox-seed.yaml and the pipeline reads examples/org. A first refresh's
pre-approved changes are applied (the warm-up). Then a member the definitions want is removed through
the sandbox's PagerDuty API, a refresh is launched at once (what a schedule tick does), and the clock
stops when the sandbox holds the member again. The run records give each leg: the refresh run, the
sensor picking up the policy's approval, and the apply run, whose Dagster overhead is its wall time
minus the time the apply itself took (`duration_seconds` of the apply op: provider calls and ledger).
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from bench.sandbox_process import BENCH_TOKEN, SandboxProcess, sandbox_process
from nthlayer_pipelines.processes import start_group, stop_group
from nthlayer_pipelines.sandbox import DEFAULT_CORTEX_TOKEN, DEFAULT_SLACK_TOKEN

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "examples" / "sandbox-seed.yaml"
DEFINITIONS = REPO / "examples" / "org"
DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
NEVER = "0 0 1 1 *"  # the schedules stay out of the way: the bench launches each refresh itself
DRIFT_TEAM, DRIFT_EMAIL = "Data Platform", "heidi@example.com"  # a pre-approved addition once removed
TIMEOUT_SECONDS = 300.0
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

T = TypeVar("T")


def _wait(
    what: str, probe: Callable[[], T | None], timeout: float = TIMEOUT_SECONDS, every: float = 0.1
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@contextmanager
def _throwaway_database(server: str) -> Iterator[str]:
    """A new database on the server, dropped at the end; its psycopg2 URL."""
    name = f"nthlayer_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def _daemon(env: Mapping[str, str], log: Path, repo: Path) -> Iterator[None]:
    """`dagster instance migrate`, then dagster-daemon in a process group of its own until the block ends."""
    bin_dir = Path(sys.executable).parent
    migrate = subprocess.run(
        [str(bin_dir / "dagster"), "instance", "migrate"], cwd=repo, env=dict(env), capture_output=True
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"dagster instance migrate failed:\n{migrate.stderr.decode()[-2000:]}")
    with log.open("ab") as output:
        daemon = start_group(
            [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, cwd=repo, output=output
        )
    try:
        yield
    finally:
        stop_group(daemon, timeout_seconds=20)


def _launch(job: str, env: Mapping[str, str], repo: Path) -> None:
    """Queue a run of the job, as the launchpad or a schedule tick does; the daemon starts it."""
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "job",
        "launch",
        "-w",
        "workspace.yaml",
        "-j",
        job,
    ]
    launched = subprocess.run(command, cwd=repo, env=dict(env), capture_output=True)
    if launched.returncode != 0:
        raise RuntimeError(f"launching {job} failed:\n{launched.stderr.decode()[-2000:]}")


class _Runs:
    """The instance's run records, read as the webserver reads them."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        import dagster as dg

        os.environ.update({"DAGSTER_POSTGRES_URL": env["DAGSTER_POSTGRES_URL"]})
        self.dg = dg
        self.instance = dg.DagsterInstance.from_config(str(home))

    def records(self, job: str, after: float = 0.0) -> list[Any]:
        found = self.instance.get_run_records(filters=self.dg.RunsFilter(job_name=job))
        return sorted(
            (r for r in found if r.create_timestamp.timestamp() > after),
            key=lambda r: r.create_timestamp.timestamp(),
        )

    def finished(self, job: str, after: float) -> Any | None:
        records = self.records(job, after)
        if records and records[0].dagster_run.status.value in FINISHED:
            return records[0]
        return None

    def settled_after(self, apply_run_id: str) -> bool:
        """The refresh that `refresh_after_apply` launches after a successful apply has run: until it
        has, the deployment is not quiet, and a drift measured meanwhile queues behind it for the pool."""
        found = self.instance.get_run_records(
            filters=self.dg.RunsFilter(
                job_name="refresh", tags={"dagster/run_key": f"refresh-after:{apply_run_id}"}
            )
        )
        return bool(found) and all(r.dagster_run.status.value in FINISHED for r in found) and self.idle()

    def idle(self) -> bool:
        active = self.instance.get_run_records(
            filters=self.dg.RunsFilter(
                statuses=[
                    self.dg.DagsterRunStatus.QUEUED,
                    self.dg.DagsterRunStatus.NOT_STARTED,
                    self.dg.DagsterRunStatus.STARTING,
                    self.dg.DagsterRunStatus.STARTED,
                ]
            )
        )
        return not active

    def _events(self, run_id: str, kind: Any) -> list[Any]:
        records = self.instance.get_records_for_run(run_id, of_type=kind).records
        return [record.event_log_entry.dagster_event for record in records]

    def refresh_kind(self, run_id: str) -> str:
        """How the run's PagerDuty snapshot was read: full or incremental, and why."""
        for event in self._events(run_id, self.dg.DagsterEventType.ASSET_MATERIALIZATION):
            materialization = event.step_materialization_data.materialization
            if materialization.asset_key == self.dg.AssetKey("pagerduty_memberships"):
                metadata = materialization.metadata
                return f"{metadata['refresh'].value} ({metadata['refresh_reason'].value})"
        raise RuntimeError(f"refresh run {run_id} materialized no pagerduty_memberships")

    def timeline(self, run_id: str) -> dict[str, float]:
        """When the run reached each stage, from its event log: the first event of each type."""
        stages = {
            "enqueued": "RUN_ENQUEUED",
            "starting": "RUN_STARTING",
            "started": "RUN_START",
            "step_started": "STEP_START",
            "step_finished": "STEP_SUCCESS",
            "finished": "RUN_SUCCESS",
        }
        first: dict[str, float] = {}
        for entry in self.instance.all_logs(run_id):
            event = entry.dagster_event
            if event is not None and event.event_type.name not in first:  # the names, not the stored values
                first[event.event_type.name] = entry.timestamp
        missing = [kind for kind in stages.values() if kind not in first]
        if missing:
            raise RuntimeError(f"run {run_id} has no {', '.join(missing)} event")
        return {stage: first[kind] for stage, kind in stages.items()}

    def apply_seconds(self, run_id: str) -> float:
        """The apply op's own `duration_seconds`: the changes' provider calls and ledger writes."""
        for event in self._events(run_id, self.dg.DagsterEventType.STEP_OUTPUT):
            metadata = event.step_output_data.metadata
            if "duration_seconds" in metadata:
                return float(metadata["duration_seconds"].value)
        raise RuntimeError(f"apply run {run_id} has no duration_seconds in its output")


def _member_present(sandbox: SandboxProcess, team: str, email: str) -> bool:
    state = sandbox.state()["pagerduty"]
    team_id = next(t["id"] for t in state["teams"] if t["name"] == team)
    user_id = next(u["id"] for u in state["users"] if u["email"] == email)
    return any(m["team_id"] == team_id and m["user_id"] == user_id for m in state["memberships"])


def _seconds(record: Any, field: str) -> float:
    value = getattr(record, field)
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def measure(
    *,
    rate_limit: int,
    latency_ms: int,
    log: Path,
    sensor_interval_seconds: int,
    postgres: str = DEFAULT_POSTGRES,
    repo: Path = REPO,
    repeats: int = 3,
) -> dict[str, Any]:
    """Drift to fix on the deployment of `repo`, a checkout of this project (its code and its
    deploy/dagster.yaml; the sandbox's seed and the definitions are always this checkout's): `repeats`
    drifts, one after the other, each leg's median reported beside every sample."""
    with (
        sandbox_process(0, 0, rate_limit=rate_limit, latency_ms=latency_ms, log=log, seed=SEED) as sandbox,
        _throwaway_database(postgres) as database,
        tempfile.TemporaryDirectory(prefix="nthlayer-bench-home-") as home_dir,
    ):
        home = Path(home_dir)
        shutil.copy(repo / "deploy" / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_POSTGRES_URL": database,
            "NTHLAYER_LEDGER_URL": database,
            "PAGERDUTY_API_URL": sandbox.pagerduty_url,
            "PAGERDUTY_API_TOKEN": BENCH_TOKEN,
            "CORTEX_API_URL": f"{sandbox.url}/cortex",
            "CORTEX_API_TOKEN": DEFAULT_CORTEX_TOKEN,
            "SLACK_API_URL": f"{sandbox.url}/slack/api/",
            "SLACK_BOT_TOKEN": DEFAULT_SLACK_TOKEN,
            "NTHLAYER_SLACK_CHANNEL": "ops-changes",
            "NTHLAYER_DEFINITIONS": str(DEFINITIONS),
            "PYTHONPATH": str(repo),  # the code server and run workers load `repo`'s code
            "NTHLAYER_SENSOR_INTERVAL_SECONDS": str(sensor_interval_seconds),
            "NTHLAYER_REFRESH_CRON": NEVER,
            "NTHLAYER_AUDIT_CRON": NEVER,
        }
        with _daemon(env, log, repo):
            runs = _Runs(home, env)
            # Warm-up: the seed's drift, its pre-approved changes applied, and the refresh after them.
            _launch("refresh", env, repo)
            warm_up = _wait("the warm-up's apply run", lambda: runs.finished("apply_plan", 0.0))
            _wait("the refresh after the warm-up", lambda: runs.settled_after(warm_up.dagster_run.run_id))
            if not _member_present(sandbox, DRIFT_TEAM, DRIFT_EMAIL):
                raise RuntimeError(f"the warm-up did not add {DRIFT_EMAIL} to {DRIFT_TEAM}; see {log}")

            samples = [_one_drift(sandbox, runs, env, repo) for _ in range(repeats)]
            runs.instance.dispose()
    measured = _medians(samples)
    return {
        **measured,
        "repeats": repeats,
        "samples": samples,
        "refresh_kind": samples[-1]["refresh_kind"],
        "sensor_interval_seconds": sensor_interval_seconds,
    }


def _one_drift(sandbox: SandboxProcess, runs: _Runs, env: Mapping[str, str], repo: Path) -> dict[str, Any]:
    """A member removed, a refresh launched at once, and the time until the daemon has put it back."""
    drift_at = time.time()
    _remove_member(sandbox, DRIFT_TEAM, DRIFT_EMAIL)
    _launch("refresh", env, repo)
    launched_at = time.time()
    _wait("the fix", lambda: _member_present(sandbox, DRIFT_TEAM, DRIFT_EMAIL), every=0.05)
    fixed_at = time.time()
    refresh = _wait("the refresh run", lambda: runs.finished("refresh", drift_at))
    apply = _wait("the apply run", lambda: runs.finished("apply_plan", drift_at))
    for record in (refresh, apply):
        if record.dagster_run.status.value != "SUCCESS":
            raise RuntimeError(f"run {record.dagster_run.run_id} ended {record.dagster_run.status.value}")
    apply_seconds = runs.apply_seconds(apply.dagster_run.run_id)
    timeline = runs.timeline(apply.dagster_run.run_id)
    refresh_timeline = runs.timeline(refresh.dagster_run.run_id)
    refresh_kind = runs.refresh_kind(refresh.dagster_run.run_id)
    _wait("the refresh after the apply", lambda: runs.settled_after(apply.dagster_run.run_id), every=1.0)
    apply_wall = _seconds(apply, "end_time") - _seconds(apply, "create_timestamp")
    return {
        "drift_to_fix_seconds": fixed_at - drift_at,
        "launch_seconds": launched_at - drift_at,
        "refresh_run_seconds": _seconds(refresh, "end_time") - _seconds(refresh, "create_timestamp"),
        "refresh_queue_seconds": refresh_timeline["starting"] - refresh_timeline["enqueued"],
        "sensor_pickup_seconds": _seconds(apply, "create_timestamp") - _seconds(refresh, "end_time"),
        "apply_run_seconds": apply_wall,
        "apply_op_seconds": apply_seconds,
        "apply_overhead_seconds": apply_wall - apply_seconds,
        "apply_legs": apply_legs(timeline, apply_seconds),
        "refresh_kind": refresh_kind,
    }


def _medians(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number's median over the drifts (the sensor's tick falls anywhere in its interval)."""
    numbers = [key for key, value in samples[0].items() if isinstance(value, float)]
    legs = samples[0]["apply_legs"]
    return {
        **{key: statistics.median(sample[key] for sample in samples) for key in numbers},
        "apply_legs": {key: statistics.median(s["apply_legs"][key] for s in samples) for key in legs},
    }


def apply_legs(timeline: Mapping[str, float], apply_seconds: float) -> dict[str, float]:
    """The apply run's wall time split at its events: waiting in the queue, the run worker starting
    (a process that imports Dagster and the code location, then opens the instance), the resources'
    set-up before the step, the step (of which the apply itself is `apply_seconds`), and the run's end."""
    return {
        # The daemon marks a run starting as it takes it off the queue.
        "queue_seconds": timeline["starting"] - timeline["enqueued"],
        "worker_start_seconds": timeline["started"] - timeline["starting"],
        "before_step_seconds": timeline["step_started"] - timeline["started"],
        "step_seconds": timeline["step_finished"] - timeline["step_started"],
        "step_other_seconds": timeline["step_finished"] - timeline["step_started"] - apply_seconds,
        "after_step_seconds": timeline["finished"] - timeline["step_finished"],
    }


def _remove_member(sandbox: SandboxProcess, team: str, email: str) -> None:
    """The drift: the member removed through the sandbox's PagerDuty API."""
    from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient

    with PagerDutyClient(sandbox.pagerduty_url, BENCH_TOKEN) as client:
        found = client.find_team_by_name(team)
        if found is None:
            raise RuntimeError(f"the sandbox has no team {team!r}")
        user = next(u for u in client.list_users() if u.email == email)
        client.remove_membership(found.id, user.id)
