"""The ledger: every plan nthlayer computed, with its changes and findings, in SQL (SQLite or Postgres).

The ledger is ours, not Dagster's: plans, approvals and change outcomes must outlive any run-storage
retention policy and be readable without the Dagster instance.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from nthlayer_pipelines.model import Change, Finding, Plan

metadata = sa.MetaData()

plans = sa.Table(
    "nthlayer_plans",
    metadata,
    sa.Column("plan_id", sa.String(40), primary_key=True),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_run_id", sa.String(64)),
    sa.Column("change_count", sa.Integer, nullable=False),
    sa.Column("finding_count", sa.Integer, nullable=False),
    sa.Column("findings", sa.JSON, nullable=False),
)

plan_changes = sa.Table(
    "nthlayer_plan_changes",
    metadata,
    sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), primary_key=True),
    sa.Column("change_id", sa.String(40), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
)

plan_sightings = sa.Table(
    "nthlayer_plan_sightings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("plan_id", sa.String(40), sa.ForeignKey("nthlayer_plans.plan_id"), nullable=False),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64)),
)


def default_ledger_url() -> str:
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home")
    return f"sqlite:///{home / 'nthlayer-ledger.db'}"


class Ledger:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = sa.create_engine(url, future=True)
        metadata.create_all(self.engine)

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def record_plan(self, plan: Plan, *, run_id: str | None = None) -> bool:
        """Store the plan (or note that it was seen again). Returns True when the plan is new."""
        now = datetime.now(UTC)
        with self._begin() as conn:
            exists = conn.execute(sa.select(plans.c.plan_id).where(plans.c.plan_id == plan.id)).first()
            if exists:
                conn.execute(
                    plans.update()
                    .where(plans.c.plan_id == plan.id)
                    .values(last_seen_at=now, last_run_id=run_id, findings=_findings_json(plan.findings))
                )
            else:
                conn.execute(
                    plans.insert().values(
                        plan_id=plan.id,
                        first_seen_at=now,
                        last_seen_at=now,
                        last_run_id=run_id,
                        change_count=len(plan.changes),
                        finding_count=len(plan.findings),
                        findings=_findings_json(plan.findings),
                    )
                )
                if plan.changes:
                    conn.execute(
                        plan_changes.insert(),
                        [
                            {
                                "plan_id": plan.id,
                                "change_id": c.id,
                                "position": i,
                                "body": c.model_dump(mode="json"),
                            }
                            for i, c in enumerate(plan.changes)
                        ],
                    )
            conn.execute(plan_sightings.insert().values(plan_id=plan.id, seen_at=now, run_id=run_id))
        return not exists

    def get_plan(self, plan_id: str) -> Plan | None:
        with self._begin() as conn:
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
        return Plan(id=plan_id, changes=changes, findings=findings)

    def latest_plan_id(self) -> str | None:
        """The plan the most recent refresh produced."""
        with self._begin() as conn:
            return conn.execute(
                sa.select(plan_sightings.c.plan_id).order_by(plan_sightings.c.id.desc()).limit(1)
            ).scalar()

    def dispose(self) -> None:
        self.engine.dispose()


def _findings_json(findings: tuple[Finding, ...]) -> list[dict[str, object]]:
    return [f.model_dump(mode="json") for f in findings]


class LedgerResource(dg.ConfigurableResource):
    """Where plans live: a SQLAlchemy URL; empty means a SQLite file under DAGSTER_HOME."""

    url: str = ""

    def open(self) -> Ledger:
        return Ledger(self.url or default_ledger_url())
