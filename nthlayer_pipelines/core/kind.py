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


def team_lane(change: Change) -> str:
    """A team's changes, of every kind, in one lane: its creation before its members and its policies,
    its services after the policies they page through."""
    return change.team


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
    """One resource kind's apply-time half, bound to one provider's client for one apply.

    The engine may carry out (and verify) the changes of different lanes (`lane`) from different threads
    at once, and those of one lane one after another in plan order from one thread: what a writer keeps
    per lane needs no lock, what it shares across lanes must be safe to update from several threads."""

    resource: str  # the `Change.resource` it carries out

    def lane(self, change: Change) -> str:
        """The key of the changes to carry out one after another, in plan order: those that read what
        another writes (a team's creation and its members; a team's policy and the services paging
        through it). Changes of different lanes do not depend on each other. Pure."""
        ...

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
