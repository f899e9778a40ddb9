"""What the CLI and the code location say when something is wrong: one line naming the variable, the check
or the next step, never a traceback nor advice that points back at itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nthlayer_pipelines.resources.ledger import AFTER_REJECTION
from tests.integration.test_pipeline import nthlayer, refresh
from tests.support import REPO

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
            {"PAGERDUTY_API_TOKEN": ""},
            "PAGERDUTY_API_TOKEN is not set: `nthlayer plan` reads PagerDuty with a REST API key "
            "(read-only will do)",
        ),
        (
            ["plan", "--json"],
            {"NTHLAYER_MAX_TOTAL_REMOVALS": "fifty"},
            "NTHLAYER_MAX_TOTAL_REMOVALS='fifty': must be a whole number, 0 or more (unset: 50)",
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
    offline_env: dict[str, str], args: list[str], setting: dict[str, str], line: str
) -> None:
    run = nthlayer(*args, environ={**offline_env, **setting})
    assert (run.returncode, run.stdout, run.stderr) == (1, "", f"error: {line}\n")


def test_doctor_names_a_malformed_setting_as_its_load_would(offline_env: dict[str, str]) -> None:
    run = nthlayer("doctor", environ={**offline_env, "NTHLAYER_MIN_TEAM_REMOVALS": "none"})
    assert run.returncode == 1
    assert (
        "fail  settings: NTHLAYER_MIN_TEAM_REMOVALS='none': must be a whole number, 1 or more (unset: 2)"
        in run.stdout.splitlines()
    )
    assert "Traceback" not in run.stdout + run.stderr


def test_the_code_location_refuses_to_load_with_a_malformed_setting(offline_env: dict[str, str]) -> None:
    """`dagster definitions validate` (and so the webserver and daemon) say it at load, not in a run."""
    run = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env={**offline_env, "PATH": "/usr/bin:/bin", "NTHLAYER_MAX_TEAM_REMOVAL_SHARE": "7"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    assert (
        "SettingsError: NTHLAYER_MAX_TEAM_REMOVAL_SHARE='7': must be a share between 0 and 1 (0.2 is 20 %); "
        "for 7 % write 0.07" in run.stdout + run.stderr
    )


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
