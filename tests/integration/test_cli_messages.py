"""What the CLI and the code location say when something is wrong: one line naming the variable, the check
or the next step, never a traceback nor advice that points back at itself."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nthlayer_pipelines.resources.ledger import AFTER_REJECTION
from tests.integration.test_pipeline import nthlayer, refresh
from tests.support import REPO, assert_plan_json_valid

CLOSED_URL = "http://127.0.0.1:9"  # nothing listens: a command that got as far as PagerDuty fails fast


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    """A deployment's variables with every provider out of reach: what is refused must be refused first."""
    return {
        "PAGERDUTY_API_URL": CLOSED_URL,
        "PAGERDUTY_API_TOKEN": "a-token",
        "CORTEX_API_URL": "",
        "SLACK_BOT_TOKEN": "",
        "NTHLAYER_DEFINITIONS": str(REPO / "examples" / "org"),
        "NTHLAYER_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "DAGSTER_HOME": str(tmp_path),
    }


@pytest.mark.parametrize(
    ("args", "setting", "line"),
    [
        (
            ["plan"],
            {"PAGERDUTY_API_TOKEN": None},  # unset, not empty
            "PAGERDUTY_API_TOKEN is not set: `nthlayer plan` reads PagerDuty with a REST API key "
            "(read-only will do)",
        ),
        (
            ["plan", "--json"],
            {"NTHLAYER_MAX_TOTAL_REMOVALS": "fifty"},
            "NTHLAYER_MAX_TOTAL_REMOVALS='fifty': must be a whole number, 0 or more (unset: 50)",
        ),
        (
            ["plan"],
            {"NTHLAYER_IO_MANAGER": "s3"},
            "NTHLAYER_IO_MANAGER='s3': must be one of filesystem, ledger (unset: filesystem)",
        ),
        (
            ["approve", "plan-0123456789ab", "--approver", "alice"],
            {"NTHLAYER_MAX_TEAM_REMOVAL_SHARE": "7"},
            "NTHLAYER_MAX_TEAM_REMOVAL_SHARE='7': must be a share between 0 and 1 (0.2 is 20 %); "
            "for 7 % write 0.07",
        ),
        (
            ["plan"],
            {"NTHLAYER_SOURCE_PRECEDENCE": "git,ldap"},
            "NTHLAYER_SOURCE_PRECEDENCE='git,ldap': must be a comma-separated order of git, cortex",
        ),
    ],
)
def test_a_missing_or_malformed_setting_is_one_line_and_exit_1(
    offline_env: dict[str, str], args: list[str], setting: dict[str, str | None], line: str
) -> None:
    environ = {
        name: value for name, value in {**os.environ, **offline_env, **setting}.items() if value is not None
    }
    run = subprocess.run(
        [sys.executable, "-m", "nthlayer_pipelines.cli", *args],
        env=environ,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (run.returncode, run.stdout, run.stderr) == (1, "", f"error: {line}\n")


def test_doctor_names_a_malformed_setting_as_its_load_would(offline_env: dict[str, str]) -> None:
    run = nthlayer("doctor", environ={**offline_env, "NTHLAYER_MIN_TEAM_REMOVALS": "none"})
    assert run.returncode == 1
    assert (
        "fail  settings: NTHLAYER_MIN_TEAM_REMOVALS='none': must be a whole number, 1 or more (unset: 2)"
        in run.stdout.splitlines()
    )
    assert "Traceback" not in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        (
            {"NTHLAYER_MAX_TEAM_REMOVAL_SHARE": "7"},
            "SettingsError: NTHLAYER_MAX_TEAM_REMOVAL_SHARE='7': must be a share between 0 and 1 "
            "(0.2 is 20 %); for 7 % write 0.07",
        ),
        (  # a schedule Dagster itself would refuse with a traceback of its own
            {"NTHLAYER_REFRESH_CRON": "hourly"},
            "SettingsError: NTHLAYER_REFRESH_CRON='hourly': must be a cron expression of 5 fields "
            "(unset: 0 * * * *)",
        ),
    ],
)
def test_the_code_location_refuses_to_load_with_a_malformed_setting(
    offline_env: dict[str, str], setting: dict[str, str], line: str
) -> None:
    """`dagster definitions validate` (and so the webserver and daemon) say it at load, not in a run."""
    run = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env={**offline_env, "PATH": "/usr/bin:/bin", **setting},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    assert line in run.stdout + run.stderr


# ---- what records a plan, and what makes a new one -----------------------------------------------------


def plan_id_printed(environ: dict[str, str]) -> str:
    run = nthlayer("plan", "--json", environ=environ)
    assert run.returncode == 2, run.stderr
    return json.loads(run.stdout)["plan_id"]


