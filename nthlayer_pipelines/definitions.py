"""The one Definitions object, assembled explicitly from the environment.

Secrets are bound as `dg.EnvVar` so they are read in the run's process and never stored in run config
or the event log. A catalog source whose URL is unset is off. The deployment's environment fixes every
resource's configuration: a run's config (the launchpad) may only scope a refresh to some teams.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from nthlayer_pipelines.assets.checks import ALL_CHECKS
from nthlayer_pipelines.assets.desired import cortex_teams, desired_state, git_definitions
from nthlayer_pipelines.assets.observed import pagerduty_snapshot
from nthlayer_pipelines.assets.pagerduty.services.assets import ASSETS as SERVICES_ASSETS
from nthlayer_pipelines.assets.reconcile import change_plan, divergences
from nthlayer_pipelines.orchestration.jobs import (
    apply_plan_job,
    approve_plan_job,
    nightly_audit_job,
    refresh_job,
    reject_plan_job,
)
from nthlayer_pipelines.orchestration.schedules import (
    DEFAULT_AUDIT_CRON,
    DEFAULT_REFRESH_CRON,
    build_schedules,
)
from nthlayer_pipelines.orchestration.sensors import (
    DEFAULT_SENSOR_INTERVAL_SECONDS,
    build_approved_plans_sensor,
    build_refresh_after_apply_sensor,
    run_failure_to_slack,
)
from nthlayer_pipelines.resources.cortex.resource import CortexResource
from nthlayer_pipelines.resources.io_manager import io_managers_from_env
from nthlayer_pipelines.resources.ledger import LedgerResource
from nthlayer_pipelines.resources.pagerduty.client import DEFAULT_API_URL
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.resources.settings import (
    DEFAULT_DEFINITIONS,
    Approvers,
    DefinitionsRepository,
    ReconcileSettings,
    SettingsError,
    env_positive,
    env_whole,
)
from nthlayer_pipelines.resources.slack.resource import SLACK_PUBLIC_API, SlackNotifier

ASSETS = [
    git_definitions,
    cortex_teams,
    desired_state,
    pagerduty_snapshot,
    divergences,
    *SERVICES_ASSETS,
    change_plan,
]


def _env_or(environ: Mapping[str, str], name: str, default: str) -> str | dg.EnvVar:
    """An EnvVar when the variable is set (read at run time), else the default."""
    return dg.EnvVar(name) if environ.get(name) else default


def build_resources(
    environ: Mapping[str, str] = os.environ, *, read_only: bool = False
) -> dict[str, dg.ConfigurableResource]:
    """The deployment's resources; `read_only` (`nthlayer plan`) makes the ledger and PagerDuty refuse
    every write, whatever the environment names."""
    return {
        "pagerduty": PagerDutyResource(
            read_only=read_only,
            api_url=_env_or(environ, "PAGERDUTY_API_URL", DEFAULT_API_URL),
            api_token=dg.EnvVar("PAGERDUTY_API_TOKEN"),
            full_refresh_every_hours=env_positive(environ, "NTHLAYER_FULL_REFRESH_EVERY_HOURS", 24),
            timeout_seconds=env_positive(environ, "NTHLAYER_PAGERDUTY_TIMEOUT_SECONDS", 30),
        ),
        "cortex": CortexResource(
            api_url=_env_or(environ, "CORTEX_API_URL", ""),
            api_token=_env_or(environ, "CORTEX_API_TOKEN", ""),
        ),
        "definitions": DefinitionsRepository(path=environ.get("NTHLAYER_DEFINITIONS", DEFAULT_DEFINITIONS)),
        "reconcile": ReconcileSettings.from_env(environ),
        "ledger": LedgerResource(url=_env_or(environ, "NTHLAYER_LEDGER_URL", ""), read_only=read_only),
        "slack": SlackNotifier(
            token=_env_or(environ, "SLACK_BOT_TOKEN", ""),
            base_url=_env_or(environ, "SLACK_API_URL", SLACK_PUBLIC_API),
            channel=environ.get("NTHLAYER_SLACK_CHANNEL", ""),
            dagster_url=environ.get("NTHLAYER_DAGSTER_URL", "http://127.0.0.1:3000"),
        ),
    }


# What a run's config may set; everything else is the deployment's. Left open, anyone who can launch a run
# could send a provider's token to a server of their own (`api_url: https://elsewhere` with
# `api_token: {env: PAGERDUTY_API_TOKEN}`), or widen the pre-approval policy and skip the approval gate.
LAUNCH_CONFIG: dict[str, dict[str, dg.Field]] = {
    "reconcile": {
        "teams": dg.Field(
            [str],
            is_required=False,
            default_value=[],
            description="Only compare these desired team slugs (empty: every team).",
        )
    },
}


def _config_value(value: Any) -> Any:
    return {"env": value.env_var_name} if isinstance(value, dg.EnvVar) else value


def fixed_by_deployment(
    resource: dg.ConfigurableResource | dg.ConfigurableIOManager,
    launch_config: Mapping[str, dg.Field] | None = None,
) -> dg.ResourceDefinition:
    """The resource with its configuration fixed as built; a run's config may set only `launch_config`.

    Values bound to an `EnvVar` stay references (`{env: NAME}`), resolved in the run's process.
    """
    launch_config = dict(launch_config or {})
    fixed = {
        name: _config_value(getattr(resource, name))
        for name in type(resource).model_fields
        if name not in launch_config
    }
    return resource.get_resource_definition().configured(
        lambda launched: {**fixed, **launched}, config_schema=launch_config
    )


def _fixed_value(value: object, description: str) -> dg.ResourceDefinition:
    """A resource that is `value`; its empty config schema refuses any config a run brings."""
    return dg.ResourceDefinition(resource_fn=lambda _: value, config_schema={}, description=description)


def build_definitions(environ: Mapping[str, str] = os.environ) -> dg.Definitions:
    sensor_interval = env_whole(
        environ, "NTHLAYER_SENSOR_INTERVAL_SECONDS", DEFAULT_SENSOR_INTERVAL_SECONDS, minimum=1
    )
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[refresh_job, nightly_audit_job, approve_plan_job, reject_plan_job, apply_plan_job],
        schedules=build_schedules(
            refresh_cron=environ.get("NTHLAYER_REFRESH_CRON", DEFAULT_REFRESH_CRON),
            audit_cron=environ.get("NTHLAYER_AUDIT_CRON", DEFAULT_AUDIT_CRON),
            timezone=environ.get("NTHLAYER_TIMEZONE", "UTC"),
        ),
        sensors=[
            build_approved_plans_sensor(sensor_interval),
            build_refresh_after_apply_sensor(sensor_interval),
            run_failure_to_slack,
        ],
        resources={
            **{
                name: fixed_by_deployment(resource, LAUNCH_CONFIG.get(name))
                for name, resource in {**build_resources(environ), **io_managers_from_env(environ)}.items()
            },
            "approvers": _fixed_value(Approvers.from_env(environ), "Who may approve: NTHLAYER_APPROVERS."),
        },
    )


try:
    defs = build_definitions()
except SettingsError as error:
    raise SettingsError(str(error)) from None  # `dagster` and `dg` show the line, not the readers' frames
