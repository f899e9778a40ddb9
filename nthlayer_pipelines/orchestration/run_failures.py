"""What a failed run's events say went wrong, in words: for `nthlayer plan` and the Slack notice."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from dagster._utils.error import SerializableErrorInfo

# The events a summary reads; the sensor asks the instance for these alone.
FAILURE_EVENT_TYPES = frozenset(
    {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.ASSET_CHECK_EVALUATION}
)


@dataclass(frozen=True)
class FailedCheck:
    """A blocking check that failed, on which asset, and why: one reason a line (the check's description)."""

    name: str
    asset: str
    reasons: tuple[str, ...]


def failed_checks(events: Iterable[dg.DagsterEvent]) -> tuple[FailedCheck, ...]:
    return tuple(
        FailedCheck(
            name=evaluation.check_name,
            asset=evaluation.asset_key.to_user_string(),
            reasons=tuple((evaluation.description or "").splitlines()),
        )
        for evaluation in (
            event.event_specific_data
            for event in events
            if event.event_type_value == dg.DagsterEventType.ASSET_CHECK_EVALUATION.value
        )
        if not evaluation.passed
    )


def _user_message(error: SerializableErrorInfo) -> str:
    """What went wrong in the step's own code: Dagster's "error occurred while executing op" wrapper is
    skipped for its cause, and the exception's module path is dropped."""
    while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    message = error.message.strip()
    prefix, _, rest = message.partition(": ")
    return rest if rest and prefix.rsplit(".", 1)[-1] == error.cls_name else message


def failure_summary(events: Iterable[dg.DagsterEvent]) -> str:
    """One line per failed step (with its `problems` metadata), and per failed check with its reasons
    beneath it; "" when none."""
    events = list(events)
    lines: list[str] = []
    for event in events:
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
    for check in failed_checks(events):
        lines.append(f"check {check.name} failed on {check.asset}:")
        lines += [f"  - {reason}" for reason in check.reasons]
    return "\n".join(lines)