def test_a_plan_id_only_previewed_or_rejected_says_what_records_a_new_plan(pipeline_env) -> None:
    previewed = plan_id_printed(pipeline_env)

    # `nthlayer plan` records nothing: the refusal names what does, and how to start it.
    unrecorded = nthlayer("approve", previewed, "--approver", "alice", environ=pipeline_env)
    assert unrecorded.returncode == 1
    assert unrecorded.stderr.splitlines()[-1] == (
        f"error: no plan {previewed!r} in the ledger: only a refresh run records a plan (`nthlayer plan` "
        "previews the one a refresh would record, and records nothing); launch the `refresh` job (in the UI, "
        "or `dg launch --job refresh -m nthlayer_pipelines.definitions`; refresh_schedule runs it hourly), "
        "then approve the plan it records"
    )

    assert refresh(pipeline_env).output_for_node("change_plan").id == previewed
    rejected = nthlayer("reject", previewed, "--approver", "bob", environ=pipeline_env)
    assert rejected.returncode == 0, rejected.stderr
    assert AFTER_REJECTION in rejected.stdout.splitlines()
    again = nthlayer("approve", previewed, "--approver", "alice", environ=pipeline_env)
    assert again.returncode == 1
    assert again.stderr.splitlines()[-1].endswith(f"; {AFTER_REJECTION}")

    # The advice holds: the next refresh records the same drift as a new plan, which may be approved.
    renewed = refresh(pipeline_env).output_for_node("change_plan").id
    assert renewed != previewed and plan_id_printed(pipeline_env) == renewed
    approved = nthlayer("approve", renewed, "--approver", "alice", environ=pipeline_env)
    assert approved.returncode == 0, approved.stderr


# ---- a blocked plan says why ----------------------------------------------------------------------------

# One removal from payments' four members is over these limits (25 % > 10 %, counted from one removal).
STRICT = {"NTHLAYER_MIN_TEAM_REMOVALS": "1", "NTHLAYER_MAX_TEAM_REMOVAL_SHARE": "0.1"}
PAYMENTS_REASON = re.compile(r"payments \(P\w+\): 1 of 4 members removed \(25 % > 10 %\)")


def test_a_plan_over_the_blast_radius_prints_the_plan_and_why_and_exits_3(pipeline_env) -> None:
    environ = {**pipeline_env, **STRICT}
    text = nthlayer("plan", environ=environ)
    assert text.returncode == 3, text.stderr
    assert text.stdout.startswith("Plan plan-") and "- payments (Payments, P" in text.stdout
    verdict = text.stderr.splitlines()
    assert verdict[0] == "blocked: check change_plan_within_blast_radius failed on change_plan:"
    assert PAYMENTS_REASON.fullmatch(verdict[1].removeprefix("  - "))
    assert "--allow-blast-radius" in verdict[2] and "allow_blast_radius: true" not in text.stderr

    as_json = nthlayer("plan", "--json", environ=environ)
    assert as_json.returncode == 3, as_json.stderr
    assert_plan_json_valid(json.loads(as_json.stdout))
    blocked = json.loads(as_json.stdout)["blocked"]
    assert blocked["checks"] == ["change_plan_within_blast_radius"]
    assert len(blocked["reasons"]) == 1 and PAYMENTS_REASON.fullmatch(blocked["reasons"][0])

    # The check carries the same reasons; the approval's refusal names the override as the CLI spells it.
    result = refresh(environ)
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "change_plan_within_blast_radius"
    ]
    assert not evaluation.passed and PAYMENTS_REASON.fullmatch(evaluation.description)
    assert PAYMENTS_REASON.fullmatch(evaluation.metadata["reasons"].value.removeprefix("- "))
    plan_id = result.output_for_node("change_plan").id
    refused = nthlayer("approve", plan_id, "--approver", "alice", environ=environ)
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1].endswith(
        "Check the removals, then approve with `--allow-blast-radius` to override"
    )
    allowed = nthlayer("approve", plan_id, "--approver", "alice", "--allow-blast-radius", environ=environ)
    assert allowed.returncode == 0, allowed.stderr


def test_a_failed_check_names_what_failed(pipeline_env, tmp_path: Path) -> None:
    definitions = tmp_path / "definitions"
    shutil.copytree(REPO / "examples" / "org", definitions)
    platform = definitions / "teams" / "platform.yaml"
    platform.write_text(
        platform.read_text().replace("judy@example.com, role: manager", "judy@example.com, role: responder")
    )

    run = nthlayer("plan", "--definitions", str(definitions), environ=pipeline_env)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr.splitlines() == [
        "error: check desired_teams_have_a_manager failed on desired_state:",
        "  - platform (git, teams/platform.yaml): none of its 2 members is a manager; make one a manager",
    ]


def test_validate_prints_every_problem_of_the_standards_and_services_with_its_place(tmp_path: Path) -> None:
    definitions = tmp_path / "definitions"
    shutil.copytree(REPO / "examples" / "org", definitions)
    standards = definitions / "standards.yaml"
    standards.write_text(
        standards.read_text()
        .replace("urgency: high                   #", "urgency: support-hours          #")
        .replace("loops: 1", "loops: 12")
    )
    services = definitions / "services" / "services.yaml"
    services.write_text(
        services.read_text().replace("displayName: Payment Webhooks", "displayName: payment api")
    )

    run = nthlayer("validate", str(definitions), environ={})

    assert run.returncode == 1
    assert run.stderr.splitlines() == [
        "services/services.yaml: documents[1].spec.displayName: displayName 'payment api' is also the "
        "PagerDuty name of service 'payment-api' (services/services.yaml at documents[0]): names are matched "
        "case-insensitively, so both would map to one PagerDuty service (line 13)",
        "standards.yaml: documents[0].spec.service.urgency: urgency 'support-hours' is not supported yet: it "
        "needs support hours on the service, which nthlayer does not manage yet (line 14)",
        "standards.yaml: documents[1].spec.escalation.loops: loops must be a whole number from 0 to 9; "
        "got integer 12 (line 23)",
        f"3 problem(s) found in {definitions}",
    ]
