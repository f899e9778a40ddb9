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

from nthlayer_pipelines.assets.desired import defs as desired
from nthlayer_pipelines.assets.pagerduty import defs as pagerduty
from nthlayer_pipelines.orchestration.jobs import (
    apply_plan_job,
    approve_plan_job,
    nightly_audit_job,
    refresh_job,
    reject_plan_job,
)
from nthlayer_pipelines.orchestration.schedules import build_schedules
from nthlayer_pipelines.orchestration.sensors import (
    build_approved_plans_sensor,
    build_refresh_after_apply_sensor,
    run_failure_to_slack,
)
from nthlayer_pipelines.resources.cortex.resource import CortexResource
from nthlayer_pipelines.resources.io_manager import io_managers
from nthlayer_pipelines.resources.ledger import LedgerResource
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.resources.settings import (
    DefinitionsRepository,
    DeploymentSettings,
    SettingsError,
)
from nthlayer_pipelines.resources.slack.resource import SlackNotifier


# Each provider's folders contribute their own Definitions (assets, checks); the code location merges them
# with the one approval and apply path every kind shares.
# (Built in a function: the code location's module holds one Definitions, `defs`.)
def _providers() -> tuple[list[Any], list[Any]]:
    merged = dg.Definitions.merge(desired.definitions(), pagerduty.definitions())
    return list(merged.assets or ()), list(merged.asset_checks or ())


ASSETS, ALL_CHECKS = _providers()


def build_resources(
    environ: Mapping[str, str] = os.environ, *, read_only: bool = False
) -> dict[str, dg.ConfigurableResource]:
    """The deployment's resources; `read_only` (`nthlayer plan`) makes the ledger and PagerDuty refuse
    every write, whatever the environment names."""
    return resources_from(DeploymentSettings.from_env(environ), read_only=read_only)


def resources_from(
    settings: DeploymentSettings, *, read_only: bool = False
) -> dict[str, dg.ConfigurableResource]:
    """The resources, each field from its setting; URLs and secrets given as variables stay `dg.EnvVar`s,
    read in the run's process."""
    return {
        "pagerduty": PagerDutyResource(
            read_only=read_only,
            api_url=settings.bound("pagerduty_api_url"),
            api_token=dg.EnvVar(settings.env_name("pagerduty_api_token")),
            timeout_seconds=settings.pagerduty_timeout_seconds,
            max_attempts=settings.pagerduty_max_attempts,
            from_email=settings.pagerduty_from_email,
            max_concurrency=settings.pagerduty_max_concurrency,
            rate_limit=settings.pagerduty_rate_limit,
            rate_window_seconds=settings.pagerduty_rate_window_seconds,
            rate_burst=settings.pagerduty_rate_burst,
            full_refresh_every_hours=settings.full_refresh_every_hours,
            max_cursor_age_hours=settings.max_cursor_age_hours,
        ),
        "cortex": CortexResource(
            api_url=settings.bound("cortex_api_url"),
            api_token=settings.bound("cortex_api_token"),
            role_map=settings.cortex_role_map,
            default_role=settings.cortex_default_role,
            prune=settings.cortex_prune,
            timeout_seconds=settings.cortex_timeout_seconds,
            max_attempts=settings.cortex_max_attempts,
        ),
        "definitions": DefinitionsRepository(path=settings.definitions),
        "reconcile": settings.reconcile(),
        "ledger": LedgerResource(url=settings.bound("ledger_url"), read_only=read_only),
        "slack": SlackNotifier(
            token=settings.bound("slack_bot_token"),
            base_url=settings.bound("slack_api_url"),
            channel=settings.slack_channel,
            dagster_url=settings.dagster_url,
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
    settings = DeploymentSettings.from_env(environ)
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[refresh_job, nightly_audit_job, approve_plan_job, reject_plan_job, apply_plan_job],
        schedules=build_schedules(
            refresh_cron=settings.refresh_cron, audit_cron=settings.audit_cron, timezone=settings.timezone
        ),
        sensors=[
            build_approved_plans_sensor(settings.sensor_interval_seconds),
            build_refresh_after_apply_sensor(settings.sensor_interval_seconds),
            run_failure_to_slack,
        ],
        resources={
            **{
                name: fixed_by_deployment(resource, LAUNCH_CONFIG.get(name))
                for name, resource in {**resources_from(settings), **io_managers(settings)}.items()
            },
            "approvers": _fixed_value(settings.approvers, "Who may approve: NTHLAYER_APPROVERS."),
        },
    )


try:
    defs = build_definitions()
except SettingsError as error:
    raise SettingsError(str(error)) from None  # `dagster` and `dg` show the line, not the readers' frames
