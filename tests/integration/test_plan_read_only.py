"""`nthlayer plan` is read-only whatever the environment names: pointed at the production ledger (Postgres,
as every deployment has it) with a branch of the definitions, it writes no ledger row and no provider, and
the gate finds nothing new to apply."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.sandbox import RunningSandbox
from tests.integration.test_apply_flow import run_job, tick
from tests.postgres import PostgresUnavailable, fresh_database, postgres_server, render
from tests.reliability import Reliability
from tests.support import EXAMPLE_DEFINITIONS, REPO, pipeline_environment

BRANCH_MEMBER = "    - {email: judy@example.com, role: responder}   # added on a branch\n"


def ledger_rows(url: str) -> dict[str, list[str]]:
    """Every row of every ledger table, as sorted JSON text: what "nothing was written" compares."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            meta.reflect(conn)
            return {
                name: sorted(
                    json.dumps(dict(r), default=str, sort_keys=True)
                    for r in conn.execute(t.select()).mappings()
                )
                for name, t in meta.tables.items()
                if name.startswith("nthlayer_")
            }
    finally:
        engine.dispose()


def branch_of_the_definitions(tmp_path: Path) -> Path:
    branch = tmp_path / "branch"
    shutil.copytree(EXAMPLE_DEFINITIONS, branch)
    payments = branch / "teams" / "payments.yaml"
    last_member = "    - {email: dave@example.com, role: observer}\n"
    text = payments.read_text()
    assert last_member in text
    payments.write_text(text.replace(last_member, last_member + BRANCH_MEMBER))
    return branch


def nthlayer_plan(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nthlayer_pipelines.cli", "plan", *args],
        env={**os.environ, **environ},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def production_ledger() -> str:
    try:
        with postgres_server() as server, fresh_database(server, prefix="nthlayer_plan_ro") as database:
            yield render(database)
    except PostgresUnavailable as error:
        pytest.fail(str(error), pytrace=False)


@pytest.mark.postgres
def test_plan_of_a_branch_against_the_production_ledger_writes_nothing_anywhere(
    example_sandbox: RunningSandbox,
    production_ledger: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reliability: Reliability,
) -> None:
    environ = pipeline_environment(example_sandbox, tmp_path, NTHLAYER_LEDGER_URL=production_ledger)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert run_job(environ, "refresh").success  # the deployment's own refresh: a plan, its policy approval
    gate = tick(environ)
    assert len(gate.run_requests) == 1
    before = ledger_rows(production_ledger)
    example_sandbox.clear_requests()

    result = nthlayer_plan(environ, "--definitions", str(branch_of_the_definitions(tmp_path)), "--json")

    assert result.returncode == 2, result.stderr
    planned = json.loads(result.stdout)
    assert {"kind": "add_member", "team": "payments", "email": "judy@example.com"}.items() <= next(
        c for c in planned["changes"] if c["email"] == "judy@example.com"
    ).items()
    assert ledger_rows(production_ledger) == before, "no ledger row written, moved or removed"
    writes = [r for r in example_sandbox.requests(provider="pagerduty") if r["method"] != "GET"]
    assert writes == []
    reads = [r for r in example_sandbox.requests(provider="pagerduty")]
    assert reads, "the plan read PagerDuty"
    assert tick(environ, gate.cursor).skip_reason is not None, "the gate has nothing new to apply"
    with Ledger(production_ledger) as ledger:
        assert planned["plan_id"] not in {ledger.latest_plan_id()}
    reliability.count(
        "read-only plan",
        plans_against_production_ledger=1,
        ledger_rows_written=sum(len(rows) for rows in ledger_rows(production_ledger).values())
        - sum(len(rows) for rows in before.values()),
        provider_writes=len(writes),
    )


def test_plan_against_a_sqlite_ledger_that_does_not_exist_creates_nothing(
    example_sandbox: RunningSandbox, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "ledger.db"
    environ = pipeline_environment(example_sandbox, tmp_path, NTHLAYER_LEDGER_URL=f"sqlite:///{missing}")

    result = nthlayer_plan(environ)

    assert result.returncode == 2, result.stderr
    assert not missing.parent.exists()


def test_plan_reads_the_stored_snapshot_and_names_the_instance_a_refresh_would_record(
    example_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = pipeline_environment(example_sandbox, tmp_path, NTHLAYER_PRE_APPROVED_KINDS="")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    refreshed = run_job(environ, "refresh").output_for_node("change_plan")
    url = environ["NTHLAYER_LEDGER_URL"]
    before = ledger_rows(url)

    result = nthlayer_plan(environ, "--json")

    assert result.returncode == 2, result.stderr
    assert json.loads(result.stdout)["plan_id"] == refreshed.id, "the open instance, as a refresh sees it"
    assert ledger_rows(url) == before
