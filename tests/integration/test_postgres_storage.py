"""Production storage: a refresh run on deploy/dagster.yaml lands in Postgres, and so does its plan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from nthlayer_pipelines.core.model import Change
from nthlayer_pipelines.definitions import build_definitions
from tests.support import EXPECTED_EXAMPLE_CHANGES, EXPECTED_EXAMPLE_FINDINGS, REPO, pipeline_environment

pytestmark = pytest.mark.postgres

REFRESH_ASSETS = [
    "change_plan",
    "cortex_teams",
    "desired_state",
    "divergences",
    "git_definitions",
    "pagerduty_memberships",
    "pagerduty_services",
    "pagerduty_teams",
    "pagerduty_users",
    "service_standards",
]
CORE_CHECKS = {
    ("desired_state", "desired_teams_have_a_manager"),
    ("divergences", "unresolved_users_below_threshold"),
    ("pagerduty_memberships", "pagerduty_memberships_name_known_users"),
    ("pagerduty_users", "pagerduty_users_have_unique_emails"),
}
EXPECTED_PLAN_COUNTS = {
    "changes_total": 7,
    "teams_to_create": 1,
    "members_to_add": 4,
    "roles_to_change": 1,
    "members_to_remove": 1,
    "findings": 2,
}


def production_instance(home: Path) -> dg.DagsterInstance:
    """An instance built from deploy/dagster.yaml, as a deployment copies it into DAGSTER_HOME."""
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


def as_change_tuple(change: Change) -> tuple:
    return (
        change.kind.value,
        change.team,
        change.email,
        change.role.value if change.role else None,
        change.from_role.value if change.from_role else None,
    )


def test_refresh_run_and_plan_are_persisted_in_postgres(
    example_sandbox, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = pipeline_environment(example_sandbox, tmp_path, NTHLAYER_LEDGER_URL=postgres_url)
    for name, value in {**environ, "DAGSTER_POSTGRES_URL": postgres_url}.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "dagster_home"

    with production_instance(home) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = build_definitions(environ).resolve_job_def("refresh").execute_in_process(instance=instance)
    assert result.success
    run_id = result.run_id
    evaluated_checks = sorted(
        (e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()
    )

    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            # Dagster's own tables, read without Dagster.
            run = conn.execute(
                sa.text("SELECT pipeline_name, status FROM runs WHERE run_id = :run_id"), {"run_id": run_id}
            ).one()
            assert tuple(run) == ("refresh", "SUCCESS")
            tags = dict(
                conn.execute(
                    sa.text("SELECT key, value FROM run_tags WHERE run_id = :run_id"), {"run_id": run_id}
                )
                .tuples()
                .all()
            )
            assert tags["nthlayer/mode"] == "refresh"

            rows = conn.execute(
                sa.text(
                    "SELECT asset_key, event FROM event_logs"
                    " WHERE run_id = :run_id AND dagster_event_type = 'ASSET_MATERIALIZATION' ORDER BY id"
                ),
                {"run_id": run_id},
            ).all()
            materialized = {json.loads(row.asset_key)[0]: row.event for row in rows}
            assert sorted(materialized) == REFRESH_ASSETS
            assert len(rows) == len(REFRESH_ASSETS)
            plan_metadata = dg.deserialize_value(
                materialized["change_plan"], dg.EventLogEntry
            ).asset_materialization
            assert plan_metadata is not None
            stored_counts = {key: plan_metadata.metadata[key].value for key in EXPECTED_PLAN_COUNTS}
            assert stored_counts == EXPECTED_PLAN_COUNTS
            plan_id = plan_metadata.metadata["plan_id"].value
            assert plan_metadata.metadata["new_plan"].value is True

            checks = conn.execute(
                sa.text(
                    "SELECT asset_key, check_name, execution_status FROM asset_check_executions"
                    " WHERE run_id = :run_id ORDER BY check_name"
                ),
                {"run_id": run_id},
            ).all()
            stored_checks = sorted((json.loads(c.asset_key)[0], c.check_name) for c in checks)
            assert stored_checks == evaluated_checks
            assert set(stored_checks) >= CORE_CHECKS
            assert {c.execution_status for c in checks} == {"SUCCEEDED"}

            # The ledger, in the same database.
            ledger_row = conn.execute(
                sa.text(
                    "SELECT change_count, finding_count, last_run_id FROM nthlayer_plans WHERE plan_id = :id"
                ),
                {"id": plan_id},
            ).one()
            assert tuple(ledger_row) == (
                len(EXPECTED_EXAMPLE_CHANGES),
                len(EXPECTED_EXAMPLE_FINDINGS),
                run_id,
            )
            bodies = (
                conn.execute(
                    sa.text("SELECT body FROM nthlayer_plan_changes WHERE plan_id = :id ORDER BY position"),
                    {"id": plan_id},
                )
                .scalars()
                .all()
            )
            assert [
                as_change_tuple(Change.model_validate(body)) for body in bodies
            ] == EXPECTED_EXAMPLE_CHANGES
            sightings = conn.execute(
                sa.text("SELECT plan_id, run_id FROM nthlayer_plan_sightings"),
            ).all()
            assert [tuple(s) for s in sightings] == [(plan_id, run_id)]
    finally:
        engine.dispose()

    # A new instance on the same configuration sees it all: it was persisted, not cached.
    with dg.DagsterInstance.from_config(str(home)) as fresh:
        stored_run = fresh.get_run_by_id(run_id)
        assert stored_run is not None
        assert (stored_run.job_name, stored_run.status) == ("refresh", dg.DagsterRunStatus.SUCCESS)
        latest = fresh.get_latest_materialization_event(dg.AssetKey("change_plan"))
        assert latest is not None and latest.run_id == run_id
        assert latest.asset_materialization.metadata["plan_id"].value == plan_id
        records = fresh.fetch_materializations(dg.AssetKey("divergences"), limit=10).records
        assert [r.run_id for r in records] == [run_id]
        assert records[0].asset_materialization.metadata["scope"].value == "all teams"
        # The schema was stamped at the head revision on creation: migrating (alembic) finds nothing to do.
        revisions_before = alembic_revisions(postgres_url)
        fresh.upgrade()
    assert len(revisions_before) == 1
    assert alembic_revisions(postgres_url) == revisions_before


def alembic_revisions(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()
