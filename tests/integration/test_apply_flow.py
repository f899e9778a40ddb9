"""Approve, gate and apply through the Dagster jobs and sensors, in-process against the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from starlette.responses import JSONResponse

from nthlayer_pipelines.core.model import ChangeKind, Plan
from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.resources.ledger import Ledger
from tests.support import EXAMPLE_DEFINITIONS, REPO, pipeline_environment


@pytest.fixture
def pipeline_env(example_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The whole example org, its services and standards with its teams."""
    environ = pipeline_environment(example_sandbox, tmp_path, NTHLAYER_DEFINITIONS=str(EXAMPLE_DEFINITIONS))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return environ


def run_job(environ: dict[str, str], name: str, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    job = build_definitions(environ).resolve_job_def(name)
    return job.execute_in_process(
        run_config=run_config or {}, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def tick(environ: dict[str, str], cursor: str | None = None) -> dg.SensorResult:
    defs = build_definitions(environ)
    sensor = defs.get_sensor_def("approved_plans_sensor")
    with dg.build_sensor_context(cursor=cursor, resources=defs.resources) as context:
        return sensor(context)


def approve_config(plan_id: str, **extra) -> dict:
    return {"ops": {"approve": {"config": {"plan_id": plan_id, "approver": "alice", **extra}}}}


def pagerduty_members(sandbox) -> dict[str, dict[str, str]]:
    """Team name -> {email: role}, read from the sandbox's own state."""
    state = sandbox.state.to_dict()["pagerduty"]
    emails = {u["id"]: u["email"] for u in state["users"]}
    names = {t["id"]: t["name"] for t in state["teams"]}
    held: dict[str, dict[str, str]] = {name: {} for name in names.values()}
    for membership in state["memberships"]:
        held[names[membership["team_id"]]][emails[membership["user_id"]]] = membership["role"]
    return held


def test_policy_approves_additions_a_person_approves_the_rest_and_it_converges(pipeline_env, example_sandbox):
    plan: Plan = run_job(pipeline_env, "refresh").output_for_node("change_plan")
    ledger = Ledger(pipeline_env["NTHLAYER_LEDGER_URL"])

    # The policy approved the additions and the creations (a team, the managed escalation policies), never
    # the removal, the role change or anything that changes who is paged.
    (policy,) = ledger.approvals_after(0)
    assert policy.source == "policy"
    approved_kinds = {c.kind for c in plan.changes if c.id in policy.change_ids}
    assert approved_kinds <= {
        ChangeKind.ADD_MEMBER,
        ChangeKind.CREATE_TEAM,
        ChangeKind.CREATE_ESCALATION_POLICY,
    }
    assert ChangeKind.CREATE_ESCALATION_POLICY in approved_kinds

    first = tick(pipeline_env)
    (request,) = first.run_requests
    assert request.run_key == f"apply:{plan.id}:{policy.id}"
    assert request.tags["nthlayer/approver"] == "policy"
    applied = run_job(pipeline_env, "apply_plan", request.run_config)
    assert applied.success

    # What is left needs a person: approve it in the job the launchpad runs.
    replan: Plan = run_job(pipeline_env, "refresh").output_for_node("change_plan")
    assert {c.kind for c in replan.changes} <= {
        ChangeKind.SET_ROLE,
        ChangeKind.REMOVE_MEMBER,
        ChangeKind.ADD_MEMBER,
        ChangeKind.SET_SERVICE_POLICY,
        ChangeKind.UPDATE_SERVICE,
    }
    approval = run_job(pipeline_env, "approve_plan", approve_config(replan.id, comment="reviewed"))
    assert approval.success
    second = tick(pipeline_env, cursor=first.cursor)
    (request,) = second.run_requests
    assert request.tags["nthlayer/approver"] == "alice"
    apply_run = run_job(pipeline_env, "apply_plan", request.run_config)
    assert apply_run.success
    (output,) = [e for e in apply_run.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["changes_applied"].value == len(replan.changes)
    assert metadata["api_calls"].value > 0

    final: Plan = run_job(pipeline_env, "refresh").output_for_node("change_plan")
    assert final.changes == ()
    held = pagerduty_members(example_sandbox)
    assert held["Payments"] == {
        "alice@example.com": "manager",
        "bob@example.com": "responder",
        "carol@example.com": "responder",
        "dave@example.com": "observer",
    }
    assert held["Search"] == {"heidi@example.com": "manager", "ivan@example.com": "responder"}
    assert tick(pipeline_env, cursor=second.cursor).skip_reason is not None

    # One write per change, and each membership written once (a service's policy and its fields are two
    # changes, two PUTs to the service; each managed policy is one POST).
    writes = [
        (r["method"], r["path"])
        for r in example_sandbox.requests(provider="pagerduty")
        if r["method"] != "GET"
    ]
    assert len(writes) == len(plan.changes)
    memberships = [w for w in writes if w[1].startswith("/pagerduty/teams")]
    assert len(memberships) == len(set(memberships))
    created = writes.count(("POST", "/pagerduty/escalation_policies"))
    assert created == plan.count(ChangeKind.CREATE_ESCALATION_POLICY) == 2

    # The summary reached Slack.
    messages = example_sandbox.state.to_dict()["slack"]["messages"]
    assert len(messages) == 2 and "alice" in messages[-1]["text"]


def test_approving_a_plan_that_is_not_the_latest_fails_clearly(pipeline_env):
    run_job(pipeline_env, "refresh")
    result = run_job(pipeline_env, "approve_plan", approve_config("plan-000000000000"))
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "plan-000000000000" in failure.step_failure_data.user_failure_data.description


def test_removal_over_the_blast_radius_waits_for_the_override(example_sandbox, tmp_path, monkeypatch):
    # Payments prunes; declare it with only alice, so three of four members would go.
    definitions = tmp_path / "definitions"
    definitions.mkdir()
    (definitions / "payments.yaml").write_text(
        "apiVersion: nthlayer/v1\nkind: Team\nmetadata: {name: payments}\n"
        "spec: {displayName: Payments, prune: true, members: [{email: alice@example.com, role: manager}]}\n"
    )
    environ = pipeline_environment(
        example_sandbox, tmp_path, NTHLAYER_DEFINITIONS=str(definitions), NTHLAYER_PRE_APPROVED_KINDS=""
    )
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    refresh = run_job(environ, "refresh")
    (check,) = [
        e.event_specific_data
        for e in refresh.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == "change_plan_within_blast_radius"
    ]
    assert not check.passed
    plan: Plan = refresh.output_for_node("change_plan")
    assert plan.count(ChangeKind.REMOVE_MEMBER) == 3

    refused = run_job(environ, "approve_plan", approve_config(plan.id))
    assert not refused.success
    assert tick(environ).skip_reason is not None
    assert [r for r in example_sandbox.requests(provider="pagerduty") if r["method"] != "GET"] == []

    allowed = run_job(environ, "approve_plan", approve_config(plan.id, allow_blast_radius=True))
    assert allowed.success
    (request,) = tick(environ).run_requests
    result = run_job(environ, "apply_plan", request.run_config)
    # dave is a target of "Payments On-Call": that removal is blocked for a person, never forced. The run
    # succeeds (it did all it may do) and says so in its metadata.
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["changes_blocked"].value == 1
    outcomes = {o.email: o for o in Ledger(environ["NTHLAYER_LEDGER_URL"]).outcomes(plan.id)}
    assert outcomes["dave@example.com"].status == "blocked"
    assert "Payments On-Call" in outcomes["dave@example.com"].detail
    assert outcomes["bob@example.com"].status == "applied"
    assert outcomes["mallory@example.com"].status == "applied"

    audit = subprocess.run(
        [sys.executable, "-m", "nthlayer_pipelines.cli", "audit", "--team", "payments"],
        env={**os.environ, **environ},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert audit.returncode == 0, audit.stderr
    blocked_lines = [line for line in audit.stdout.splitlines() if "blocked" in line]
    assert len(blocked_lines) == 1 and "Payments On-Call" in blocked_lines[0]


@pytest.mark.parametrize("outage", ["cortex_500", "empty_definitions"])
def test_a_source_outage_plans_no_removal_and_writes_nothing(outage, example_sandbox, tmp_path, monkeypatch):
    overrides = {}
    if outage == "cortex_500":

        async def cortex_is_down(request) -> JSONResponse:
            return JSONResponse({"type": "INTERNAL_ERROR", "message": "boom", "httpStatus": 500}, 500)

        example_sandbox.hooks.add_before(cortex_is_down, provider="cortex", endpoint="GET /api/v1/teams")
    else:
        (tmp_path / "empty").mkdir()
        overrides["NTHLAYER_DEFINITIONS"] = str(tmp_path / "empty")
    environ = pipeline_environment(example_sandbox, tmp_path, **overrides)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert not run_job(environ, "refresh").success
    assert Ledger(environ["NTHLAYER_LEDGER_URL"]).latest_plan_id() is None
    assert tick(environ).skip_reason is not None
    assert [r for r in example_sandbox.requests(provider="pagerduty") if r["method"] != "GET"] == []


def test_cli_approve_reject_and_retry(pipeline_env):
    plan: Plan = run_job(pipeline_env, "refresh").output_for_node("change_plan")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nthlayer_pipelines.cli", *args],
            env={**os.environ, **pipeline_env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    unknown = cli("approve", "plan-unknown", "--approver", "bob")
    assert unknown.returncode == 1 and "plan-unknown" in unknown.stderr
    removal = next(c for c in plan.changes if c.kind is ChangeKind.REMOVE_MEMBER)
    approved = cli("approve", plan.id, "--approver", "bob", "--change", removal.id)
    assert approved.returncode == 0, approved.stderr
    assert "1 change(s)" in approved.stdout
    rejected = cli("reject", plan.id, "--approver", "carol", "--comment", "not now")
    assert rejected.returncode == 0
    again = cli("approve", plan.id, "--approver", "bob")
    assert again.returncode == 1 and "reject" in again.stderr


@pytest.mark.parametrize(
    ("slack", "reason"),
    [
        ({"SLACK_API_URL": "http://127.0.0.1:9/api/"}, "Slack is unreachable"),
        ({"NTHLAYER_SLACK_CHANNEL": "no-such-channel"}, "channel_not_found"),
        ({"SLACK_BOT_TOKEN": "xoxb-wrong"}, "invalid_auth"),
    ],
)
def test_a_slack_outage_never_fails_an_apply_that_succeeded(
    slack, reason, example_sandbox, tmp_path, monkeypatch
):
    environ = pipeline_environment(example_sandbox, tmp_path, **slack)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    run_job(environ, "refresh")
    (request,) = tick(environ).run_requests
    result = run_job(environ, "apply_plan", request.run_config)
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert reason in output.event_specific_data.metadata["slack"].value
    assert example_sandbox.state.to_dict()["slack"]["messages"] == []
