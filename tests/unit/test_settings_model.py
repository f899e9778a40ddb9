"""The deployment's settings model: each kind of variable, read or refused in one line naming it, secrets
kept out of sight, and the resources bound to the variables they were given by."""

from __future__ import annotations

import dagster as dg
import pytest

from nthlayer_pipelines.definitions import build_resources
from nthlayer_pipelines.resources.settings import DeploymentSettings, SettingsError


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as raised:
        DeploymentSettings.from_env(environ)
    return str(raised.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (  # a whole number with a lower bound
            "NTHLAYER_MAX_UNRESOLVED_USERS",
            "-1",
            "NTHLAYER_MAX_UNRESOLVED_USERS='-1': must be a whole number, 0 or more (unset: 10)",
        ),
        (  # a number above 0
            "NTHLAYER_FULL_REFRESH_EVERY_HOURS",
            "inf",
            "NTHLAYER_FULL_REFRESH_EVERY_HOURS='inf': must be a number above 0 (unset: 24)",
        ),
        (  # a share, given as a percentage
            "NTHLAYER_MAX_TEAM_REMOVAL_SHARE",
            "20",
            "NTHLAYER_MAX_TEAM_REMOVAL_SHARE='20': must be a share between 0 and 1 (0.2 is 20 %); "
            "for 20 % write 0.2",
        ),
        (  # one of a few words
            "NTHLAYER_IO_MANAGER",
            "s3",
            "NTHLAYER_IO_MANAGER='s3': must be one of filesystem, ledger (unset: filesystem)",
        ),
        (  # a list its own parser reads, naming the variable
            "NTHLAYER_PRE_APPROVED_KINDS",
            "add_member,purge",
            "NTHLAYER_PRE_APPROVED_KINDS='add_member,purge': 'purge' is not a change kind; must be a "
            "comma-separated list of create_team, add_member, set_role, remove_member, or nothing for none",
        ),
        (
            "NTHLAYER_APPROVERS",
            "alice,policy",
            "NTHLAYER_APPROVERS='alice,policy': 'policy' names the pre-approval policy, not a person; "
            "list the people who may approve",
        ),
    ],
)
def test_a_malformed_variable_is_one_line_naming_it_and_what_it_must_be(
    name: str, value: str, message: str
) -> None:
    assert refusal({name: value}) == message


def test_the_text_is_shown_trimmed_and_the_first_bad_variable_in_the_models_order_is_named() -> None:
    assert refusal({"NTHLAYER_MAX_TOTAL_REMOVALS": " lots ", "NTHLAYER_PAGERDUTY_TIMEOUT_SECONDS": "0"}) == (
        "NTHLAYER_PAGERDUTY_TIMEOUT_SECONDS='0': must be a number above 0 (unset: 30)"
    )
    assert refusal({"NTHLAYER_MAX_TOTAL_REMOVALS": " lots "}).startswith("NTHLAYER_MAX_TOTAL_REMOVALS='lots'")


def test_a_required_setting_names_the_variable_and_why_it_is_needed() -> None:
    settings = DeploymentSettings.from_env({"PAGERDUTY_API_TOKEN": "  "})  # blank is unset
    with pytest.raises(SettingsError) as raised:
        settings.require("pagerduty_api_token", "every refresh reads PagerDuty")
    assert str(raised.value) == "PAGERDUTY_API_TOKEN is not set: every refresh reads PagerDuty"
    given = DeploymentSettings.from_env({"PAGERDUTY_API_TOKEN": "pd-token"})
    assert given.require("pagerduty_api_token", "") == "pd-token"


def test_blank_is_unset_except_where_blank_says_something() -> None:
    blank = DeploymentSettings.from_env(
        {
            "NTHLAYER_MAX_TOTAL_REMOVALS": "",
            "PAGERDUTY_API_URL": " ",
            "NTHLAYER_PRE_APPROVED_KINDS": "",
            "NTHLAYER_APPROVERS": "",
            "NTHLAYER_DEFINITIONS": "",
        }
    )
    assert blank.max_total_removals == 50
    assert blank.pagerduty_api_url == "https://api.pagerduty.com"
    assert blank.reconcile().approval_policy().pre_approved == frozenset()  # none pre-approved
    assert blank.approvers.allowed == frozenset()  # nobody but the policy
    assert blank.definitions == ""  # the Git source is off


def test_only_the_given_mapping_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NTHLAYER_MAX_TOTAL_REMOVALS", "fifty")
    assert DeploymentSettings.from_env({}).max_total_removals == 50
    with pytest.raises(SettingsError, match="NTHLAYER_MAX_TOTAL_REMOVALS='fifty'"):
        DeploymentSettings.from_env()


def test_secrets_are_never_shown_and_resources_bind_them_as_variables() -> None:
    environ = {
        "PAGERDUTY_API_TOKEN": "pd-secret-1",
        "CORTEX_API_URL": "https://cortex.example",
        "CORTEX_API_TOKEN": "cortex-secret-2",
        "SLACK_BOT_TOKEN": "xoxb-secret-3",
        "NTHLAYER_LEDGER_URL": "postgresql+psycopg2://nthlayer:ledger-secret-4@db/ledger",
    }
    settings = DeploymentSettings.from_env(environ)
    assert not any(secret in repr(settings) for secret in ("secret-1", "secret-2", "secret-3", "secret-4"))
    resources = build_resources(environ)
    bound = {
        (name, field): getattr(resource, field).env_var_name
        for name, resource in resources.items()
        for field in type(resource).model_fields
        if isinstance(getattr(resource, field), dg.EnvVar)
    }
    assert bound == {
        ("pagerduty", "api_token"): "PAGERDUTY_API_TOKEN",
        ("cortex", "api_url"): "CORTEX_API_URL",
        ("cortex", "api_token"): "CORTEX_API_TOKEN",
        ("ledger", "url"): "NTHLAYER_LEDGER_URL",
        ("slack", "token"): "SLACK_BOT_TOKEN",
    }
    # Unset: the resources' own defaults, Cortex and Slack off.
    unset = build_resources({})
    assert (unset["cortex"].api_url, unset["cortex"].api_token, unset["slack"].token) == ("", "", "")
    assert unset["pagerduty"].api_url == "https://api.pagerduty.com"
