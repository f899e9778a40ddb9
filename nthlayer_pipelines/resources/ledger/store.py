"""The ledger: every plan nthlayer computed, with its changes and findings, in SQL (SQLite or Postgres).

Beside the plans it keeps each plan's blast-radius verdict, the approvals and rejections people (or the
pre-approval policy) gave, and the intent log: one row per approved change, pending, then applied,
skipped, stale, blocked or failed. A crash mid-apply resumes from that log and writes nothing twice.
It also keeps each provider's refresh cursor (where the next incremental refresh reads audit records from)
and the snapshot that cursor belongs to, written together so the two never disagree, with the account the
snapshot was read from (an incremental refresh trusts it for that account only), and the same for the
services kind: its services, escalation policies and schedules with their account and cursor, in one row.
On a deployment whose
runs are pods of their own, it also keeps the assets' outputs for the IO manager (`resources/io_manager.py`).

A plan is what one apply writes through one client: it is one provider's (its changes'), and "the latest
plan", which alone may be approved and which a refresh's plan is filed against, is the latest of that
provider. Another provider's plans never supersede it.

The ledger is ours, not Dagster's: plans, approvals and change outcomes must outlive any run-storage
retention policy and be readable without the Dagster instance.

Every write is one transaction holding the ledger's write lock (a Postgres advisory lock, SQLite's
`BEGIN IMMEDIATE`), so the sensor, apply runs and the CLI can share one database from several processes,
and approvals are committed in `seq` order: a sensor's cursor never skips one committed late.

Applies take the apply lock (a session advisory lock, or a file lock beside a SQLite ledger) for their
whole run: two applies never carry out changes at once, so none is written twice. The lock dies with
the process holding it. Reads and intent-log writes outlive a database restart: a dropped connection is
replaced and the call tried again for up to `RECONNECT_SECONDS`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import dagster as dg
import sqlalchemy as sa
import tenacity
from pydantic import Field, ValidationError
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import Change, ChangeKind, ChangeStatus, Finding, Plan, Role
from nthlayer_pipelines.core.safety import (
    BlastRadius,
    BlastRadiusLimits,
    assess_blast_radius,
    reduces_a_team,
    rosters_from_json,
)
from nthlayer_pipelines.resources.ledger import migrate
from nthlayer_pipelines.resources.ledger.schema import (
    SUBJECT_LENGTH,
    approvals,
    asset_outputs,
    change_attempts,
    change_outcomes,
    observed_snapshots,
    plan_blast_radius,
    plan_changes,
    plan_sightings,
    plans,
    refresh_cursors,
    services_snapshots,
)
from nthlayer_pipelines.resources.pagerduty.incremental import RefreshCursor, SnapshotAccount
from nthlayer_pipelines.resources.pagerduty.models import ObservedServices
from nthlayer_pipelines.resources.pagerduty.observed import (
    ObservedState,
    memberships_frame,
    teams_frame,
    users_frame,
)
from nthlayer_pipelines.resources.pagerduty.services_incremental import ServicesAccount

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")

# pg_advisory_xact_lock key of every ledger write: "nthlayer" in ASCII.
WRITE_LOCK_KEY = int.from_bytes(b"nthlayer", "big")
# pg_advisory_lock key an apply holds for its whole run: "nthapply".
APPLY_LOCK_KEY = int.from_bytes(b"nthapply", "big")
RECONNECT_SECONDS = 60  # a restarted Postgres takes seconds; a failover up to a minute
_WRITE_OPTION = "nthlayer_ledger_write"
DEFAULT_PROVIDER = Plan.model_fields["provider"].default  # a plan's provider when it says none

Decision = Literal["approved", "rejected"]
Source = Literal["person", "policy"]
DECISIONS: tuple[str, ...] = ("approved", "rejected")
SOURCES: tuple[str, ...] = ("person", "policy")


class LedgerError(Exception):
    """A request the ledger refuses: the message says what is wrong and what to do instead."""


class LedgerReadOnlyError(LedgerError):
    """A write asked of a ledger opened read-only."""


class LedgerMissingError(LedgerError):
    """A read-only open of a ledger that does not exist: there is nothing to read."""


class BlastRadiusRefused(LedgerError):
    """An approval of removals from a plan over the blast radius, without the override. The message names the
    launchpad's field; `saying` names the override where the approver types it (the CLI's flag)."""

    def __init__(self, plan_id: str, reasons: Sequence[str]) -> None:
        self.plan_id, self.reasons = plan_id, tuple(reasons)
        super().__init__(self.saying("`allow_blast_radius: true`"))

    def saying(self, override: str) -> str:
        return (
            f"plan {self.plan_id} exceeds the blast radius: {'; '.join(self.reasons)}. "
            f"Check the removals, then approve with {override} to override"
        )


# What records a plan, said wherever a plan id is refused for not being one: `nthlayer plan` only previews.
START_A_REFRESH = (
    "launch the `refresh` job (in the UI, or `dg launch --job refresh -m nthlayer_pipelines.definitions`; "
    "refresh_schedule runs it hourly)"
)


def unrecorded_plan(plan_id: str) -> str:
    return (
        f"no plan {plan_id!r} in the ledger: only a refresh run records a plan (`nthlayer plan` previews "
        f"the one a refresh would record, and records nothing); {START_A_REFRESH}, then approve the plan "
        "it records"
    )


# What makes a new plan once one is rejected: the next refresh, for the drift that is still there.
AFTER_REJECTION = (
    "a rejected plan is never applied; the next refresh run records the drift still there as a new plan "
    f"(the rejected changes in it wait for a person, never pre-approved): {START_A_REFRESH}"
)


class LedgerOutdatedError(LedgerError):
    """The ledger's schema is older (or newer) than this version of nthlayer writes."""

    def __init__(self, url: str, schema: migrate.Revision) -> None:
        self.schema = schema
        where = display_url(url)
        if schema.current is not None and migrate.is_known(schema.current):
            advice = "run `nthlayer db upgrade` (with the same NTHLAYER_LEDGER_URL) to migrate it in place"
        else:
            advice = "it was written by a newer nthlayer: run that version, or restore a backup"
        super().__init__(
            f"the ledger at {where} is at schema revision {schema.current}, this nthlayer needs "
            f"{schema.head}: {advice}"
        )


def display_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(an unparsable URL)"


def upgrade_ledger(url: str) -> tuple[migrate.Revision, migrate.Revision]:
    """Migrate the ledger at `url` in place to this version's schema, in one transaction under the write
    lock; returns its revision before and after."""
    ledger = Ledger._unchecked(url)
    try:
        with ledger._begin(write=True) as conn:
            before = migrate.upgrade(conn)
        return before, ledger.revision()
    finally:
        ledger.dispose()


