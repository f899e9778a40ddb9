"""The deployment's settings, read from the environment in one place: a bad value is one line naming the
variable and what it must be."""

from __future__ import annotations

import pytest

from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.resources.settings import ReconcileSettings, SettingsError


def test_unset_and_blank_numbers_take_their_defaults() -> None:
    settings = ReconcileSettings.from_env({"NTHLAYER_MAX_TOTAL_REMOVALS": " "})
    assert settings == ReconcileSettings()
    assert (
        ReconcileSettings.from_env({"NTHLAYER_MAX_TEAM_REMOVAL_SHARE": "0.5"}).max_team_removal_share == 0.5
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "NTHLAYER_MAX_TOTAL_REMOVALS",
            "fifty",
            "NTHLAYER_MAX_TOTAL_REMOVALS='fifty': must be a whole number, 0 or more (unset: 50)",
        ),
        (
            "NTHLAYER_MIN_TEAM_REMOVALS",
            "0",
            "NTHLAYER_MIN_TEAM_REMOVALS='0': must be a whole number, 1 or more (unset: 2)",
        ),
        (
            "NTHLAYER_MAX_TEAM_REMOVAL_SHARE",
            "7",
            "NTHLAYER_MAX_TEAM_REMOVAL_SHARE='7': must be a share between "
            "0 and 1 (0.2 is 20 %); for 7 % write 0.07",
        ),
        (
            "NTHLAYER_MAX_TEAM_REMOVAL_SHARE",
            "-1",
            "NTHLAYER_MAX_TEAM_REMOVAL_SHARE='-1': must be a share between 0 and 1 (0.2 is 20 %)",
        ),
        (
            "NTHLAYER_SOURCE_PRECEDENCE",
            "git,ldap",
            "NTHLAYER_SOURCE_PRECEDENCE='git,ldap': must be a comma-separated order of git, cortex",
        ),
        (
            "NTHLAYER_PAGERDUTY_TIMEOUT_SECONDS",
            "0",
            "NTHLAYER_PAGERDUTY_TIMEOUT_SECONDS='0': must be a number above 0 (unset: 30)",
        ),
        (
            "NTHLAYER_SENSOR_INTERVAL_SECONDS",
            "1.5",
            "NTHLAYER_SENSOR_INTERVAL_SECONDS='1.5': must be a whole number, 1 or more (unset: 30)",
        ),
    ],
)
def test_the_code_location_refuses_a_bad_setting_naming_it(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        build_definitions({name: value})
    assert str(raised.value) == message
