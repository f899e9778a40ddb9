"""What team membership contributes to the code location."""

import dagster as dg

from nthlayer_pipelines.assets.pagerduty.teams.assets import divergences
from nthlayer_pipelines.assets.pagerduty.teams.checks import unresolved_users_below_threshold


def definitions() -> dg.Definitions:
    return dg.Definitions(assets=[divergences], asset_checks=[unresolved_users_below_threshold])
