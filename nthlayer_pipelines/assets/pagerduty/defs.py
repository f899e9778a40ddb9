"""What PagerDuty contributes to the code location: the snapshot its kinds share, each kind's folder, and
the plan that holds their changes."""

import dagster as dg

from nthlayer_pipelines.assets.pagerduty.plan import change_plan
from nthlayer_pipelines.assets.pagerduty.plan_checks import (
    change_plan_identifies_every_team,
    change_plan_within_blast_radius,
)
from nthlayer_pipelines.assets.pagerduty.services import defs as services
from nthlayer_pipelines.assets.pagerduty.snapshot import pagerduty_snapshot
from nthlayer_pipelines.assets.pagerduty.snapshot_checks import (
    pagerduty_memberships_name_known_users,
    pagerduty_users_have_unique_emails,
)
from nthlayer_pipelines.assets.pagerduty.teams import defs as teams


def definitions() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.Definitions(
            assets=[pagerduty_snapshot, change_plan],
            asset_checks=[
                pagerduty_users_have_unique_emails,
                pagerduty_memberships_name_known_users,
                change_plan_within_blast_radius,
                change_plan_identifies_every_team,
            ],
        ),
        teams.definitions(),
        services.definitions(),
    )
