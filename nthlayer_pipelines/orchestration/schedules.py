"""Schedules: the refresh (hourly unless NTHLAYER_REFRESH_CRON says otherwise) and the nightly audit."""

from __future__ import annotations

import dagster as dg

from nthlayer_pipelines.orchestration.jobs import nightly_audit_job, refresh_job


def build_schedules(*, refresh_cron: str, audit_cron: str, timezone: str) -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(
            name="refresh_schedule",
            job=refresh_job,
            cron_schedule=refresh_cron,
            execution_timezone=timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Keeps the snapshots, divergences and plan fresh.",
        ),
        dg.ScheduleDefinition(
            name="nightly_audit_schedule",
            job=nightly_audit_job,
            cron_schedule=audit_cron,
            execution_timezone=timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="A full read-only pass every night.",
        ),
    ]
