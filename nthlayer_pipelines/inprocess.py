"""Run the read-only assets in this process, without a Dagster instance: `nthlayer plan` for CI checks."""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from nthlayer_pipelines.core.model import Plan
from nthlayer_pipelines.definitions import ALL_CHECKS, ASSETS, resources_from
from nthlayer_pipelines.orchestration.run_failures import FailedCheck, failed_checks, failure_summary
from nthlayer_pipelines.resources.ledger import LedgerResource
from nthlayer_pipelines.resources.settings import DeploymentSettings


class PlanFailed(Exception):
    """The run failed; the message says which step or check failed and why. `plan` is the plan when it was
    made and only a check of it failed (a blocked team, the blast radius): a reader still sees it. `checks`
    are the checks that failed."""

    def __init__(self, message: str, plan: Plan | None = None, checks: tuple[FailedCheck, ...] = ()) -> None:
        super().__init__(message)
        self.plan = plan
        self.checks = checks


def plan_in_process(environ: Mapping[str, str] = os.environ) -> Plan:
    """The plan the definitions call for now, computed read-only whatever the environment names: the
    ledger (when NTHLAYER_LEDGER_URL names one) is read, to start from its stored snapshot and to name the
    plan instance a refresh would record, and never written; no provider is written either."""
    settings = DeploymentSettings.from_env(environ)
    settings.require(
        "pagerduty_api_token", "`nthlayer plan` reads PagerDuty with a REST API key (read-only will do)"
    )
    resources = resources_from(settings, read_only=True)
    if settings.ledger_url is None:
        # Without a ledger to read, an empty one in memory: a CI check of a definitions repo leaves no files.
        resources["ledger"] = LedgerResource(url="sqlite://", read_only=True)
    result = dg.materialize(
        [*ASSETS, *ALL_CHECKS],
        resources=resources,
        raise_on_error=False,
        tags={"nthlayer/mode": "plan"},
        # stdout carries the plan and stderr the verdict; the run's own event stream stays out of both.
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
    )
    if not result.success:
        planned = result.is_node_success("change_plan")
        raise PlanFailed(
            failure_summary(result.all_events) or "the run failed",
            result.output_for_node("change_plan") if planned else None,
            failed_checks(result.all_events),
        )
    return result.output_for_node("change_plan")
