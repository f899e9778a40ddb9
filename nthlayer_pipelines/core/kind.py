"""The contract between the apply engine and a resource kind's writer.

The engine (`nthlayer_pipelines.apply`) owns what is the same for every kind: the lock, the approval's
checks, the intent log, the superseded check's place, the outcome's record and the verification rounds.
A kind's writer owns what is its own: whether the definitions still want a change, the re-read, the
decision, the write, and whether the provider now holds what was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from nthlayer_pipelines.core.model import Change, ChangeStatus, DesiredState
from nthlayer_pipelines.core.safety import BlastRadiusLimits


class RunLog(Protocol):
    """`logging.Logger` or Dagster's `context.log`."""

    def info(self, msg: str, *args: object) -> None: ...

    def warning(self, msg: str, *args: object) -> None: ...


class Action(StrEnum):
    WRITE = "write"
    SKIP = "skip"  # already converged: nothing to write
    STALE = "stale"  # moved under the plan: leave it for a person and a new plan
    FAIL = "fail"  # cannot be carried out now, may be later (the team is not created yet)


@dataclass(frozen=True)
class Decision:
    action: Action
    detail: str = ""


# What a decision other than a write comes to in the intent log, for every kind.
STATUS_FOR_ACTION = {
    Action.SKIP: ChangeStatus.SKIPPED,
    Action.STALE: ChangeStatus.STALE,
    Action.FAIL: ChangeStatus.FAILED,
}


@dataclass(frozen=True)
class ApplyRow:
    """What one change came to in this run."""

    change: Change
    status: ChangeStatus
    detail: str = ""
    error: str | None = None
    team_id: str | None = None  # the object it was carried out on, once known (a team, a service, a policy)
    api_calls: int = 0
    retries: int = 0


class KindWriter(Protocol):
    """One resource kind's apply-time half, bound to one provider's client for one apply."""

    resource: str  # the `Change.resource` it carries out

    @property
    def touched(self) -> set[str]:
        """Ids of the objects this apply wrote to."""
        ...

    def unwanted(self, change: Change, desired: DesiredState) -> str | None:
        """Why the definitions as they stand now no longer want `change`; None while they do. Pure."""
        ...

    def live_blast_radius(self, changes: Sequence[Change], limits: BlastRadiusLimits) -> tuple[str, ...]:
        """Why writing `changes` now would exceed the blast radius, judged on the provider as it is now
        (never on a stored verdict); empty when within it."""
        ...

    def carry_out(self, change: Change) -> ApplyRow:
        """Re-read, decide, and write when the decision says so. A provider's refusal or error is a row
        (blocked or failed), never raised: one bad change never stops the others."""
        ...

    def start_verifying(self) -> None:
        """Forget what was read, before a round of verification reads."""
        ...

    def holds(self, row: ApplyRow) -> tuple[bool, str]:
        """Whether the provider now holds what `row` applied, and what was seen when it does not."""
        ...
