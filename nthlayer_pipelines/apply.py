"""Carry out an approved plan against PagerDuty: check, re-read, decide, write, log, verify.

Before anything is written, the approval must still cover exactly what was approved: the digest of the
approved changes, recomputed from the ledger's rows, must match the one recorded with the approval. Then,
for each approved change not yet done in the intent log, in plan order: mark it pending, check that the
definitions as they stand now still want it (else it is superseded, written nowhere), re-read the entity,
decide with `reconcile.outcome.decide` (skip what converged, leave what moved under the plan), write, and
record the outcome with what it cost. Then re-read every team written to until each applied
change shows (read-after-write lag), and report what did not. One bad change never stops the others.
The whole apply holds the ledger's apply lock: two applies never carry out changes at the same time.

No Dagster here: the apply job, the CLI and the tests call `apply_approval` with a client and a ledger.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from nthlayer_pipelines.model import Change, ChangeKind, ChangeStatus, DesiredState, Plan, Role
from nthlayer_pipelines.reconcile.outcome import Action, converged, decide, unwanted_reason
from nthlayer_pipelines.reconcile.plan import describe_change, markdown_cell
from nthlayer_pipelines.reconcile.safety import (
    BlastRadiusLimits,
    assess_blast_radius,
    reduces_a_team,
    rosters_from_members,
)
from nthlayer_pipelines.resources.ledger import Approval, Ledger
from nthlayer_pipelines.resources.ledger.store import changes_digest
from nthlayer_pipelines.resources.pagerduty.client import (
    PagerDutyClient,
    PagerDutyError,
    WriteOutcomeUnknownError,
)

logger = logging.getLogger("nthlayer_pipelines.apply")

ESCALATION_POLICY_BLOCKS_REMOVAL = 2001  # PagerDuty's code on a 400 to DELETE /teams/{id}/users/{id}
REPORTED_STATUSES = tuple(s for s in ChangeStatus if s is not ChangeStatus.PENDING)

_STATUS_FOR_ACTION = {
    Action.SKIP: ChangeStatus.SKIPPED,
    Action.STALE: ChangeStatus.STALE,
    Action.FAIL: ChangeStatus.FAILED,
}


class ApplyRefused(Exception):
    """The approval may not be applied; nothing was written."""


class RunLog(Protocol):
    """`logging.Logger` or Dagster's `context.log`."""

    def info(self, msg: str, *args: object) -> None: ...

    def warning(self, msg: str, *args: object) -> None: ...


@dataclass(frozen=True)
class ApplyRow:
    """What one change came to in this run."""

    change: Change
    status: ChangeStatus
    detail: str = ""
    error: str | None = None
    team_id: str | None = None  # the PagerDuty team it was carried out on, once known
    api_calls: int = 0
    retries: int = 0


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
        run = _ApplyRun(ledger, client, plan, recorded, desired, run_id, log)
        approved_changes = [c for c in plan.changes if c.id in approved]
        todo = [c for c in approved_changes if c.id not in done]
        _check_blast_radius(run, todo, limits or BlastRadiusLimits(), recorded.allow_blast_radius)
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
    """Judge what this apply would write against the teams as PagerDuty holds them now, before any write:
    the verdict is computed here, never read back from a row someone could have deleted."""
    writing = [c for c in todo if unwanted_reason(c, run.desired) is None]
    if allow or not any(reduces_a_team(c) for c in writing):
        return
    team_ids = sorted({c.team_id for c in writing if c.team_id and reduces_a_team(c)})
    live = {team_id: run.read_members(team_id) for team_id in team_ids}
    rosters = rosters_from_members({t: members for t, members in live.items() if members is not None})
    verdict = assess_blast_radius(Plan(id=run.plan.id, changes=tuple(writing)), rosters, limits)
    if verdict.exceeded:
        raise ApplyRefused(
            f"plan {run.plan.id} exceeds the blast radius ({'; '.join(verdict.reasons)}) and approval "
            f"{run.approval.id} does not say `allow_blast_radius: true`: nothing was written"
        )


