"""Carry out an approved plan against PagerDuty: check, re-read, decide, write, log, verify.

Before anything is written, the approval must still cover exactly what was approved: the digest of the
approved changes, recomputed from the ledger's rows, must match the one recorded with the approval. Then,
for each approved change not yet done in the intent log, in plan order: mark it pending, check that the
definitions as they stand now still want it (else it is superseded, written nowhere), and hand it to its
kind's writer (`core.kind.KindWriter`), which re-reads the object, decides (skip what converged, leave what
moved under the plan) and writes; record the outcome with what it cost. Then re-read what was written
until each applied change shows (read-after-write lag), and report what did not. One bad change never
stops the others. The whole apply holds the ledger's apply lock: two applies never carry out changes at
the same time.

With the client's `max_concurrency` above 1, the changes are grouped into lanes by the key their kind
gives them (`KindWriter.lane`: a team's changes share one) and lanes run at once, up to that many, every
request paced by the client's one rate limiter; within a lane, changes run in plan order. A lane marks
its changes pending in one transaction before its first write and records their outcomes in batches
after the writes: a change whose outcome a crash lost is still pending, and `Ledger.retry` re-reads it
before any write. With 1, changes run one at a time in plan order, each marked and recorded on its own.

No Dagster here: the apply job, the CLI and the tests call `apply_approval` with a client and a ledger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from nthlayer_pipelines.assets.pagerduty.writers import pagerduty_writers
from nthlayer_pipelines.core.kind import ApplyRow, KindWriter, RunLog
from nthlayer_pipelines.core.model import Change, ChangeStatus, DesiredState, Plan
from nthlayer_pipelines.core.plan import describe_change, markdown_cell
from nthlayer_pipelines.core.safety import BlastRadiusLimits
from nthlayer_pipelines.resources.ledger import Approval, Ledger, Outcome
from nthlayer_pipelines.resources.ledger.store import changes_digest
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient

logger = logging.getLogger("nthlayer_pipelines.apply")

REPORTED_STATUSES = tuple(s for s in ChangeStatus if s is not ChangeStatus.PENDING)
# A lane records its outcomes this many at a time: fewer ledger transactions than one a change, and a
# long lane's progress still shows in the intent log as it goes.
OUTCOME_BATCH = 20

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class ApplyRefused(Exception):
    """The approval may not be applied; nothing was written."""


@dataclass(frozen=True)
class ApplyReport:
    plan_id: str
    approval_id: str
    run_id: str | None
    rows: tuple[ApplyRow, ...]
    api_calls: int
    retries: int
    duration_seconds: float
    unconverged: tuple[str, ...] = ()
    touched_team_ids: tuple[str, ...] = ()
    already_done: int = 0  # approved changes an earlier run had finished: not attempted again

    @property
    def counts(self) -> dict[str, int]:
        """Changes per status, every status present so the keys stay the same run after run."""
        tally = Counter(row.status.value for row in self.rows)
        return {status.value: tally.get(status.value, 0) for status in REPORTED_STATUSES}

    @property
    def succeeded(self) -> bool:
        return not any(row.status is ChangeStatus.FAILED for row in self.rows) and not self.unconverged

    def summary(self) -> dict[str, int | float]:
        """Numbers under stable keys, for Dagster metadata the UI plots over time."""
        return {
            **{f"changes_{status}": count for status, count in self.counts.items()},
            "changes_already_done": self.already_done,
            "unconverged": len(self.unconverged),
            "api_calls": self.api_calls,
            "retries": self.retries,
            "duration_seconds": round(self.duration_seconds, 3),
        }

    def markdown(self) -> str:
        """A table of what this run did to each change, for people reading the run in the UI."""
        counts = ", ".join(f"{count} {status}" for status, count in self.counts.items() if count)
        lines = [
            f"Plan `{self.plan_id}`, approval `{self.approval_id}`: {counts or 'nothing to do'}.",
        ]
        if self.already_done:
            lines.append(f"{self.already_done} approved changes were done by an earlier run.")
        if self.rows:
            lines += ["", "| status | change | detail |", "| --- | --- | --- |"]
            for row in self.rows:
                detail = row.detail if not row.error else f"{row.detail} {row.error}".strip()
                change = markdown_cell(describe_change(row.change))
                lines.append(f"| {row.status} | {change} | {markdown_cell(detail)} |")
        if self.unconverged:
            lines += ["", "Not converged after apply:", *(f"- {item}" for item in self.unconverged)]
        return "\n".join(lines)


def apply_approval(
    *,
    ledger: Ledger,
    approval: Approval,
    client: PagerDutyClient,
    desired: DesiredState,
    limits: BlastRadiusLimits | None = None,
    run_id: str | None = None,
    log: RunLog | None = None,
    verify_attempts: int = 5,
    verify_delay_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ApplyReport:
    """Apply the changes `approval` covers that `desired` (the definitions as they stand now) still
    wants. Raises `ApplyRefused` before any write when the approval is not in the ledger, is a rejection,
    its plan was rejected or is unknown, the approved changes are not those recorded when it was given
    (their digest differs), or what it would write exceeds the blast radius (`limits`, judged on the
    teams as PagerDuty holds them now) without `allow_blast_radius`.

    A provider error fails that change and the run goes on. Anything else (the ledger unreachable, a
    bug) propagates and leaves the change pending: `Ledger.retry` then re-reads it before any write.
    `sleep` waits between verification reads."""
    if verify_attempts < 1:
        raise ValueError(f"verify_attempts must be at least 1, not {verify_attempts}")
    started = time.monotonic()
    log = log or logger
    # One apply at a time: a second approval of the plan, or a retry, waits here and then finds done
    # in the intent log what the first carried out.
    with ledger.apply_lock():
        recorded, plan = _check_may_apply(ledger, approval)
        calls_before, retries_before = client.api_calls, client.retries
        done = {o.change_id for o in ledger.outcomes(plan.id) if o.status.terminal}
        approved = set(recorded.change_ids)
        if client.max_concurrency > 1:
            log = _SerialLog(log)  # lanes log from threads of their own
        writers = pagerduty_writers(client, log)
        run = _ApplyRun(ledger, client, plan, recorded, desired, run_id, log, writers)
        approved_changes = [c for c in plan.changes if c.id in approved]
        todo = [c for c in approved_changes if c.id not in done]
        _check_blast_radius(run, todo, limits or BlastRadiusLimits(), recorded.allow_blast_radius)
        if client.max_concurrency > 1:
            run.carry_out_lanes(todo)
        else:
            for change in todo:
                run.carry_out(change)
        already_done = len(approved_changes) - len(todo)
        unconverged = run.verify(verify_attempts, verify_delay_seconds, sleep)
    report = ApplyReport(
        plan_id=plan.id,
        approval_id=recorded.id,
        run_id=run_id,
        rows=tuple(run.rows),
        api_calls=client.api_calls - calls_before,
        retries=client.retries - retries_before,
        duration_seconds=time.monotonic() - started,
        unconverged=unconverged,
        touched_team_ids=tuple(sorted(run.touched)),
        already_done=already_done,
    )
    log.info(
        "plan %s, approval %s: %s; %d API calls",
        plan.id,
        recorded.id,
        ", ".join(f"{n} {s}" for s, n in report.counts.items() if n) or "nothing to do",
        report.api_calls,
    )
    return report


def group_lanes(items: Iterable[T], key: Callable[[T], K]) -> list[list[T]]:
    """`items` in lanes by `key`, each lane in the order given, lanes in the order of their first item."""
    lanes: dict[K, list[T]] = {}
    for item in items:
        lanes.setdefault(key(item), []).append(item)
    return list(lanes.values())


class _SerialLog:
    """A run log that takes one line at a time: Dagster's `context.log` was not made for many threads."""

    def __init__(self, log: RunLog) -> None:
        self._log = log
        self._lock = threading.Lock()

    def info(self, msg: str, *args: object) -> None:
        with self._lock:
            self._log.info(msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        with self._lock:
            self._log.warning(msg, *args)


def _check_may_apply(ledger: Ledger, approval: Approval) -> tuple[Approval, Plan]:
    recorded = ledger.get_approval(approval.id)
    if recorded is None:
        raise ApplyRefused(
            f"approval {approval.id} is not in the ledger: only recorded approvals are applied"
        )
    if recorded.decision != "approved":
        raise ApplyRefused(f"{recorded.id} is a {recorded.decision} decision, not an approval")
    plan = ledger.get_plan(recorded.plan_id)
    if plan is None:
        raise ApplyRefused(f"plan {recorded.plan_id} of approval {recorded.id} is not in the ledger")
    rejection = ledger.rejection(plan.id)
    if rejection is not None:
        raise ApplyRefused(f"plan {plan.id} was rejected by {rejection.approver} ({rejection.id})")
    if recorded.digest is None:
        raise ApplyRefused(
            f"approval {recorded.id} was recorded before approvals carried a digest of what they approve, "
            "so what it covers cannot be checked: approve the latest plan again; nothing was written"
        )
    approved_ids = set(recorded.change_ids)
    approved_changes = [c for c in plan.changes if c.id in approved_ids]
    if (
        len(approved_changes) != len(approved_ids)
        or changes_digest(plan.id, approved_changes) != recorded.digest
    ):
        raise ApplyRefused(
            f"plan {plan.id}'s changes in the ledger are not those approval {recorded.id} approved (their "
            "digest differs: a row was changed or removed since): nothing was written; approve the latest "
            "plan again"
        )
    return recorded, plan


def _check_blast_radius(run: _ApplyRun, todo: list[Change], limits: BlastRadiusLimits, allow: bool) -> None:
    """Judge what this apply would write against the provider as it holds things now, before any write:
    the verdict is computed here, never read back from a row someone could have deleted."""
    if allow:
        return
    writing = [c for c in todo if run.writer(c).unwanted(c, run.desired) is None]
    reasons: list[str] = []
    for resource, writer in run.writers.items():
        reasons += writer.live_blast_radius([c for c in writing if c.resource == resource], limits)
    if reasons:
        raise ApplyRefused(
            f"plan {run.plan.id} exceeds the blast radius ({'; '.join(reasons)}) and approval "
            f"{run.approval.id} does not say `allow_blast_radius: true`: nothing was written"
        )


@dataclass
class _ApplyRun:
    """The state of one apply: the kinds' writers, and what each change came to."""

    ledger: Ledger
    client: PagerDutyClient
    plan: Plan
    approval: Approval
    desired: DesiredState
    run_id: str | None
    log: RunLog
    writers: Mapping[str, KindWriter]
    rows: list[ApplyRow] = field(default_factory=list)
    _rows_lock: threading.Lock = field(default_factory=threading.Lock)

    def writer(self, change: Change) -> KindWriter:
        writer = self.writers.get(change.resource)
        if writer is None:  # a plan recorded by a version that knew a kind this one does not
            raise ApplyRefused(
                f"change {change.id} is of kind {change.resource!r}, which nothing here applies"
            )
        return writer

    @property
    def touched(self) -> set[str]:
        return set().union(*(writer.touched for writer in self.writers.values()))

    def lane(self, change: Change) -> str:
        return self.writer(change).lane(change)

    def carry_out(self, change: Change) -> None:
        """One change on its own: marked pending, carried out, its outcome recorded."""
        if not self.ledger.mark_pending(self.plan.id, self.approval.id, [change.id], self.run_id):
            return  # another run finished it meanwhile
        row = self._attempt(change)
        self.ledger.record_outcome(
            self.plan.id,
            change.id,
            status=row.status,
            approval_id=self.approval.id,
            run_id=self.run_id,
            api_calls=row.api_calls,
            retries=row.retries,
            error=row.error,
            detail=row.detail,
        )
        self._done(row)

    def carry_out_lanes(self, todo: Sequence[Change]) -> None:
        """Lanes at once, up to the client's `max_concurrency`; rows in plan order after. The first error
        that is not a provider's (the ledger unreachable, a bug) stops every lane before its next change
        and propagates."""
        position = {change.id: i for i, change in enumerate(todo)}
        stop = threading.Event()

        def run_lane(changes: list[Change]) -> None:
            try:
                self._carry_out_lane(changes, stop)
            except BaseException:
                stop.set()
                raise

        try:
            self.client._map_concurrently(run_lane, group_lanes(todo, self.lane))
        finally:
            self.rows.sort(key=lambda row: position[row.change.id])

    def _carry_out_lane(self, changes: list[Change], stop: threading.Event) -> None:
        if stop.is_set():
            return
        # Pending before any of the lane's writes: a crash leaves each unrecorded change for `retry`.
        marked = set(
            self.ledger.mark_pending(self.plan.id, self.approval.id, [c.id for c in changes], self.run_id)
        )
        unrecorded: list[ApplyRow] = []
        try:
            for change in changes:
                if stop.is_set():
                    break
                if change.id not in marked:
                    continue  # another run finished it meanwhile
                unrecorded.append(self._attempt(change))
                if len(unrecorded) >= OUTCOME_BATCH:
                    self._record(unrecorded)
                    unrecorded = []
        finally:
            if unrecorded:
                self._record(unrecorded)

    def _record(self, rows: list[ApplyRow]) -> None:
        self.ledger.record_outcomes(self.plan.id, [self._outcome(row) for row in rows])
        for row in rows:
            self._done(row)

    def _attempt(self, change: Change) -> ApplyRow:
        """The superseded check, then the writer; with the requests it took on this thread, which are
        this change's alone whatever other lanes send meanwhile."""
        with self.client.stats.tally() as cost:
            writer = self.writer(change)
            unwanted = writer.unwanted(change, self.desired)
            if unwanted is not None:
                row = ApplyRow(
                    change, ChangeStatus.SUPERSEDED, f"{unwanted}: not written", None, change.team_id
                )
            else:
                row = writer.carry_out(change)
        return replace(row, api_calls=cost.api_calls, retries=cost.retries)

    def _outcome(self, row: ApplyRow) -> Outcome:
        return Outcome(
            row.change.id,
            row.status,
            self.approval.id,
            self.run_id,
            api_calls=row.api_calls,
            retries=row.retries,
            error=row.error,
            detail=row.detail,
        )

    def _done(self, row: ApplyRow) -> None:
        with self._rows_lock:
            self.rows.append(row)
        say = self.log.warning if row.status is ChangeStatus.FAILED else self.log.info
        say("%s %s: %s", row.status, describe_change(row.change), row.error or row.detail)

    def verify(self, attempts: int, delay_seconds: float, sleep: Callable[[float], None]) -> tuple[str, ...]:
        """Re-read what was written until every applied change shows; what never does is returned."""
        waiting = [row for row in self.rows if row.status is ChangeStatus.APPLIED]
        last_seen: dict[str, str] = {}
        for attempt in range(1, attempts + 1):
            if not waiting:
                break
            if attempt > 1:
                sleep(delay_seconds)
            for writer in self.writers.values():
                writer.start_verifying()
            # Lane by lane, as written, lanes at once; one at a time, the rows in plan order as one lane.
            if self.client.max_concurrency > 1:
                lanes = group_lanes(waiting, lambda row: self.lane(row.change))
            else:
                lanes = [waiting]
            checked = self.client._map_concurrently(self._holds, lanes)
            verdicts = {row.change.id: (holds, seen) for lane in checked for row, holds, seen in lane}
            still: list[ApplyRow] = []
            for row in waiting:
                holds, seen = verdicts[row.change.id]
                if not holds:
                    still.append(row)
                    last_seen[row.change.id] = seen
            waiting = still
        unconverged = tuple(
            f"{row.change.id} {describe_change(row.change)}: {last_seen[row.change.id]}" for row in waiting
        )
        for item in unconverged:
            self.log.warning("not converged after %d reads: %s", attempts, item)
        return unconverged

    def _holds(self, rows: list[ApplyRow]) -> list[tuple[ApplyRow, bool, str]]:
        return [(row, *self.writer(row.change).holds(row)) for row in rows]
