"""The ledger's IO manager, on PostgreSQL: what one run stores, a run in another process with a disk and a
Dagster instance of its own reads, as a pod of the K8s run launcher would."""

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from nthlayer_pipelines.core.model import Plan
from nthlayer_pipelines.definitions import build_definitions, fixed_by_deployment
from nthlayer_pipelines.resources.io_manager import io_managers_from_env
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.ledger.schema import asset_outputs
from tests.postgres import fresh_database, postgres_server, render
from tests.support import EXPECTED_EXAMPLE_CHANGES, REPO, plan_rows

pytestmark = pytest.mark.postgres

UPSTREAM = (
    "git_definitions,cortex_teams,desired_state,pagerduty_users,pagerduty_teams,pagerduty_memberships,"
    "pagerduty_services"
)
DOWNSTREAM = "divergences,service_standards,change_plan"


@pytest.fixture
def ledger_url() -> Iterator[str]:
    """A database of its own for each test: the rows it counts are its own."""
    with postgres_server() as server, fresh_database(server, prefix="nthlayer_io") as database:
        yield render(database)


def _materialize(select: str, env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    """`dagster asset materialize` in a process of its own, on an instance and a disk of its own."""
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    command = [
        str(Path(sys.executable).parent / "dagster"),
        *("asset", "materialize", "-m", "nthlayer_pipelines.definitions", "--select", select),
        # In one process, as the refresh job runs: a process per step costs seconds each here.
        *("--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})),
    ]
    return subprocess.run(
        command, cwd=REPO, env={**env, "DAGSTER_HOME": str(home)}, capture_output=True, text=True, timeout=300
    )


def _rows(url: str, query: sa.Select[Any]) -> list[sa.Row[Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(query))
    finally:
        engine.dispose()


def _stored(url: str) -> dict[str, tuple[str, str]]:
    """Each stored output: its run and Python type."""
    columns = (asset_outputs.c.asset_key, asset_outputs.c.run_id, asset_outputs.c.python_type)
    return {row.asset_key: (row.run_id, row.python_type) for row in _rows(url, sa.select(*columns))}


def test_a_run_in_another_process_plans_from_the_snapshot_an_earlier_run_stored_in_the_ledger(
    pipeline_env: dict[str, str], ledger_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, **pipeline_env, "NTHLAYER_IO_MANAGER": "ledger", "NTHLAYER_LEDGER_URL": ledger_url}

    upstream = _materialize(UPSTREAM, env, tmp_path / "pod-1")
    assert upstream.returncode == 0, upstream.stderr[-3000:]
    downstream = _materialize(DOWNSTREAM, env, tmp_path / "pod-2")
    assert downstream.returncode == 0, downstream.stderr[-3000:]

    stored = _stored(ledger_url)
    assert set(stored) == set(UPSTREAM.split(",")) | set(DOWNSTREAM.split(","))
    assert stored["pagerduty_memberships"][1] == "pandas.DataFrame"
    assert stored["divergences"][1] == "pandas.DataFrame"
    # Two runs, each writing its own assets: the second read the first's from the ledger.
    assert stored["pagerduty_users"][0] == stored["desired_state"][0] != stored["change_plan"][0]
    assert stored["divergences"][0] == stored["change_plan"][0]
    with Ledger(ledger_url) as ledger:
        plan = pickle.loads(ledger.load_output("change_plan", ""))
        assert isinstance(plan, Plan)
        assert plan_rows(plan) == EXPECTED_EXAMPLE_CHANGES
        assert ledger.latest_plan_id() == plan.id
    assert not list((tmp_path / "pod-2").rglob("storage/pagerduty_users"))  # nothing came from a shared disk


# DataFrames, one asset partitioned, materialized in runs that share nothing but the ledger.
DAYS = dg.StaticPartitionsDefinition(["2026-12-01", "2026-12-02"])


@dg.asset
def members() -> pd.DataFrame:
    return pd.DataFrame({"email": ["alice@example.com", "bob@example.com"], "team": ["payments", "search"]})


@dg.asset(partitions_def=DAYS)
def pages(context: dg.AssetExecutionContext) -> pd.DataFrame:
    count = 3 if context.partition_key == "2026-12-01" else 5
    return pd.DataFrame({"day": [context.partition_key] * count, "email": ["alice@example.com"] * count})


@dg.asset
def members_per_team(members: pd.DataFrame) -> pd.DataFrame:
    return members.groupby("team", as_index=False).size()


@dg.asset(ins={"pages": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())})
def pages_per_day(pages: dict[str, pd.DataFrame]) -> dict[str, int]:
    return {day: len(frame) for day, frame in pages.items()}


GRAPH = [members, pages, members_per_team, pages_per_day]


@pytest.fixture
def resources(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, dg.ResourceDefinition]:
    """The IO manager as the code location binds it: chosen by the environment, fixed by the deployment,
    its URL read from NTHLAYER_LEDGER_URL in the run."""
    monkeypatch.setenv("NTHLAYER_LEDGER_URL", ledger_url)
    chosen = io_managers_from_env({"NTHLAYER_IO_MANAGER": "ledger", "NTHLAYER_LEDGER_URL": ledger_url})
    return {name: fixed_by_deployment(manager) for name, manager in chosen.items()}


def test_dataframes_and_partitions_pass_between_runs_that_share_only_the_ledger(
    resources: dict[str, dg.ResourceDefinition],
) -> None:
    assert dg.materialize([members], resources=resources, instance=dg.DagsterInstance.ephemeral()).success
    for day in DAYS.get_partition_keys():
        ran = dg.materialize(
            [pages], partition_key=day, resources=resources, instance=dg.DagsterInstance.ephemeral()
        )
        assert ran.success

    downstream = dg.materialize(
        GRAPH,
        selection=["members_per_team", "pages_per_day"],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert downstream.success
    expected = pd.DataFrame({"team": ["payments", "search"], "size": [1, 1]})
    pd.testing.assert_frame_equal(downstream.output_for_node("members_per_team"), expected)
    assert downstream.output_for_node("pages_per_day") == {"2026-12-01": 3, "2026-12-02": 5}


def test_a_new_materialization_replaces_the_stored_output(
    resources: dict[str, dg.ResourceDefinition], ledger_url: str
) -> None:
    for _ in range(2):
        assert dg.materialize([members], resources=resources, instance=dg.DagsterInstance.ephemeral()).success

    assert len(_rows(ledger_url, sa.select(asset_outputs.c.asset_key))) == 1


def test_an_input_never_stored_fails_the_step_naming_the_asset(
    resources: dict[str, dg.ResourceDefinition],
) -> None:
    result = dg.materialize(
        GRAPH,
        selection=["members_per_team"],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert "no output of members is stored in the ledger" in failure.step_failure_data.error.to_string()


def test_a_run_config_cannot_point_the_io_manager_elsewhere(
    resources: dict[str, dg.ResourceDefinition],
) -> None:
    with pytest.raises(dg.DagsterInvalidConfigError, match='unexpected config entry "url"'):
        dg.materialize(
            [members],
            resources=resources,
            run_config={
                "resources": {"io_manager": {"config": {"url": "postgresql+psycopg2://elsewhere/db"}}}
            },
        )


def test_the_io_manager_is_chosen_by_the_environment_and_defaults_to_dagsters() -> None:
    base = {"PAGERDUTY_API_TOKEN": "pd-token", "NTHLAYER_LEDGER_URL": "sqlite://"}
    assert "io_manager" not in build_definitions(base).resources
    assert "io_manager" not in build_definitions({**base, "NTHLAYER_IO_MANAGER": "filesystem"}).resources
    assert "io_manager" in build_definitions({**base, "NTHLAYER_IO_MANAGER": "ledger"}).resources
    with pytest.raises(ValueError, match="NTHLAYER_IO_MANAGER='s3': must be one of filesystem, ledger"):
        io_managers_from_env({"NTHLAYER_IO_MANAGER": "s3"})