@dataclass(frozen=True)
class StoredSnapshot:
    """A provider's stored snapshot and the account it was read from (None: saved before snapshots named
    their account, ledger revision 0001, or unreadable)."""

    state: ObservedState
    account: SnapshotAccount | None
    taken_at: datetime


@dataclass(frozen=True)
class StoredServices:
    """The services kind's stored snapshot, the account it was read from, and where its next incremental
    refresh starts. `state` None: the stored objects do not parse as this release reads them (a full
    read replaces them)."""

    state: ObservedServices | None
    account: ServicesAccount | None
    cursor: RefreshCursor
    taken_at: datetime


@dataclass(frozen=True)
class Approval:
    """A person's (or the policy's) decision on a plan. `seq` increases with every decision: the cursor
    of the sensor that launches apply runs."""

    id: str
    seq: int
    plan_id: str
    approver: str
    comment: str
    change_ids: tuple[str, ...]  # the changes this approval covers, in plan order
    allow_blast_radius: bool
    decision: Decision
    source: Source
    created_at: datetime
    digest: str | None = None  # of the approved changes as recorded; None before ledger revision 0003


@dataclass(frozen=True)
class RecordedPlan:
    """What `record_plan` made of a refresh's plan: the instance it was filed as (`plan.id`)."""

    plan: Plan
    new: bool  # a new instance, not a sighting of an open one
    generation: int  # 1 for the first instance of these changes
    previous_id: str | None  # the earlier instance of the same changes, when there is one
    held_back: tuple[str, ...]  # changes the policy leaves to a person: rejected before, still there


@dataclass(frozen=True)
class Outcome:
    """Where one attempt at a change ended up, as `Ledger.record_outcomes` records it."""

    change_id: str
    status: ChangeStatus
    approval_id: str | None
    run_id: str | None
    api_calls: int = 0
    retries: int = 0
    error: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class ChangeOutcome:
    """One row of the intent log: where one change of a plan stands, and what it cost."""

    plan_id: str
    change_id: str
    position: int
    kind: ChangeKind
    team: str
    team_name: str
    team_id: str | None
    email: str | None
    user_id: str | None
    role: Role | None
    from_role: Role | None
    provider: str
    subject: str | None  # `Change.subject`, e.g. payments/Payment API; None only if written so by hand
    status: ChangeStatus
    approval_id: str | None
    run_id: str | None
    attempts: int
    api_calls: int
    retries: int
    error: str | None
    detail: str
    updated_at: datetime


def default_ledger_url() -> str:
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home")
    return f"sqlite:///{home / 'nthlayer-ledger.db'}"


def _connection_lost(error: BaseException) -> bool:
    """The database went away (a restart, a failover), not a refused statement: worth trying again.
    SQLAlchemy marks a dropped connection invalidated; a connection refused has no statement."""
    return isinstance(error, sa.exc.OperationalError) and (
        error.connection_invalidated or error.statement is None
    )


# For calls that may run twice: reads, and intent-log writes (a repeated one only re-marks or re-counts).
# Decisions (approve, reject, retry) are never repeated: the person sees the error and decides again.
_reconnecting = tenacity.retry(
    retry=tenacity.retry_if_exception(_connection_lost),
    wait=tenacity.wait_exponential(multiplier=0.2, max=2),
    stop=tenacity.stop_after_delay(RECONNECT_SECONDS),
    reraise=True,
)