@dataclass
class _ApplyRun:
    """The state of one apply: what was read, which teams were written, what each change came to."""

    ledger: Ledger
    client: PagerDutyClient
    plan: Plan
    approval: Approval
    desired: DesiredState
    run_id: str | None
    log: RunLog
    rows: list[ApplyRow] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    _members: dict[str, dict[str, Role] | None] = field(default_factory=dict)  # None: the team is gone
    _team_ids: dict[str, str] = field(default_factory=dict)  # team slug -> id, for teams found by name

    def carry_out(self, change: Change) -> None:
        if not self.ledger.mark_pending(self.plan.id, self.approval.id, [change.id], self.run_id):
            return  # another run finished it meanwhile
        calls, retries = self.client.api_calls, self.client.retries
        try:
            row = self._carry_out(change)
        except PagerDutyError as error:  # a read before the write failed
            row = ApplyRow(change, ChangeStatus.FAILED, "", str(error))
        row = replace(row, api_calls=self.client.api_calls - calls, retries=self.client.retries - retries)
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
        self.rows.append(row)
        say = self.log.warning if row.status is ChangeStatus.FAILED else self.log.info
        say("%s %s: %s", row.status, describe_change(change), row.error or row.detail)

    def _carry_out(self, change: Change) -> ApplyRow:
        unwanted = unwanted_reason(change, self.desired)
        if unwanted is not None:
            return ApplyRow(change, ChangeStatus.SUPERSEDED, f"{unwanted}: not written", None, change.team_id)
        if change.kind is ChangeKind.CREATE_TEAM:
            return self._create_team(change)
        team_id = self._team_id(change)
        members = self.read_members(team_id) if team_id else None
        current = members.get(change.user_id or "") if members is not None else None
        decision = decide(change, team_exists=members is not None, current_role=current)
        if decision.action is not Action.WRITE:
            return ApplyRow(change, _STATUS_FOR_ACTION[decision.action], decision.detail, team_id=team_id)
        assert team_id is not None  # decide() writes only to a team that exists
        if not change.user_id:
            return ApplyRow(
                change, ChangeStatus.FAILED, "the change names no PagerDuty user id", None, team_id
            )
        try:
            if change.kind is ChangeKind.REMOVE_MEMBER:
                self.client.remove_membership(team_id, change.user_id)
            else:
                assert change.role is not None  # decide() refuses a membership change without a role
                self.client.set_membership(team_id, change.user_id, change.role)
        except PagerDutyError as error:
            self._members.pop(team_id, None)  # the write may have landed
            if change.kind is ChangeKind.REMOVE_MEMBER and _blocked_by_escalation_policy(error):
                detail = self._blocking_policies(team_id, change, error)
                return ApplyRow(change, ChangeStatus.BLOCKED, detail, None, team_id)
            return ApplyRow(change, ChangeStatus.FAILED, decision.detail, str(error), team_id)
        self._members.pop(team_id, None)
        self.touched.add(team_id)
        return ApplyRow(change, ChangeStatus.APPLIED, decision.detail, None, team_id)

    def _create_team(self, change: Change) -> ApplyRow:
        existing = self.client.find_team_by_name(change.team_name)
        decision = decide(change, team_exists=existing is not None)
        if existing is not None:
            self._team_ids[change.team] = existing.id
            return ApplyRow(
                change, ChangeStatus.SKIPPED, f"{decision.detail} ({existing.id})", None, existing.id
            )
        try:
            created = self.client.create_team(change.team_name)
            detail = f"created {created.id}"
        except WriteOutcomeUnknownError as error:
            # No answer to the POST: it may have been applied. Look before anyone creates it again.
            found = self.client.find_team_by_name(change.team_name)
            if found is None:
                # Not seen yet is not proof it was never made: a fresh team can read as missing for a
                # moment. Fail honestly; the next refresh finds it if it exists, else plans it again.
                detail = "no answer to the create and no team of that name yet; the next refresh tells"
                return ApplyRow(change, ChangeStatus.FAILED, detail, str(error))
            created, detail = found, f"created {found.id} (the answer was lost; found by name)"
        self._team_ids[change.team] = created.id
        self.touched.add(created.id)
        return ApplyRow(change, ChangeStatus.APPLIED, detail, None, created.id)

    def _team_id(self, change: Change) -> str | None:
        """The change's team: by id, else (a team the plan creates) by name, remembered for the run."""
        if change.team_id:
            return change.team_id
        if change.team not in self._team_ids:
            found = self.client.find_team_by_name(change.team_name)
            if found is None:
                return None
            self._team_ids[change.team] = found.id
        return self._team_ids[change.team]

    def read_members(self, team_id: str) -> dict[str, Role] | None:
        """The team's members, read once per run until a write to the team; None when it is gone."""
        if team_id not in self._members:
            self._members[team_id] = _members_of(self.client, team_id)
        return self._members[team_id]

    def _blocking_policies(self, team_id: str, change: Change, error: PagerDutyError) -> str:
        """Name the escalation policies that hold the user; they are for a person to change, never us."""
        who = change.email or change.user_id
        try:
            policies = self.client.list_escalation_policies(team_ids=[team_id])
        except PagerDutyError as lookup_error:
            self.log.warning("could not list the escalation policies of team %s: %s", team_id, lookup_error)
            policies = []
        names = [f"{p.name} ({p.id})" for p in policies if change.user_id in p.user_ids]
        if not names:
            reason = "; ".join([error.message, *error.errors])
            return f"PagerDuty refuses to remove {who}: {reason}"
        return (
            f"{who} is a target of escalation policy {', '.join(names)}: change the policy by hand, "
            "then plan again"
        )

    def verify(self, attempts: int, delay_seconds: float, sleep: Callable[[float], None]) -> tuple[str, ...]:
        """Re-read what was written until every applied change shows; what never does is returned."""
        waiting = [row for row in self.rows if row.status is ChangeStatus.APPLIED]
        last_seen: dict[str, str] = {}
        for attempt in range(1, attempts + 1):
            if not waiting:
                break
            if attempt > 1:
                sleep(delay_seconds)
            members: dict[str, dict[str, Role] | None] = {}
            still: list[ApplyRow] = []
            for row in waiting:
                assert row.team_id is not None  # every applied row knows its team
                try:
                    holds, seen = self._holds(row, row.team_id, members)
                except PagerDutyError as error:
                    holds, seen = False, f"could not be read: {error}"
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

    def _holds(
        self, row: ApplyRow, team_id: str, members: dict[str, dict[str, Role] | None]
    ) -> tuple[bool, str]:
        if row.change.kind is ChangeKind.CREATE_TEAM:
            exists = self.client.get_team(team_id) is not None
            return converged(row.change, team_exists=exists), "the team is not there"
        if team_id not in members:
            members[team_id] = _members_of(self.client, team_id)
        team = members[team_id]
        current = team.get(row.change.user_id or "") if team is not None else None
        holds = converged(row.change, team_exists=team is not None, current_role=current)
        seen = (
            "the team is gone" if team is None else f"found {current.value if current else 'no membership'}"
        )
        return holds, seen


def _members_of(client: PagerDutyClient, team_id: str) -> dict[str, Role] | None:
    try:
        return {m.user_id: m.role for m in client.list_team_members(team_id)}
    except PagerDutyError as error:
        if error.status == 404:
            return None
        raise


def _blocked_by_escalation_policy(error: PagerDutyError) -> bool:
    return error.status == 400 and error.code == ESCALATION_POLICY_BLOCKS_REMOVAL
