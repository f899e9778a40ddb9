"""Which tokens the sandbox accepts, and what create_app refuses."""

import httpx
import pytest

from nthlayer_pipelines.sandbox import (
    DEFAULT_CORTEX_TOKEN,
    DEFAULT_PAGERDUTY_TOKEN,
    DEFAULT_SLACK_TOKEN,
    SandboxOrg,
    create_app,
    run_cli,
    running_sandbox,
    tokens_from_env,
)


def test_defaults_apply_when_the_pipelines_variables_are_unset() -> None:
    assert tokens_from_env({}) == {
        "pagerduty": "sandbox-pagerduty-token",
        "cortex": "sandbox-cortex-token",
        "slack": "xoxb-sandbox-token",
    }
    assert (DEFAULT_PAGERDUTY_TOKEN, DEFAULT_CORTEX_TOKEN, DEFAULT_SLACK_TOKEN) == (
        "sandbox-pagerduty-token",
        "sandbox-cortex-token",
        "xoxb-sandbox-token",
    )


def test_the_pipelines_variables_set_the_accepted_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGERDUTY_API_TOKEN", "from-env-pd")
    monkeypatch.delenv("CORTEX_API_TOKEN", raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-env")
    with running_sandbox(SandboxOrg()) as sandbox:
        assert sandbox.tokens == {
            "pagerduty": "from-env-pd",
            "cortex": DEFAULT_CORTEX_TOKEN,
            "slack": "xoxb-from-env",
        }
        accepted = httpx.get(
            sandbox.pagerduty_url + "/teams", headers={"Authorization": "Token token=from-env-pd"}
        )
        default = httpx.get(
            sandbox.pagerduty_url + "/teams",
            headers={"Authorization": f"Token token={DEFAULT_PAGERDUTY_TOKEN}"},
        )
        assert (accepted.status_code, default.status_code) == (200, 401)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_limit": 0}, "rate_limit must be >= 1"),
        ({"latency_ms": -1}, "latency_ms >= 0"),
        ({"tokens": {"jira": "x"}}, "tokens for unknown providers: jira"),
    ],
)
def test_create_app_refuses_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_app(SandboxOrg(), **kwargs)


@pytest.mark.parametrize(("seed", "teams"), [(None, None), ("seed.yaml", 3)], ids=["neither", "both"])
def test_run_cli_wants_exactly_one_source_of_org(seed: str | None, teams: int | None) -> None:
    with pytest.raises(ValueError, match="give exactly one of a seed file or a number of teams to generate"):
        run_cli(seed, teams, "127.0.0.1", 8787, 960, 0)
