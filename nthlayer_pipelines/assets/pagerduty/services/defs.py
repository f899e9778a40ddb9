"""What services held to their tier's standard contribute to the code location."""

import dagster as dg

from nthlayer_pipelines.assets.pagerduty.services.assets import pagerduty_services, service_standards


def definitions() -> dg.Definitions:
    return dg.Definitions(assets=[pagerduty_services, service_standards])