class Ledger:
    """The ledger at `url`. `read_only` opens it so that nothing can be written: every write method
    refuses before it starts, and the database itself refuses too (a read-only Postgres session, SQLite
    opened `mode=ro`); a ledger that does not exist yet is not created."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.read_only = read_only
        self._connect(url)
        if read_only:
            with self._begin() as conn:
                schema = migrate.revision(conn)
            if not schema.at_head:
                raise LedgerOutdatedError(url, schema)
            return
        with self._begin(write=True) as conn:
            schema = migrate.revision(conn)
            if schema.empty:
                migrate.upgrade(conn)  # a new ledger starts at the head revision
            elif not schema.at_head:
                raise LedgerOutdatedError(url, schema)

    @classmethod
    def _unchecked(cls, url: str) -> Ledger:
        """Connected, its schema not yet checked: for the upgrade alone."""
        ledger = cls.__new__(cls)
        ledger.read_only = False
        ledger._connect(url)
        return ledger

    def _connect(self, url: str) -> None:
        self.url = url
        self._write_lock = threading.RLock()
        options: dict[str, Any] = {}
        if url.startswith("sqlite:///") and self.read_only:
            path = Path(url.removeprefix("sqlite:///"))
            if not path.is_file():
                raise LedgerMissingError(f"no ledger at {display_url(url)}")
            url = f"sqlite:///file:{path}?mode=ro&uri=true"
        elif url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        elif self.read_only and sa.engine.make_url(url).get_backend_name() == "postgresql":
            options["connect_args"] = {"options": "-c default_transaction_read_only=on"}
        # pre_ping: a pooled connection a database restart closed is replaced before use.
        self.engine: Engine = sa.create_engine(url, future=True, pool_pre_ping=True, **options)
        if self.engine.dialect.name == "sqlite":
            _take_sqlite_transactions_in_hand(self.engine)
        self._write_engine = self.engine.execution_options(**{_WRITE_OPTION: True})

    def revision(self) -> migrate.Revision:
        with self._begin() as conn:
            return migrate.revision(conn)

    @contextmanager
    def _begin(self, *, write: bool = False) -> Iterator[Connection]:
        if write and self.read_only:
            raise LedgerReadOnlyError(
                f"the ledger at {display_url(self.url)} is open read-only: nothing is written"
            )
        if not write:
            with self.engine.begin() as conn:
                yield conn
            return
        # One write at a time in this process, the threads of a concurrent apply queued here in turn:
        # SQLite's busy timeout is no queue (a writer can starve past it), and on Postgres they would
        # only wait on the advisory lock below, each holding a pooled connection.
        with self._write_lock, self._write_engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
            yield conn

    @contextmanager
    def apply_lock(self) -> Iterator[None]:
        """Held by one apply at a time, across processes; others wait for it. Released when the block
        ends or the process holding it dies (Postgres ends its session, the kernel drops its file lock)."""
        if self.engine.dialect.name == "sqlite":
            path = Path(self.url.removeprefix("sqlite:///") + ".apply-lock")
            with path.open("a") as held:
                fcntl.flock(held, fcntl.LOCK_EX)
                yield  # closing the file releases the lock
            return
        conn = self.engine.connect()
        try:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": APPLY_LOCK_KEY})
            conn.commit()  # a session lock: it outlives the transaction, not the connection
            yield
        finally:
            conn.invalidate()  # closed, never pooled: the lock goes with the session even if unlock fails
            conn.close()

    # ---- plans

    @_reconnecting
    def record_plan(
        self,
        plan: Plan,
        *,
        run_id: str | None = None,
        blast_radius: BlastRadius | None = None,
        basis: Mapping[str, Any] | None = None,
    ) -> RecordedPlan:
        """Record a refresh's plan: a sighting of the open instance of these changes, or a new instance.

        `plan.id` may be anything: the plan is filed by its `content_id` and its provider. Its open
        instance (the provider's latest plan seen, neither rejected nor touched by an apply) is seen again;
        otherwise (the changes are new, or their instance was superseded by another plan of the provider,
        rejected, or applied in part or whole) a new instance is recorded, so a drift that comes back is
        planned, approved and applied afresh. The blast-radius verdict, when given, replaces the
        instance's earlier one; `basis` is what it was judged on (the teams' rosters), kept with a new
        instance.
        """
        content_id = plan.content_id
        provider = _provider_of(plan)
        now = datetime.now(UTC)
        with self._begin(write=True) as conn:
            filed = _file_plan(conn, plan)
            instance_id, generation, new = filed.instance_id, filed.generation, filed.new
            previous, held_back = filed.previous_id, filed.held_back
            if not new:
                conn.execute(
                    plans.update()
                    .where(plans.c.plan_id == instance_id)
                    .values(last_seen_at=now, last_run_id=run_id, findings=_findings_json(plan.findings))
                )
            else:
                conn.execute(
                    plans.insert().values(
                        plan_id=instance_id,
                        first_seen_at=now,
                        last_seen_at=now,
                        last_run_id=run_id,
                        change_count=len(plan.changes),
                        finding_count=len(plan.findings),
                        findings=_findings_json(plan.findings),
                        content_id=content_id,
                        generation=generation,
                        previous_plan_id=previous,
                        held_back=sorted(held_back),
                        basis=dict(basis) if basis is not None else None,
                        provider=provider,
                    )
                )
                if plan.changes:
                    conn.execute(
                        plan_changes.insert(),
                        [
                            {
                                "plan_id": instance_id,
                                "change_id": c.id,
                                "position": i,
                                "body": c.body(),
                            }
                            for i, c in enumerate(plan.changes)
                        ],
                    )
            conn.execute(plan_sightings.insert().values(plan_id=instance_id, seen_at=now, run_id=run_id))
            if blast_radius is not None:
                conn.execute(plan_blast_radius.delete().where(plan_blast_radius.c.plan_id == instance_id))
                conn.execute(
                    plan_blast_radius.insert().values(
                        plan_id=instance_id,
                        exceeded=blast_radius.exceeded,
                        removals=blast_radius.removals,
                        reasons=list(blast_radius.reasons),
                        assessed_at=now,
                    )
                )
            recorded = _require_plan(conn, instance_id)
        return RecordedPlan(
            plan=recorded,
            new=new,
            generation=generation,
            previous_id=previous,
            held_back=tuple(c.id for c in recorded.changes if c.id in held_back),
        )

    @_reconnecting
    def preview_plan(self, plan: Plan) -> RecordedPlan:
        """What `record_plan` would make of the plan, recording nothing: for a read-only plan."""
        with self._begin() as conn:
            filed = _file_plan(conn, plan)
            stored = None if filed.new else _plan(conn, filed.instance_id)
        changes = stored.changes if stored is not None else plan.changes
        return RecordedPlan(
            plan=Plan(
                id=filed.instance_id, changes=changes, findings=plan.findings, provider=_provider_of(plan)
            ),
            new=filed.new,
            generation=filed.generation,
            previous_id=filed.previous_id,
            held_back=tuple(c.id for c in changes if c.id in filed.held_back),
        )

    @_reconnecting
    def get_plan(self, plan_id: str) -> Plan | None:
        with self._begin() as conn:
            return _plan(conn, plan_id)

    @_reconnecting
    def latest_plan_id(self, provider: str = DEFAULT_PROVIDER) -> str | None:
        """The provider's plan the most recent refresh produced."""
        with self._begin() as conn:
            return _latest_plan_id(conn, provider)

    @_reconnecting
    def blast_radius(self, plan_id: str) -> BlastRadius | None:
        """The verdict stored with the plan; None when it was recorded without one."""
        with self._begin() as conn:
            return _blast_radius(conn, plan_id)

    # ---- approvals

    def approve(
        self,
        plan_id: str,
        *,
        approver: str,
        comment: str = "",
        change_ids: Sequence[str] | None = None,
        allow_blast_radius: bool = False,
        source: Source = "person",
        limits: BlastRadiusLimits | None = None,
    ) -> Approval:
        """Approve the latest plan of its provider, all of it (`change_ids=None`) or some of its changes.

        Refused with `LedgerError` when the approver is empty, the plan is unknown, rejected, not the
        latest plan of its provider, or has no changes, when a change id is not in the plan, and when the
        plan's blast radius is exceeded, the approved changes include a removal and `allow_blast_radius`
        is false.
        """
        approver = _approver(approver)
        if source not in SOURCES:
            raise LedgerError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
        with self._begin(write=True) as conn:
            return _approve(
                conn,
                plan_id,
                approver=approver,
                comment=comment,
                change_ids=change_ids,
                allow_blast_radius=allow_blast_radius,
                source=source,
                limits=limits,
            )

    def approve_by_policy(
        self,
        plan_id: str,
        *,
        change_ids: Sequence[str],
        comment: str,
        limits: BlastRadiusLimits | None = None,
    ) -> Approval | None:
        """The pre-approval policy's approval of a plan instance nobody has decided on yet; None when
        someone (or the policy, in a refresh running at the same time) already has, or when every change
        is held back (a person rejected the same drift in an earlier instance and it has not gone away
        since). Checked and written in one transaction: refreshes that see one plan at once approve it
        once."""
        decided = sa.select(approvals.c.seq).where(approvals.c.plan_id == plan_id).limit(1)
        with self._begin(write=True) as conn:
            if conn.execute(decided).first() is not None:
                return None
            held_back = _held_back(conn, plan_id)
            chosen = [change_id for change_id in change_ids if change_id not in held_back]
            if not chosen:
                return None
            return _approve(
                conn,
                plan_id,
                approver="policy",
                comment=comment,
                change_ids=chosen,
                allow_blast_radius=False,
                source="policy",
                limits=limits,
            )

    def reject(self, plan_id: str, *, approver: str, comment: str = "") -> Approval:
        """Reject the plan: it can no longer be approved, and approvals given earlier no longer apply."""
        approver = _approver(approver)
        with self._begin(write=True) as conn:
            plan = _require_plan(conn, plan_id)
            _refuse_rejected(conn, plan_id)
            return _insert_approval(
                conn,
                plan_id=plan_id,
                approver=approver,
                comment=comment,
                change_ids=tuple(c.id for c in plan.changes),
                allow_blast_radius=False,
                decision="rejected",
                source="person",
            )

    def retry(self, plan_id: str, *, approver: str) -> Approval:
        """A new approval of what the plan's latest approval covered and the intent log does not show as
        done (applied, skipped, stale or blocked). The plan need not be the latest: a retry finishes what
        was approved, and apply's re-read protects it from changes made since."""
        approver = _approver(approver)
        with self._begin(write=True) as conn:
            _require_plan(conn, plan_id)
            _refuse_rejected(conn, plan_id)
            latest = _approval_row(
                conn,
                sa.select(approvals)
                .where(approvals.c.plan_id == plan_id, approvals.c.decision == "approved")
                .order_by(approvals.c.seq.desc())
                .limit(1),
            )
            if latest is None:
                raise LedgerError(f"plan {plan_id} has no approval to retry: approve it first")
            done = _terminal_change_ids(conn, plan_id)
            left = tuple(change_id for change_id in latest.change_ids if change_id not in done)
            if not left:
                raise LedgerError(
                    f"nothing left to retry in plan {plan_id}: every change approved by {latest.id} "
                    "is applied, skipped, stale or blocked"
                )
            return _insert_approval(
                conn,
                plan_id=plan_id,
                approver=approver,
                comment=f"retry of {latest.id}",
                change_ids=left,
                allow_blast_radius=latest.allow_blast_radius,
                decision="approved",
                source="person",
            )

    @_reconnecting
    def approvals_after(self, seq: int) -> list[Approval]:
        """Approvals (not rejections) with a `seq` above the given one, oldest first, leaving out those of
        plans rejected since: what a sensor with that cursor has yet to launch."""
        rejected = sa.select(approvals.c.plan_id).where(approvals.c.decision == "rejected")
        query = (
            sa.select(approvals)
            .where(
                approvals.c.seq > seq,
                approvals.c.decision == "approved",
                approvals.c.plan_id.not_in(rejected),
            )
            .order_by(approvals.c.seq)
        )
        with self._begin() as conn:
            return [_approval(row) for row in conn.execute(query).mappings()]

    @_reconnecting
    def get_approval(self, approval_id: str) -> Approval | None:
        with self._begin() as conn:
            return _approval_row(conn, sa.select(approvals).where(approvals.c.approval_id == approval_id))

    @_reconnecting
    def latest_approval(self, plan_id: str) -> Approval | None:
        """The plan's most recent decision, an approval or a rejection (see `decision`)."""
        query = sa.select(approvals).where(approvals.c.plan_id == plan_id).order_by(approvals.c.seq.desc())
        with self._begin() as conn:
            return _approval_row(conn, query.limit(1))

    @_reconnecting
    def rejection(self, plan_id: str) -> Approval | None:
        """The plan's rejection, if it was rejected."""
        with self._begin() as conn:
            return _rejection(conn, plan_id)

    # ---- intent log

    @_reconnecting
    def mark_pending(
        self, plan_id: str, approval_id: str, change_ids: Iterable[str], run_id: str | None
    ) -> tuple[str, ...]:
        """Mark the changes pending (about to be attempted) unless the log already shows them done.
        Returns the ids marked, in plan order; each counts one more attempt."""
        wanted = set(change_ids)
        now = datetime.now(UTC)
        marked: list[str] = []
        with self._begin(write=True) as conn:
            named = _named_changes(conn, plan_id, wanted)
            existing = _outcome_rows(conn, plan_id, wanted)
            for position, change in named:
                row = existing.get(change.id)
                if row is not None and ChangeStatus(row["status"]).terminal:
                    continue
                values = {
                    "status": ChangeStatus.PENDING.value,
                    "approval_id": approval_id,
                    "run_id": run_id,
                    "updated_at": now,
                }
                if row is None:
                    conn.execute(
                        change_outcomes.insert().values(
                            **_change_columns(plan_id, position, change),
                            **values,
                            attempts=1,
                            api_calls=0,
                            retries=0,
                            error=None,
                            detail="",
                        )
                    )
                else:
                    conn.execute(
                        _outcome_update(plan_id, change.id).values(
                            **values, attempts=change_outcomes.c.attempts + 1
                        )
                    )
                attempt = 1 if row is None else row["attempts"] + 1
                _append_attempt(
                    conn, plan_id, change.id, attempt, ChangeStatus.PENDING, approval_id, run_id, now
                )
                marked.append(change.id)
        return tuple(marked)

    def record_outcome(
        self,
        plan_id: str,
        change_id: str,
        *,
        status: ChangeStatus | str,
        approval_id: str | None,
        run_id: str | None,
        api_calls: int = 0,
        retries: int = 0,
        error: str | None = None,
        detail: str = "",
    ) -> ChangeOutcome:
        """Record where a change ended up. API calls and retries add up over the change's attempts."""
        status = ChangeStatus(status)
        outcome = Outcome(change_id, status, approval_id, run_id, api_calls, retries, error, detail)
        return self.record_outcomes(plan_id, [outcome])[0]

    @_reconnecting
    def record_outcomes(self, plan_id: str, outcomes: Sequence[Outcome]) -> list[ChangeOutcome]:
        """Record where each change ended up, in one transaction: a change whose outcome is not recorded
        yet stays pending, which `retry` re-reads before any write."""
        now = datetime.now(UTC)
        with self._begin(write=True) as conn:
            named = {c.id: (i, c) for i, c in _named_changes(conn, plan_id, {o.change_id for o in outcomes})}
            existing = _outcome_rows(conn, plan_id, named)
            for outcome in outcomes:
                values = {
                    "status": outcome.status.value,
                    "approval_id": outcome.approval_id,
                    "run_id": outcome.run_id,
                    "error": outcome.error,
                    "detail": outcome.detail,
                    "updated_at": now,
                }
                row = existing.get(outcome.change_id)
                if row is None:
                    position, change = named[outcome.change_id]
                    conn.execute(
                        change_outcomes.insert().values(
                            **_change_columns(plan_id, position, change),
                            **values,
                            attempts=1,
                            api_calls=outcome.api_calls,
                            retries=outcome.retries,
                        )
                    )
                else:
                    conn.execute(
                        _outcome_update(plan_id, outcome.change_id).values(
                            **values,
                            api_calls=change_outcomes.c.api_calls + outcome.api_calls,
                            retries=change_outcomes.c.retries + outcome.retries,
                        )
                    )
                _append_attempt(
                    conn,
                    plan_id,
                    outcome.change_id,
                    1 if row is None else row["attempts"],
                    outcome.status,
                    outcome.approval_id,
                    outcome.run_id,
                    now,
                    api_calls=outcome.api_calls,
                    retries=outcome.retries,
                    error=outcome.error,
                    detail=outcome.detail,
                )
            recorded = _outcome_rows(conn, plan_id, named)
        return [_outcome(recorded[outcome.change_id]) for outcome in outcomes]

    @_reconnecting
    def outcomes(self, plan_id: str) -> list[ChangeOutcome]:
        """The plan's intent log in plan order; changes never marked have no row."""
        query = (
            sa.select(change_outcomes)
            .where(change_outcomes.c.plan_id == plan_id)
            .order_by(change_outcomes.c.position)
        )
        with self._begin() as conn:
            return [_outcome(row) for row in conn.execute(query).mappings()]

    @_reconnecting
    def audit(self, team: str | None = None, since: datetime | None = None) -> list[ChangeOutcome]:
        """The outcome of every attempt at every approved change, newest first: a change that failed and
        was applied on a retry shows both (attempts still pending are not outcomes yet). Optionally for one
        team (its slug) and from a moment on (a naive datetime is taken as UTC)."""
        attempt = change_attempts
        query = (
            sa.select(
                *[c for c in change_outcomes.c if c.name not in _ATTEMPT_COLUMNS],
                *[attempt.c[name] for name in _ATTEMPT_COLUMNS if name not in ("attempts", "updated_at")],
                attempt.c.attempt.label("attempts"),
                attempt.c.recorded_at.label("updated_at"),
            )
            .select_from(
                attempt.join(
                    change_outcomes,
                    sa.and_(
                        change_outcomes.c.plan_id == attempt.c.plan_id,
                        change_outcomes.c.change_id == attempt.c.change_id,
                    ),
                )
            )
            .where(attempt.c.status != ChangeStatus.PENDING.value)
        )
        if team is not None:
            query = query.where(change_outcomes.c.team == team)
        if since is not None:
            query = query.where(attempt.c.recorded_at >= _utc(since))
        query = query.order_by(attempt.c.recorded_at.desc(), attempt.c.id.desc())
        with self._begin() as conn:
            return [_outcome(row) for row in conn.execute(query).mappings()]

    # ---- refresh cursors

    @_reconnecting
    def refresh_cursor(self, provider: str) -> RefreshCursor | None:
        """Where the provider's next incremental refresh starts; None before its first full refresh."""
        query = sa.select(refresh_cursors).where(refresh_cursors.c.provider == provider)
        with self._begin() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _cursor(row, row["updated_at"])

    @_reconnecting
    def save_refresh_cursor(self, cursor: RefreshCursor) -> None:
        """Store the cursor, replacing the provider's previous one."""
        values = _cursor_values(cursor)
        with self._begin(write=True) as conn:
            _upsert(conn, refresh_cursors, cursor.provider, values)

    @_reconnecting
    def stored_snapshot(self, provider: str) -> StoredSnapshot | None:
        """The snapshot the provider's refresh cursor belongs to, with the account it was read from; None
        before the first refresh."""
        query = sa.select(observed_snapshots).where(observed_snapshots.c.provider == provider)
        with self._begin() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        state = ObservedState(
            users=users_frame(row["users"]),
            teams=teams_frame(row["teams"]),
            memberships=memberships_frame(row["memberships"]),
        )
        return StoredSnapshot(state, SnapshotAccount.from_json(row["account"]), _utc(row["taken_at"]))

    def observed_snapshot(self, provider: str) -> ObservedState | None:
        """The stored snapshot's tables alone (see `stored_snapshot`)."""
        stored = self.stored_snapshot(provider)
        return None if stored is None else stored.state

    @_reconnecting
    def save_refresh(
        self, cursor: RefreshCursor, snapshot: ObservedState, *, account: SnapshotAccount | None
    ) -> None:
        """Store a refresh's snapshot, the account it was read from and the cursor the next refresh starts
        from, in one transaction: a cursor never moves past changes its snapshot does not hold, and a
        snapshot never loses the account it belongs to."""
        cursor_values = _cursor_values(cursor)
        snapshot_values = {
            "users": _rows(snapshot.users),
            "teams": _rows(snapshot.teams),
            "memberships": _rows(snapshot.memberships),
            "taken_at": cursor_values["updated_at"],
            # No account is SQL NULL, as revision 0002 left the snapshots saved before it.
            "account": sa.null() if account is None else account.to_json(),
        }
        with self._begin(write=True) as conn:
            _upsert(conn, observed_snapshots, cursor.provider, snapshot_values)
            _upsert(conn, refresh_cursors, cursor.provider, cursor_values)

    @_reconnecting
    def clear_refresh_cursor(self, provider: str) -> None:
        """Forget the cursor: the next refresh of the provider reads everything."""
        with self._begin(write=True) as conn:
            conn.execute(refresh_cursors.delete().where(refresh_cursors.c.provider == provider))

    # ---- the services kind's snapshot

    @_reconnecting
    def stored_services(self, provider: str) -> StoredServices | None:
        """The services snapshot of the provider's last refresh with its account and cursor; None before
        the first."""
        query = sa.select(services_snapshots).where(services_snapshots.c.provider == provider)
        with self._begin() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        try:
            state: ObservedServices | None = ObservedServices.from_json(
                {name: row[name] for name in ("services", "escalation_policies", "schedules")}
            )
        except (ValidationError, TypeError, KeyError):
            state = None
        cursor = _cursor(row, row["taken_at"])
        return StoredServices(state, ServicesAccount.from_json(row["account"]), cursor, _utc(row["taken_at"]))

    @_reconnecting
    def save_services_refresh(
        self, cursor: RefreshCursor, snapshot: ObservedServices, *, account: ServicesAccount
    ) -> None:
        """Store a services refresh's snapshot, its account and the cursor the next one starts from, in
        place of the provider's previous ones, in one row."""
        values = _cursor_values(cursor)
        row = {
            **snapshot.to_json(),
            "account": account.to_json(),
            "taken_at": values.pop("updated_at"),
            **values,
        }
        with self._begin(write=True) as conn:
            _upsert(conn, services_snapshots, cursor.provider, row)

    @_reconnecting
    def clear_services_snapshot(self, provider: str) -> None:
        """Forget the services snapshot and its cursor: the next services refresh reads everything."""
        with self._begin(write=True) as conn:
            conn.execute(services_snapshots.delete().where(services_snapshots.c.provider == provider))

    # ---- asset outputs, for the IO manager

    @_reconnecting
    def save_output(
        self, asset_key: str, partition_key: str, value: bytes, *, run_id: str, python_type: str
    ) -> None:
        """Store an output in place of the one before, in one transaction: a reader sees the previous value
        or this one, never neither and never a part of it."""
        row = {
            "asset_key": asset_key,
            "partition_key": partition_key,
            "run_id": run_id,
            "python_type": python_type,
            "size_bytes": len(value),
            "value": value,
            "stored_at": datetime.now(UTC),
        }
        with self._begin(write=True) as conn:
            conn.execute(asset_outputs.delete().where(_output_row(asset_key, partition_key)))
            conn.execute(asset_outputs.insert().values(**row))

    @_reconnecting
    def load_output(self, asset_key: str, partition_key: str) -> bytes | None:
        """The stored output, as `save_output` was given it; None when none was stored."""
        query = sa.select(asset_outputs.c.value).where(_output_row(asset_key, partition_key))
        with self._begin() as conn:
            return conn.execute(query).scalar_one_or_none()

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.dispose()


