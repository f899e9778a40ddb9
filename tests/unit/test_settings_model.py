"""The deployment's settings model: each kind of variable, read or refused in one line naming it, secrets
kept out of sight, and the resources bound to the variables they were given by."""

from __future__ import annotations

import dagster as dg
import pytest

from nthlayer_pipelines.definitions import build_definitions, build_resources
from nthlayer_pipelines.doctor import Status, check_settings
from nthlayer_pipelines.resources.settings import DeploymentSettings, SettingsError, misspelt


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
            "comma-separated list of create_team, create_escalation_policy, add_member, set_role, "
            "update_escalation_policy, set_service_policy, update_service, remove_member, or nothing for "
            "none",
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


def test_the_model_built_bare_reads_the_process_environment_the_same_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NTHLAYER_CORTEX_ROLE_MAP", "owner=manager")  # its own format, never JSON
    monkeypatch.setenv("NTHLAYER_MAX_TOTAL_REMOVALS", " ")
    settings = DeploymentSettings()
    assert (settings.cortex_role_map, settings.max_total_removals) == ({"owner": "manager"}, 50)
    assert DeploymentSettings(max_total_removals=5).max_total_removals == 5  # a value given as such


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


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "owner=boss",
            "NTHLAYER_CORTEX_ROLE_MAP='owner=boss': 'boss' is not a PagerDuty role; must be comma-separated "
            "tag=role pairs, each role one of observer, responder, manager",
        ),
        (
            "owner:manager",
            "NTHLAYER_CORTEX_ROLE_MAP='owner:manager': 'owner:manager' is not tag=role; must be "
            "comma-separated tag=role pairs, each role one of observer, responder, manager",
        ),
        (
            "lead=manager,lead=observer",
            "NTHLAYER_CORTEX_ROLE_MAP='lead=manager,lead=observer': 'lead' is mapped twice; must be "
            "comma-separated tag=role pairs, each role one of observer, responder, manager",
        ),
    ],
)
def test_a_mapping_is_tag_equals_role_pairs_each_role_pagerdutys(value: str, message: str) -> None:
    assert refusal({"NTHLAYER_CORTEX_ROLE_MAP": value}) == message


def test_a_mapping_flag_and_role_are_read_in_any_case() -> None:
    settings = DeploymentSettings.from_env(
        {
            "NTHLAYER_CORTEX_ROLE_MAP": " owner=Manager , member=responder ",
            "NTHLAYER_CORTEX_PRUNE": "Yes",
            "NTHLAYER_CORTEX_DEFAULT_ROLE": "OBSERVER",
        }
    )
    assert settings.cortex_role_map == {"owner": "manager", "member": "responder"}
    assert (settings.cortex_prune, settings.cortex_default_role) == (True, "observer")
    assert refusal({"NTHLAYER_CORTEX_PRUNE": "maybe"}) == (
        "NTHLAYER_CORTEX_PRUNE='maybe': must be true or false (unset: false)"
    )
    assert refusal({"NTHLAYER_CORTEX_DEFAULT_ROLE": "admin"}) == (
        "NTHLAYER_CORTEX_DEFAULT_ROLE='admin': must be one of observer, responder, manager (unset: responder)"
    )


# Every variable with a valid value other than its default: each must reach a resource's field.
NOT_THE_DEFAULTS = {
    "PAGERDUTY_API_URL": "https://api.eu.pagerduty.com",
    "PAGERDUTY_API_TOKEN": "pd-token",
    "NTHLAYER_PAGERDUTY_TIMEOUT_SECONDS": "12.5",
    "NTHLAYER_PAGERDUTY_MAX_ATTEMPTS": "3",
    "NTHLAYER_PAGERDUTY_FROM_EMAIL": "ops@example.com",
    "NTHLAYER_PAGERDUTY_MAX_CONCURRENCY": "4",
    "NTHLAYER_PAGERDUTY_RATE_LIMIT": "480",
    "NTHLAYER_PAGERDUTY_RATE_WINDOW_SECONDS": "30",
    "NTHLAYER_PAGERDUTY_RATE_BURST": "8",
    "NTHLAYER_FULL_REFRESH_EVERY_HOURS": "6",
    "NTHLAYER_MAX_CURSOR_AGE_HOURS": "48",
    "CORTEX_API_URL": "https://cortex.example",
    "CORTEX_API_TOKEN": "cortex-token",
    "NTHLAYER_CORTEX_ROLE_MAP": "owner=manager,member=responder",
    "NTHLAYER_CORTEX_DEFAULT_ROLE": "observer",
    "NTHLAYER_CORTEX_PRUNE": "true",
    "NTHLAYER_CORTEX_TIMEOUT_SECONDS": "10",
    "NTHLAYER_CORTEX_MAX_ATTEMPTS": "2",
    "SLACK_API_URL": "https://slack.example/api/",
    "SLACK_BOT_TOKEN": "xoxb-token",
    "NTHLAYER_SLACK_CHANNEL": "ops-changes",
    "NTHLAYER_DAGSTER_URL": "https://dagster.example",
    "NTHLAYER_DEFINITIONS": "/srv/definitions",
    "NTHLAYER_SOURCE_PRECEDENCE": "cortex,git",
    "NTHLAYER_LEDGER_URL": "sqlite:///ledger.db",
    "NTHLAYER_IO_MANAGER": "ledger",
    "NTHLAYER_REFRESH_CRON": "*/15 * * * *",
    "NTHLAYER_AUDIT_CRON": "0 3 * * *",
    "NTHLAYER_TIMEZONE": "Europe/Berlin",
    "NTHLAYER_SENSOR_INTERVAL_SECONDS": "5",
    "NTHLAYER_MAX_UNRESOLVED_USERS": "3",
    "NTHLAYER_PRE_APPROVED_KINDS": "create_team",
    "NTHLAYER_MAX_PRE_APPROVED_CHANGES": "7",
    "NTHLAYER_MAX_TEAM_REMOVAL_SHARE": "0.5",
    "NTHLAYER_MIN_TEAM_REMOVALS": "3",
    "NTHLAYER_MAX_TOTAL_REMOVALS": "9",
    "NTHLAYER_MAX_SERVICES_REPOINTED": "4",
    "NTHLAYER_APPROVERS": "alice@example.com",
}
# Fields no variable sets: a command's (`nthlayer plan` reads only) or a run's (the launchpad scopes teams);
# PagerDuty's token is always its variable, read in the run's process, set or not.
NOT_SETTINGS = {
    ("pagerduty", "read_only"),
    ("ledger", "read_only"),
    ("reconcile", "teams"),
    ("pagerduty", "api_token"),
}


