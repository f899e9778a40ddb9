"""What the desired-state sources contribute to the code location."""

import dagster as dg

from nthlayer_pipelines.assets.desired.assets import cortex_teams, desired_state, git_definitions
from nthlayer_pipelines.assets.desired.checks import desired_teams_have_a_manager


def definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[git_definitions, cortex_teams, desired_state], asset_checks=[desired_teams_have_a_manager]
    )
