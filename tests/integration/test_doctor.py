"""`nthlayer doctor` as an operator runs it: against the sandbox over loopback, a Dagster instance on the
real Postgres, and a ledger; each fault is said in words and fails the command, and no secret is printed.

A healthy deployment, with its daemon alive, is checked end to end in tests/e2e/test_secrets.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from nthlayer_pipelines.resources.ledger import Ledger
from tests.postgres import free_port
from tests.support import REPO

pytestmark = pytest.mark.postgres

NTHLAYER = Path(sys.executable).parent / "nthlayer"
LINE = re.compile(r"^(ok|warn|fail)\s+(\w+): (.*)$")


def doctor(environ: dict[str, str]) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Exit code, each check's (status, message), and everything printed."""
    done = subprocess.run(
        [str(NTHLAYER), "doctor"],
        cwd=REPO,
        env={k: v for k, v in {**os.environ, **environ}.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=120,
    )
    checks = {}
    for line in done.stdout.splitlines():
        match = LINE.match(line)
        assert match, f"not a check line: {line!r}"
        checks[match.group(2)] = (match.group(1), match.group(3))
    return done.returncode, checks, done.stdout + done.stderr


@pytest.fixture
def instance_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.fixture
def deployment_env(pipeline_env: dict[str, str], instance_home: Path, postgres_url: str) -> dict[str, str]:
    return {
        **pipeline_env,
        "DAGSTER_HOME": str(instance_home),
        "DAGSTER_POSTGRES_URL": postgres_url,
        "NTHLAYER_LEDGER_URL": postgres_url,
        "NTHLAYER_APPROVERS": "alice@example.com,bob@example.com",
    }


def test_a_deployment_without_its_daemon_fails_on_that_alone(deployment_env: dict[str, str]) -> None:
    Ledger(deployment_env["NTHLAYER_LEDGER_URL"]).dispose()  # its tables, as the first refresh makes them
    code, checks, _ = doctor(deployment_env)

    assert code == 1
    assert {name: status for name, (status, _) in checks.items()} == {
        "pagerduty": "ok",
        "cortex": "ok",
        "slack": "ok",
        "definitions": "ok",
        "settings": "ok",
        "approvers": "ok",
        "storage": "ok",
        "daemon": "fail",
        "ledger": "ok",
    }
    assert checks["daemon"][1].startswith("no dagster-daemon has ever run on this instance")
    assert "Postgres at postgresql+psycopg2://postgres@127.0.0.1" in checks["storage"][1]
    assert checks["approvers"][1] == "2 may approve: alice@example.com, bob@example.com"


def test_wrong_tokens_are_named_with_each_providers_refusal_and_never_printed(
    deployment_env: dict[str, str],
) -> None:
    wrong = {
        "PAGERDUTY_API_TOKEN": "pd-wrong-token-4f1e",
        "CORTEX_API_TOKEN": "cortex-wrong-token-9a2b",
        "SLACK_BOT_TOKEN": "xoxb-wrong-token-77c3",
    }
    code, checks, printed = doctor({**deployment_env, **wrong})

    assert code == 1
    assert checks["pagerduty"][0] == "fail"
    assert checks["pagerduty"][1].endswith(
        "PagerDuty GET /users: Authentication failed (HTTP 401, code 2006); "
        "check the API token in PAGERDUTY_API_TOKEN"
    )
    assert checks["cortex"][0] == "fail" and "CORTEX_API_TOKEN" in checks["cortex"][1]
    assert checks["slack"][0] == "fail" and checks["slack"][1].endswith(
        "refused the token in SLACK_BOT_TOKEN: invalid_auth"
    )
    assert not [token for token in wrong.values() if token in printed]


def test_a_missing_token_and_an_unreachable_provider_are_said_in_words(
    deployment_env: dict[str, str],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/pagerduty"
    code, checks, _ = doctor({**deployment_env, "PAGERDUTY_API_TOKEN": "", "CORTEX_API_URL": closed})

    assert code == 1
    assert checks["pagerduty"] == ("fail", "PAGERDUTY_API_TOKEN is not set: every refresh needs it")
    assert checks["cortex"][0] == "fail" and closed in checks["cortex"][1]


def test_storage_that_does_not_answer_fails_without_showing_its_password(
    deployment_env: dict[str, str],
) -> None:
    password = "storage-password-5d8e"
    unreachable = f"postgresql+psycopg2://dagster:{password}@127.0.0.1:{free_port()}/dagster"
    code, checks, printed = doctor({**deployment_env, "DAGSTER_POSTGRES_URL": unreachable})

    assert code == 1
    assert checks["storage"][0] == "fail"
    assert checks["storage"][1].startswith("the instance in ")
    assert "cannot list its runs" in checks["storage"][1]
    assert checks["daemon"] == ("fail", "no instance to ask: its storage does not answer")
    assert password not in printed


def test_ledger_tables_changed_by_hand_fail_and_say_what_is_missing(
    deployment_env: dict[str, str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'old-ledger.db'}"
    Ledger(url).dispose()
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # the plans table without its change count, revision unchanged
        connection.execute(sa.text("ALTER TABLE nthlayer_plans DROP COLUMN change_count"))
    engine.dispose()

    code, checks, _ = doctor({**deployment_env, "NTHLAYER_LEDGER_URL": url})

    assert code == 1
    status, message = checks["ledger"]
    assert status == "fail"
    assert "nthlayer_plans lacks change_count" in message and "changed by hand" in message


def test_no_ledger_yet_and_no_approvers_list_are_warnings_not_failures(
    deployment_env: dict[str, str], tmp_path: Path
) -> None:
    environ = {**deployment_env, "NTHLAYER_LEDGER_URL": f"sqlite:///{tmp_path / 'none-yet.db'}"}
    environ.pop("NTHLAYER_APPROVERS")
    code, checks, _ = doctor(environ)

    assert checks["ledger"][0] == "warn" and "the first refresh creates it" in checks["ledger"][1]
    assert checks["approvers"][0] == "warn" and "NTHLAYER_APPROVERS is not set" in checks["approvers"][1]
    assert code == 1  # the daemon is still missing; warnings alone would pass
    assert [name for name, (status, _) in checks.items() if status == "fail"] == ["daemon"]
