"""The read-only pipeline end to end: sources and PagerDuty over loopback, Dagster in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from nthlayer_pipelines.assets.pagerduty.services.writer import StandardsWriter
from nthlayer_pipelines.core.model import SERVICE_STANDARD, ChangeKind, ChangeStatus, Plan
from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient
from tests.support import (
    EXAMPLE_DEFINITIONS,
    EXPECTED_EXAMPLE_CHANGES_WITH_STANDARDS,
    EXPECTED_EXAMPLE_FINDINGS,
    REPO,
    assert_plan_json_valid,
    pipeline_environment,
    plan_rows,
)

ALL_ASSETS = {
    "git_definitions",
    "cortex_teams",
    "desired_state",
    "pagerduty_users",
    "pagerduty_teams",
    "pagerduty_memberships",
    "divergences",
    "pagerduty_services",
    "service_standards",
    "change_plan",
}


@pytest.fixture
def pipeline_env(example_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The whole example org, its services and standards with its teams."""
    environ = pipeline_environment(example_sandbox, tmp_path, NTHLAYER_DEFINITIONS=str(EXAMPLE_DEFINITIONS))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return environ


def refresh(environ: dict[str, str]) -> dg.ExecuteInProcessResult:
    job = build_definitions(environ).resolve_job_def("refresh")
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """Each failed step's error with its causes: what a person reads in the run's event log."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            error = event.step_failure_data.error
            while error is not None:
                messages.append(error.message)
                error = error.cause
    return messages


def apply_by_hand(plan: Plan, environ: dict[str, str]) -> None:
    """Carry out a plan with the client's write calls (the gated apply job is built on the same calls);
    the services' changes through their kind's writer, without the ledger."""
    with PagerDutyClient(environ["PAGERDUTY_API_URL"], environ["PAGERDUTY_API_TOKEN"]) as client:
        users = {u.email: u.id for u in client.list_users()}
        team_ids = {c.team: c.team_id for c in plan.changes if c.team_id}
        standards = StandardsWriter(client)
        for change in plan.changes:
            if change.resource == SERVICE_STANDARD:
                assert standards.carry_out(change).status is ChangeStatus.APPLIED
            elif change.kind is ChangeKind.CREATE_TEAM:
                team_ids[change.team] = client.create_team(change.team_name).id
            elif change.kind in (ChangeKind.ADD_MEMBER, ChangeKind.SET_ROLE):
                client.set_membership(team_ids[change.team], users[change.email], change.role.value)
            else:
                client.remove_membership(team_ids[change.team], change.user_id)


def test_refresh_plans_exactly_the_seeded_drift_then_nothing_once_applied(
    pipeline_env, example_sandbox
) -> None:
    result = refresh(pipeline_env)
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {key for key in ALL_ASSETS}
    plan: Plan = result.output_for_node("change_plan")
    assert plan_rows(plan) == EXPECTED_EXAMPLE_CHANGES_WITH_STANDARDS
    assert [(f.kind.value, f.team, f.email) for f in plan.findings] == EXPECTED_EXAMPLE_FINDINGS

    ledger = Ledger(pipeline_env["NTHLAYER_LEDGER_URL"])
    assert ledger.latest_plan_id() == plan.id
    assert ledger.get_plan(plan.id) == plan

    reads_before = len(example_sandbox.requests(provider="pagerduty"))
    writes = [r for r in example_sandbox.requests(provider="pagerduty") if r["method"] != "GET"]
    assert writes == [], "a refresh never writes"

    apply_by_hand(plan, pipeline_env)
    assert len(example_sandbox.requests(provider="pagerduty")) > reads_before

    second = refresh(pipeline_env)
    assert second.success
    converged: Plan = second.output_for_node("change_plan")
    assert converged.changes == ()
    assert ledger.latest_plan_id() == converged.id


def test_plan_metadata_is_readable_in_the_ui(pipeline_env) -> None:
    result = refresh(pipeline_env)
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("change_plan")
    ]
    metadata = event.materialization.metadata
    assert metadata["changes_total"].value == len(EXPECTED_EXAMPLE_CHANGES_WITH_STANDARDS)
    assert metadata["members_to_remove"].value == 1
    plan = result.output_for_node("change_plan")
    removal, creation = plan.changes[-1], plan.changes[0]
    shown = metadata["plan"].value
    assert (
        f"| `{removal.id}` | `-` remove | payments (Payments, `{removal.team_id}`) "
        "| mallory@example.com (was responder) |"
    ) in shown
    assert f"| `{creation.id}` | `+` create team | search (Search, no id yet) |  |" in shown
    # Its approval, ready to launch: the config naming this plan, and the link holding it.
    config = yaml.safe_load(metadata["approve_config"].value.removeprefix("```yaml\n").removesuffix("```"))
    assert config["ops"]["approve"]["config"]["plan_id"] == plan.id
    assert "/jobs/approve_plan/playground/setup?config=" in metadata["approve_in_launchpad"].value
    assert metadata["approve_config"].value in shown
    (users,) = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("pagerduty_users")
    ]
    assert users.materialization.metadata["api_calls"].value == 1


def test_scoped_refresh_plans_only_the_named_team(pipeline_env) -> None:
    job = build_definitions(pipeline_env).resolve_job_def("refresh")
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"resources": {"reconcile": {"config": {"teams": ["search"]}}}},
    )
    plan: Plan = result.output_for_node("change_plan")
    assert {c.team for c in plan.changes} == {"search"}
    assert plan.findings == ()


def test_cortex_outage_fails_the_source_and_no_plan_is_made(example_sandbox, tmp_path, monkeypatch) -> None:
    environ = pipeline_environment(example_sandbox, tmp_path, CORTEX_API_URL="http://127.0.0.1:9/cortex")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    result = refresh(environ)
    assert not result.success
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    assert "cortex_teams" in failed
    assert not [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["change_plan"]]
    assert Ledger(environ["NTHLAYER_LEDGER_URL"]).latest_plan_id() is None


def test_empty_definitions_folder_fails_and_no_plan_is_made(example_sandbox, tmp_path, monkeypatch) -> None:
    empty = tmp_path / "definitions"
    empty.mkdir()
    environ = pipeline_environment(example_sandbox, tmp_path, NTHLAYER_DEFINITIONS=str(empty))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    result = refresh(environ)
    assert not result.success
    assert "git_definitions" in {e.step_key for e in result.all_events if e.is_step_failure}
    assert Ledger(environ["NTHLAYER_LEDGER_URL"]).latest_plan_id() is None


def test_wrong_token_fails_with_the_variable_name(pipeline_env, monkeypatch) -> None:
    monkeypatch.setenv("PAGERDUTY_API_TOKEN", "not-the-token")
    result = refresh({**pipeline_env, "PAGERDUTY_API_TOKEN": "not-the-token"})
    assert not result.success
    messages = " ".join(failure_messages(result))
    assert "PAGERDUTY_API_TOKEN" in messages
    assert "Authentication failed (HTTP 401, code 2006)" in messages  # PagerDuty's own words
    assert "not-the-token" not in messages


def test_missing_token_fails_before_any_step_naming_the_variable(pipeline_env, monkeypatch) -> None:
    monkeypatch.delenv("PAGERDUTY_API_TOKEN", raising=False)
    environ = {k: v for k, v in pipeline_env.items() if k != "PAGERDUTY_API_TOKEN"}
    with pytest.raises(dg.DagsterInvalidConfigError, match='"PAGERDUTY_API_TOKEN" which is not set'):
        refresh(environ)


# The CLI, as a CI job on a definitions repo runs it ---------------------------------------------------


def nthlayer(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nthlayer_pipelines.cli", *args],
        env={**os.environ, **environ},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def json_change_row(change: dict) -> tuple:
    """A change of `plan --json` as `change_row` writes a Change."""
    if change["fields"]:
        names = ",".join(f["name"] for f in change["fields"])
        return (change["kind"], change["team"], change["target_name"], names, None)
    return (change["kind"], change["team"], change["email"], change["role"], change["from_role"])


def test_cli_plan_exits_2_on_drift_with_the_json_contract(pipeline_env) -> None:
    run = nthlayer("plan", "--json", environ=pipeline_env)
    assert run.returncode == 2, run.stderr
    payload = json.loads(run.stdout)
    assert_plan_json_valid(payload)
    assert set(payload) == {"schema_version", "plan_id", "changes", "findings"}
    assert [json_change_row(c) for c in payload["changes"]] == EXPECTED_EXAMPLE_CHANGES_WITH_STANDARDS
    version_1 = {"id", "kind", "team", "team_name", "team_id", "email", "role", "from_role"}
    assert all(version_1 <= set(c) for c in payload["changes"])
    assert payload["changes"][0]["team_id"] is None  # search is created by the plan: no id yet
    assert {
        (c["team_name"], c["team_id"] is None) for c in payload["changes"] if c["team"] == "payments"
    } == {("Payments", False)}
    assert all(f["blocking"] is False for f in payload["findings"])
    assert [(f["kind"], f["team"], f["email"]) for f in payload["findings"]] == EXPECTED_EXAMPLE_FINDINGS


def test_cli_plan_exits_0_without_drift_and_1_on_invalid_definitions(pipeline_env, tmp_path: Path) -> None:
    plan = refresh(pipeline_env).output_for_node("change_plan")
    apply_by_hand(plan, pipeline_env)
    clean = nthlayer("plan", environ=pipeline_env)
    assert clean.returncode == 0, clean.stderr
    assert "no changes" in clean.stdout

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "team.yaml").write_text(
        "apiVersion: nthlayer/v1\nkind: Team\nmetadata: {name: ops}\nspec: {}\n"
    )
    failed = nthlayer("plan", "--definitions", str(broken), environ=pipeline_env)
    assert failed.returncode == 1
    assert "team.yaml" in failed.stderr and "displayName" in failed.stderr
    assert failed.stdout == ""


def test_cli_validate_prints_every_problem(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: nthlayer/v1\nkind: Team\nmetadata: {name: ops}\n"
        "spec: {displayName: Ops, members: [{email: a@x.io, role: admin}]}\n"
    )
    (tmp_path / "b.yaml").write_text("apiVersion: nthlayer/v1\nkind: Widget\nmetadata: {name: w}\nspec: {}\n")
    run = nthlayer("validate", str(tmp_path), environ={})
    assert run.returncode == 1
    problem_lines = [line for line in run.stderr.splitlines() if line.startswith(("a.yaml", "b.yaml"))]
    assert len(problem_lines) == 2
    assert "admin" in problem_lines[0] and "Widget" in problem_lines[1]
    assert nthlayer("validate", str(REPO / "examples" / "org"), environ={}).returncode == 0


def test_dagster_definitions_validate_passes() -> None:
    run = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_cli_plan_exits_1_naming_a_failed_blocking_check(pipeline_env) -> None:
    run = nthlayer("plan", environ={**pipeline_env, "NTHLAYER_MAX_UNRESOLVED_USERS": "0"})
    assert run.returncode == 1
    assert run.stdout == ""
    assert "unresolved_users_below_threshold failed on divergences" in run.stderr
    assert "DEBUG" not in run.stderr  # the run's event stream is not the CLI's output
