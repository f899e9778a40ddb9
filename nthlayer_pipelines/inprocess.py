"""Run the read-only assets in this process, without a Dagster instance: `nthlayer plan` for CI checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

from nthlayer_pipelines.assets.checks import ALL_CHECKS
from nthlayer_pipelines.definitions import ASSETS, build_resources
from nthlayer_pipelines.model import Plan
from nthlayer_pipelines.resources.ledger import LedgerResource
from nthlayer_pipelines.resources.pagerduty import TOKEN_ENV_VAR
from nthlayer_pipelines.resources.settings import require_env

if TYPE_CHECKING:
    from dagster._utils.error import SerializableErrorInfo


@dataclass(frozen=True)
class FailedCheck:
    """A blocking check that failed, on which asset, and why: one reason a line (the check's description)."""

    name: str
    asset: str
    reasons: tuple[str, ...]


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
    require_env(
        environ, TOKEN_ENV_VAR, "`nthlayer plan` reads PagerDuty with a REST API key (read-only will do)"
    )
    resources = build_resources(environ, read_only=True)
    if not environ.get("NTHLAYER_LEDGER_URL"):
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
            _failure_summary(result),
            result.output_for_node("change_plan") if planned else None,
            _failed_checks(result),
        )
    return result.output_for_node("change_plan")


def _user_message(error: SerializableErrorInfo) -> str:
    """What went wrong in the step's own code: Dagster's "error occurred while executing op" wrapper is
    skipped for its cause, and the exception's module path is dropped."""
    while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    message = error.message.strip()
    prefix, _, rest = message.partition(": ")
    return rest if rest and prefix.rsplit(".", 1)[-1] == error.cls_name else message


def _failure_summary(result: dg.ExecuteInProcessResult) -> str:
    lines: list[str] = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            if error is not None and error.cls_name == "DagsterAssetCheckFailedError":
                continue  # the failed check's own evaluation below names it
            user = event.step_failure_data.user_failure_data
            lines.append(f"{event.step_key}: {_user_message(error) if error else 'failed'}")
            if user is not None:
                problems = user.metadata.get("problems")
                if problems is not None:
                    lines.append(str(problems.value))
    for check in _failed_checks(result):
        lines.append(f"check {check.name} failed on {check.asset}:")
        lines += [f"  - {reason}" for reason in check.reasons]
    return "\n".join(lines) or "the run failed"


def _failed_checks(result: dg.ExecuteInProcessResult) -> tuple[FailedCheck, ...]:
    return tuple(
        FailedCheck(
            name=evaluation.check_name,
            asset=evaluation.asset_key.to_user_string(),
            reasons=tuple((evaluation.description or "").splitlines()),
        )
        for evaluation in (
            event.event_specific_data
            for event in result.all_events
            if event.event_type_value == "ASSET_CHECK_EVALUATION"
        )
        if not evaluation.passed
    )