# ---- SQLite transactions --------------------------------------------------------------------------------


def _take_sqlite_transactions_in_hand(engine: Engine) -> None:
    """pysqlite begins a transaction only at the first write, so a read-then-write is not atomic across
    processes. Begin every transaction ourselves: writes with BEGIN IMMEDIATE, which takes the write lock
    up front (other writers wait for it, up to the driver's 5 s timeout)."""

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# ---- queries and conversions ------------------------------------------------------------------------------


def _cursor_values(cursor: RefreshCursor) -> dict[str, Any]:
    return {
        "cursor_time": _utc(cursor.cursor_time),
        "last_record_id": cursor.last_record_id,
        "seen_record_ids": list(cursor.seen_record_ids),
        "last_full_refresh_at": _utc(cursor.last_full_refresh_at),
        "updated_at": _utc(cursor.updated_at) if cursor.updated_at else datetime.now(UTC),
    }


def _cursor(row: sa.RowMapping, updated_at: datetime) -> RefreshCursor:
    """The cursor a row's `_cursor_values` columns hold."""
    return RefreshCursor(
        provider=row["provider"],
        cursor_time=_utc(row["cursor_time"]),
        last_full_refresh_at=_utc(row["last_full_refresh_at"]),
        last_record_id=row["last_record_id"],
        seen_record_ids=tuple(row["seen_record_ids"]),
        updated_at=_utc(updated_at),
    )


