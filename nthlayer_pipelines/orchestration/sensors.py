"""Sensors: the approval gate that launches apply_plan, the refresh after an apply, failure notices."""

import dagster as dg

from nthlayer_pipelines.orchestration.jobs import (
    ANNOUNCED_TAG,
    apply_plan_job,
    nightly_audit_job,
    refresh_job,
)
from nthlayer_pipelines.orchestration.notifications import run_failure_message
from nthlayer_pipelines.orchestration.run_failures import FAILURE_EVENT_TYPES, failure_summary
from nthlayer_pipelines.resources.ledger import LedgerResource
from nthlayer_pipelines.resources.slack.resource import SlackNotifier

# Every job whose failure a person must hear of: the read-only ones too, or a broken refresh goes unseen.
ANNOUNCED_FAILURES = [refresh_job, nightly_audit_job, apply_plan_job]


def approved_plans(context: dg.SensorEvaluationContext, ledger: LedgerResource) -> dg.SensorResult:
    cursor = int(context.cursor or 0)
    with ledger.open() as store:
        approvals = store.approvals_after(cursor)
    if not approvals:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new approval waits to be applied"))
    requests = [
        dg.RunRequest(
            # The daemon never launches a run_key twice: one approval can never apply twice.
            run_key=f"apply:{approval.plan_id}:{approval.id}",
            run_config={"ops": {"apply_changes": {"config": {"approval_id": approval.id}}}},
            tags={
                "nthlayer/plan_id": approval.plan_id,
                "nthlayer/approval_id": approval.id,
                "nthlayer/approver": approval.approver,
            },
        )
        for approval in approvals
    ]
    return dg.SensorResult(run_requests=requests, cursor=str(max(a.seq for a in approvals)))


def build_approved_plans_sensor(interval_seconds: int) -> dg.SensorDefinition:
    return dg.SensorDefinition(
        name="approved_plans_sensor",
        evaluation_fn=approved_plans,
        job=apply_plan_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launches apply_plan once for every new approval in the ledger (cursor: approval seq).",
    )


def build_refresh_after_apply_sensor(interval_seconds: int) -> dg.RunStatusSensorDefinition:
    return dg.run_status_sensor(
        name="refresh_after_apply",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[apply_plan_job],
        request_job=refresh_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="After an apply, refresh the snapshots and the plan: the UI shows what PagerDuty holds.",
    )(refresh_after)


def refresh_after(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"refresh-after:{context.dagster_run.run_id}")


@dg.run_failure_sensor(
    monitored_jobs=ANNOUNCED_FAILURES,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Announces in Slack a failed refresh, nightly audit or apply run; an apply that announced its "
        "outcome itself is not announced again."
    ),
)
def run_failure_to_slack(context: dg.RunFailureSensorContext, slack: SlackNotifier) -> None:
    run = context.dagster_run
    if run.tags.get(ANNOUNCED_TAG):
        return  # its apply already posted the summary of this outcome: one message per apply
    # The failed steps and checks in words; the run's own failure event only lists the steps' names.
    records = context.instance.all_logs(run.run_id, of_type=set(FAILURE_EVENT_TYPES))
    error = failure_summary(r.dagster_event for r in records if r.dagster_event) or (
        context.failure_event.message or "the run failed"
    )
    problem = slack.post(
        **run_failure_message(
            job=run.job_name,
            run_id=run.run_id,
            plan_id=run.tags.get("nthlayer/plan_id", ""),
            error=error,
            run_url=slack.run_link(run.run_id),
        )
    )
    if problem:
        context.log.warning("failure not announced: %s", problem)