def test_the_list_above_is_every_variable_of_the_model() -> None:
    variables = {DeploymentSettings.env_name(name) for name in DeploymentSettings.model_fields}
    assert variables == set(NOT_THE_DEFAULTS)


def test_every_resource_field_but_a_commands_or_a_runs_own_is_reached_by_a_setting() -> None:
    given, unset = build_resources(NOT_THE_DEFAULTS), build_resources({})
    unreached = [
        (name, field)
        for name, resource in given.items()
        for field in type(resource).model_fields
        if (name, field) not in NOT_SETTINGS and getattr(resource, field) == getattr(unset[name], field)
    ]
    assert not unreached, f"no setting changes these resource fields: {unreached}"


def test_unset_variables_leave_every_resource_field_at_its_own_default() -> None:
    unset = build_resources({})
    for name, resource in unset.items():
        for field, info in type(resource).model_fields.items():
            if not info.is_required():
                assert getattr(resource, field) == info.get_default(call_default_factory=True), (name, field)
    assert unset["slack"].token == ""  # dagster-slack's required field: empty, Slack is off


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "NTHLAYER_REFRESH_CRON",
            "hourly",
            "NTHLAYER_REFRESH_CRON='hourly': must be a cron expression of 5 fields (unset: 0 * * * *)",
        ),
        (
            "NTHLAYER_AUDIT_CRON",
            "61 2 * * *",
            "NTHLAYER_AUDIT_CRON='61 2 * * *': must be a cron expression of 5 fields (unset: 30 2 * * *)",
        ),
        (
            "NTHLAYER_TIMEZONE",
            "Mars/Olympus",
            "NTHLAYER_TIMEZONE='Mars/Olympus': must be an IANA timezone like Europe/Berlin (unset: UTC)",
        ),
        (
            "NTHLAYER_CORTEX_ROLE_MAP",
            "owner",
            "NTHLAYER_CORTEX_ROLE_MAP='owner': 'owner' is not tag=role; must be comma-separated tag=role "
            "pairs, each role one of observer, responder, manager",
        ),
    ],
)
def test_the_code_location_refuses_a_schedule_or_mapping_dagster_would_fail_on_naming_it(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        build_definitions({name: value})
    assert str(raised.value) == message


def test_the_schedules_run_as_their_variables_say_and_blank_is_their_default() -> None:
    environ = {"NTHLAYER_REFRESH_CRON": "*/15 * * * *", "NTHLAYER_TIMEZONE": "Europe/Berlin"}
    schedules = {s.name: s for s in build_definitions(environ).schedules}
    assert schedules["refresh_schedule"].cron_schedule == "*/15 * * * *"
    assert schedules["nightly_audit_schedule"].execution_timezone == "Europe/Berlin"
    blank = {s.name: s for s in build_definitions({"NTHLAYER_REFRESH_CRON": " "}).schedules}
    assert blank["refresh_schedule"].cron_schedule == "0 * * * *"


def test_a_variable_a_slip_away_from_a_settings_is_named_with_the_one_it_meant() -> None:
    environ = {
        "NTHLAYER_APPROVER": "alice",  # the s forgotten
        "nthlayer_max_total_removals": "9",  # lower case: not read either
        "NTHLAYER_TEST_POSTGRES_URL": "postgresql://elsewhere",  # the tests' own, nothing like a setting
        "PAGERDUTY_API_TOKN": "pd-token",  # another prefix: not ours to judge
        "NTHLAYER_APPROVERS": "bob",
    }
    assert misspelt(environ) == [
        ("NTHLAYER_APPROVER", "NTHLAYER_APPROVERS"),
        ("nthlayer_max_total_removals", "NTHLAYER_MAX_TOTAL_REMOVALS"),
    ]
    verdict = check_settings({"NTHLAYER_DEFINITION": "/srv/definitions"})
    assert (verdict.status, verdict.message) == (
        Status.WARN,
        "every setting the code location reads is valid, but NTHLAYER_DEFINITION is read by nothing: "
        "NTHLAYER_DEFINITIONS?",
    )
    assert check_settings({"NTHLAYER_DEFINITIONS": "/srv/definitions"}).status is Status.OK