def _upsert(conn: Connection, table: sa.Table, provider: str, values: dict[str, Any]) -> None:
    where = table.c.provider == provider
    if conn.execute(sa.select(table.c.provider).where(where)).first() is None:
        conn.execute(table.insert().values(provider=provider, **values))
    else:
        conn.execute(table.update().where(where).values(**values))


def _output_row(asset_key: str, partition_key: str) -> sa.ColumnElement[bool]:
    return (asset_outputs.c.asset_key == asset_key) & (asset_outputs.c.partition_key == partition_key)


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A snapshot table as JSON rows; a missing value (a team without a description) as null."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def _plan(conn: Connection, plan_id: str) -> Plan | None:
    row = conn.execute(sa.select(plans).where(plans.c.plan_id == plan_id)).mappings().first()
    if row is None:
        return None
    bodies = conn.execute(
        sa.select(plan_changes.c.body)
        .where(plan_changes.c.plan_id == plan_id)
        .order_by(plan_changes.c.position)
    ).scalars()
    changes = tuple(Change.model_validate(body) for body in bodies)
    findings = tuple(Finding.model_validate(f) for f in row["findings"])
    return Plan(id=plan_id, changes=changes, findings=findings, provider=row["provider"])


def _require_plan(conn: Connection, plan_id: str) -> Plan:
    plan = _plan(conn, plan_id)
    if plan is None:
        raise LedgerError(unrecorded_plan(plan_id))
    return plan


def _latest_plan_id(conn: Connection, provider: str) -> str | None:
    """The provider's plan seen last: another provider's plans, seen since or not, are no part of it."""
    return conn.execute(
        sa.select(plan_sightings.c.plan_id)
        .join(plans, plans.c.plan_id == plan_sightings.c.plan_id)
        .where(plans.c.provider == provider)
        .order_by(plan_sightings.c.id.desc())
        .limit(1)
    ).scalar()


def _provider_of(plan: Plan) -> str:
    """The plan's provider: its changes', which all share one (one apply writes a plan through one client);
    a plan without changes says its own (`Plan.provider`)."""
    providers = sorted({c.provider for c in plan.changes})
    if len(providers) > 1:
        raise LedgerError(
            f"plan {plan.id} holds changes of several providers ({', '.join(providers)}): a plan is what "
            "one apply writes through one client; plan each provider's changes apart"
        )
    provider = providers[0] if providers else plan.provider
    if "provider" in plan.model_fields_set and plan.provider != provider:
        raise LedgerError(f"plan {plan.id} says it is {plan.provider}'s, but its changes are {provider}'s")
    return provider


def changes_digest(plan_id: str, changes: Iterable[Change]) -> str:
    """sha256 over the plan instance's id and the changes, every field as stored: what an approval covers.
    The apply recomputes it from the ledger's rows and refuses a mismatch, so a row edited after the
    approval (another user id, another team) is never written under an approval of something else."""
    bodies = [c.body() for c in changes]
    text = json.dumps({"plan_id": plan_id, "changes": bodies}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class _Filing:
    instance_id: str
    generation: int
    new: bool
    previous_id: str | None
    held_back: set[str]


def _file_plan(conn: Connection, plan: Plan) -> _Filing:
    """Which instance a refresh's plan is: read-only, so a preview decides exactly as a recording does."""
    content_id, provider = plan.content_id, _provider_of(plan)
    latest = _latest_plan_id(conn, provider)
    instances = (
        sa.select(plans.c.plan_id, plans.c.generation)
        .where(plans.c.content_id == content_id)
        .order_by(plans.c.generation.desc())
        .limit(1)
    )
    current = conn.execute(instances.where(plans.c.provider == provider)).mappings().first()
    if current is not None and _is_open(conn, current["plan_id"], latest):
        plan_id = current["plan_id"]
        return _Filing(
            plan_id,
            current["generation"],
            False,
            _previous_instance(conn, plan_id),
            _held_back(conn, plan_id),
        )
    # Numbered over every provider's instances: plans without changes share one content id, whoever's.
    last = conn.execute(instances).mappings().first()
    generation = last["generation"] + 1 if last is not None else 1
    return _Filing(
        instance_id=Plan.instance_id(content_id, generation),
        generation=generation,
        new=True,
        previous_id=current["plan_id"] if current is not None else None,
        held_back=_carried_rejections(conn, latest) & {c.id for c in plan.changes},
    )


def _is_open(conn: Connection, plan_id: str, latest: str | None) -> bool:
    """Whether a refresh seeing the instance's changes again sees this instance: it is its provider's latest
    plan seen (`latest`), nobody rejected it, and no apply has carried out any of its changes."""
    if latest != plan_id or _rejection(conn, plan_id) is not None:
        return False
    return not _terminal_change_ids(conn, plan_id)


def _previous_instance(conn: Connection, plan_id: str) -> str | None:
    return conn.execute(sa.select(plans.c.previous_plan_id).where(plans.c.plan_id == plan_id)).scalar()


def _held_back(conn: Connection, plan_id: str) -> set[str]:
    held = conn.execute(sa.select(plans.c.held_back).where(plans.c.plan_id == plan_id)).scalar()
    return set(held or ())


def _carried_rejections(conn: Connection, latest: str | None) -> set[str]:
    """Changes a new instance inherits as held back from its provider's plan seen before it (`latest`): all
    of that plan's when it was rejected, else those it held back itself. A change absent from a plan is a
    drift that went away, so a rejection lasts exactly as long as the drift it rejected."""
    if latest is None:
        return set()
    held = _held_back(conn, latest)
    if _rejection(conn, latest) is not None:
        held |= set(
            conn.execute(
                sa.select(plan_changes.c.change_id).where(plan_changes.c.plan_id == latest)
            ).scalars()
        )
    return held


def _blast_radius(conn: Connection, plan_id: str) -> BlastRadius | None:
    row = (
        conn.execute(sa.select(plan_blast_radius).where(plan_blast_radius.c.plan_id == plan_id))
        .mappings()
        .first()
    )
    if row is None:
        return None
    return BlastRadius(exceeded=row["exceeded"], reasons=tuple(row["reasons"]), removals=row["removals"])


def _approver(approver: str) -> str:
    approver = (approver or "").strip()
    if not approver:
        raise LedgerError("approver is empty: say who decides (a name or an email)")
    return approver


def _rejection(conn: Connection, plan_id: str) -> Approval | None:
    query = sa.select(approvals).where(approvals.c.plan_id == plan_id, approvals.c.decision == "rejected")
    return _approval_row(conn, query.limit(1))


def _refuse_rejected(conn: Connection, plan_id: str) -> None:
    rejection = _rejection(conn, plan_id)
    if rejection is not None:
        because = f": {rejection.comment}" if rejection.comment else ""
        raise LedgerError(
            f"plan {plan_id} was rejected by {rejection.approver} ({rejection.id}){because}; "
            + AFTER_REJECTION
        )


def _resolve_changes(plan: Plan, change_ids: Sequence[str] | None) -> list[Change]:
    if change_ids is None:
        return list(plan.changes)
    if isinstance(change_ids, str):
        change_ids = [change_ids]
    wanted = {change_id.strip() for change_id in change_ids if change_id.strip()}
    if not wanted:
        raise LedgerError("change_ids is empty: give none (null) to approve every change of the plan")
    _refuse_unknown_changes(plan, wanted)
    return [c for c in plan.changes if c.id in wanted]


def _refuse_unknown_changes(plan: Plan, change_ids: set[str]) -> None:
    _refuse_unknown(plan.id, {c.id for c in plan.changes}, change_ids)


def _refuse_unknown(plan_id: str, known: set[str], change_ids: set[str]) -> None:
    unknown = sorted(change_ids - known)
    if unknown:
        noun = "change" if len(unknown) == 1 else "changes"
        verb = "is" if len(unknown) == 1 else "are"
        raise LedgerError(f"{noun} {', '.join(unknown)} {verb} not in plan {plan_id}")


def _approve(
    conn: Connection,
    plan_id: str,
    *,
    approver: str,
    comment: str,
    change_ids: Sequence[str] | None,
    allow_blast_radius: bool,
    source: Source,
    limits: BlastRadiusLimits | None,
) -> Approval:
    plan = _require_plan(conn, plan_id)
    _refuse_rejected(conn, plan_id)
    latest = _latest_plan_id(conn, plan.provider)
    if latest != plan_id:
        of = "" if plan.provider == DEFAULT_PROVIDER else f" of {plan.provider}"
        raise LedgerError(
            f"plan {plan_id} is not the latest plan{of} ({latest} is): refresh and approve that one"
        )
    if not plan.changes:
        raise LedgerError(f"plan {plan_id} has no changes to approve")
    chosen = _resolve_changes(plan, change_ids)
    # Judged again here from the rosters recorded with the plan, never read back from a stored verdict.
    # A plan recorded without them is judged at apply alone, on what PagerDuty holds then.
    basis = conn.execute(sa.select(plans.c.basis).where(plans.c.plan_id == plan_id)).scalar()
    verdict = None if basis is None else assess_blast_radius(plan, rosters_from_json(basis), limits)
    covers_removal = any(reduces_a_team(c) for c in chosen)
    if verdict is not None and verdict.exceeded and covers_removal and not allow_blast_radius:
        raise BlastRadiusRefused(plan_id, verdict.reasons)
    return _insert_approval(
        conn,
        plan_id=plan_id,
        approver=approver,
        comment=comment,
        change_ids=tuple(c.id for c in chosen),
        allow_blast_radius=allow_blast_radius,
        decision="approved",
        source=source,
    )


def _insert_approval(
    conn: Connection,
    *,
    plan_id: str,
    approver: str,
    comment: str,
    change_ids: tuple[str, ...],
    allow_blast_radius: bool,
    decision: Decision,
    source: Source,
) -> Approval:
    approval_id = "apr-" + secrets.token_hex(6)
    plan = _require_plan(conn, plan_id)
    approved = set(change_ids)
    conn.execute(
        approvals.insert().values(
            digest=changes_digest(plan_id, [c for c in plan.changes if c.id in approved]),
            approval_id=approval_id,
            plan_id=plan_id,
            approver=approver,
            comment=comment or "",
            change_ids=list(change_ids),
            allow_blast_radius=allow_blast_radius,
            decision=decision,
            source=source,
            created_at=datetime.now(UTC),
        )
    )
    inserted = _approval_row(conn, sa.select(approvals).where(approvals.c.approval_id == approval_id))
    assert inserted is not None  # written in this very transaction
    return inserted


def _approval_row(conn: Connection, query: sa.Select[Any]) -> Approval | None:
    row = conn.execute(query).mappings().first()
    return None if row is None else _approval(row)


def _approval(row: sa.RowMapping) -> Approval:
    return Approval(
        id=row["approval_id"],
        seq=row["seq"],
        plan_id=row["plan_id"],
        approver=row["approver"],
        comment=row["comment"],
        change_ids=tuple(row["change_ids"]),
        allow_blast_radius=bool(row["allow_blast_radius"]),
        decision=row["decision"],
        source=row["source"],
        created_at=_utc(row["created_at"]),
        digest=row["digest"],
    )


def _terminal_change_ids(conn: Connection, plan_id: str) -> set[str]:
    terminal = [status.value for status in ChangeStatus if status.terminal]
    query = sa.select(change_outcomes.c.change_id).where(
        change_outcomes.c.plan_id == plan_id, change_outcomes.c.status.in_(terminal)
    )
    return set(conn.execute(query).scalars())


def _outcome_rows(
    conn: Connection, plan_id: str, change_ids: Iterable[str] | None = None
) -> dict[str, sa.RowMapping]:
    query = sa.select(change_outcomes).where(change_outcomes.c.plan_id == plan_id)
    if change_ids is not None:
        query = query.where(change_outcomes.c.change_id.in_(sorted(change_ids)))
    return {row["change_id"]: row for row in conn.execute(query).mappings()}


def _named_changes(conn: Connection, plan_id: str, change_ids: set[str]) -> list[tuple[int, Change]]:
    """The plan's changes of these ids with their positions, in plan order. Reads those rows alone: an
    intent-log write costs the same in a plan of ten changes as in one of ten thousand."""
    if conn.execute(sa.select(plans.c.plan_id).where(plans.c.plan_id == plan_id)).first() is None:
        raise LedgerError(unrecorded_plan(plan_id))
    rows = conn.execute(
        sa.select(plan_changes.c.position, plan_changes.c.body)
        .where(plan_changes.c.plan_id == plan_id, plan_changes.c.change_id.in_(sorted(change_ids)))
        .order_by(plan_changes.c.position)
    ).all()
    named = [(position, Change.model_validate(body)) for position, body in rows]
    _refuse_unknown(plan_id, {change.id for _, change in named}, change_ids)
    return named


# What an attempt row says for itself; the rest of an audit entry comes from the change's intent-log row.
_ATTEMPT_COLUMNS = (
    "status",
    "approval_id",
    "run_id",
    "attempts",
    "api_calls",
    "retries",
    "error",
    "detail",
    "updated_at",
)


def _append_attempt(
    conn: Connection,
    plan_id: str,
    change_id: str,
    attempt: int,
    status: ChangeStatus,
    approval_id: str | None,
    run_id: str | None,
    at: datetime,
    *,
    api_calls: int = 0,
    retries: int = 0,
    error: str | None = None,
    detail: str = "",
) -> None:
    conn.execute(
        change_attempts.insert().values(
            plan_id=plan_id,
            change_id=change_id,
            attempt=attempt,
            status=status.value,
            approval_id=approval_id,
            run_id=run_id,
            api_calls=api_calls,
            retries=retries,
            error=error,
            detail=detail,
            recorded_at=at,
        )
    )


def _outcome_update(plan_id: str, change_id: str) -> sa.Update:
    return change_outcomes.update().where(
        change_outcomes.c.plan_id == plan_id, change_outcomes.c.change_id == change_id
    )


def _change_columns(plan_id: str, position: int, change: Change) -> dict[str, Any]:
    return {
        "plan_id": plan_id,
        "change_id": change.id,
        "position": position,
        "kind": change.kind.value,
        "team": change.team,
        "team_name": change.team_name,
        "team_id": change.team_id,
        "email": change.email,
        "user_id": change.user_id,
        "role": change.role.value if change.role else None,
        "from_role": change.from_role.value if change.from_role else None,
        "provider": change.provider,
        # Cut to the column's length: what the audit shows of the change, never a reason to fail a write.
        "subject": change.subject[:SUBJECT_LENGTH],
    }


def _outcome(row: sa.RowMapping) -> ChangeOutcome:
    return ChangeOutcome(
        plan_id=row["plan_id"],
        change_id=row["change_id"],
        position=row["position"],
        kind=ChangeKind(row["kind"]),
        team=row["team"],
        team_name=row["team_name"],
        team_id=row["team_id"],
        email=row["email"],
        user_id=row["user_id"],
        role=Role(row["role"]) if row["role"] else None,
        from_role=Role(row["from_role"]) if row["from_role"] else None,
        provider=row["provider"],
        subject=row["subject"],
        status=ChangeStatus(row["status"]),
        approval_id=row["approval_id"],
        run_id=row["run_id"],
        attempts=row["attempts"],
        api_calls=row["api_calls"],
        retries=row["retries"],
        error=row["error"],
        detail=row["detail"],
        updated_at=_utc(row["updated_at"]),
    )


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (written in UTC); Postgres aware ones."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _findings_json(findings: tuple[Finding, ...]) -> list[dict[str, object]]:
    return [f.model_dump(mode="json") for f in findings]


class LedgerResource(dg.ConfigurableResource):
    """Where plans live: a SQLAlchemy URL; empty means a SQLite file under DAGSTER_HOME."""

    url: str = ""
    read_only: bool = Field(
        default=False,
        description="Read the ledger, never write it (`nthlayer plan`): a refresh then records no plan, "
        "approves nothing and stores no snapshot.",
    )

    def open(self) -> Ledger:
        url = self.url or default_ledger_url()
        if not self.read_only:
            return Ledger(url)
        try:
            return Ledger(url, read_only=True)
        except (LedgerMissingError, LedgerOutdatedError, sa.exc.OperationalError, sa.exc.ProgrammingError):
            # Nothing usable to read (no ledger yet, another schema): plan from an empty one in memory.
            return Ledger("sqlite://")
