"""Jobs: the read-only refresh and nightly audit; approving, rejecting and applying a plan."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from nthlayer_pipelines.apply import ApplyRefused, apply_approval
from nthlayer_pipelines.assets.desired.assets import current_desired_state
from nthlayer_pipelines.assets.pagerduty.snapshot import POOL
from nthlayer_pipelines.core.model import ChangeStatus, DefinitionsError, SourceError
from nthlayer_pipelines.orchestration.notifications import apply_summary_message
from nthlayer_pipelines.resources.cortex.resource import CortexResource
from nthlayer_pipelines.resources.ledger import AFTER_REJECTION, LedgerError, LedgerResource
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.resources.settings import (
    ApproverRefused,
    Approvers,
    DefinitionsRepository,
    ReconcileSettings,
)
from nthlayer_pipelines.resources.slack.resource import SlackNotifier

READ_ONLY_ASSETS = dg.AssetSelection.groups("desired", "observed", "reconcile")
ANNOUNCED_TAG = "nthlayer/announced"  # an apply run whose outcome its op announced in Slack

refresh_job = dg.define_asset_job(
    "refresh",
    selection=READ_ONLY_ASSETS,
    description=(
        "Snapshot every source and provider, compute divergences and the change plan. Read-only: "
        "nothing is written to any provider. Scope it to some teams with resources.reconcile.config.teams."
    ),
    tags={"nthlayer/mode": "refresh"},
    # One process: a process per step costs ~2 s each on two cores, and the provider pool serialises reads.
    executor_def=dg.in_process_executor,
)

nightly_audit_job = dg.define_asset_job(
    "nightly_audit",
    selection=READ_ONLY_ASSETS,
    description="A full read-only pass over the whole account with every check, for the audit trail.",
    tags={"nthlayer/mode": "audit"},
    executor_def=dg.in_process_executor,
)


# Approval and apply ------------------------------------------------------------------------------------


class ApproveConfig(dg.Config):
    plan_id: str = Field(description="The plan to approve: the latest plan's id (see the change_plan asset).")
    approver: str = Field(description="Who approves; recorded in the ledger and on the apply run.")
    comment: str = ""
    change_ids: list[str] = Field(
        default_factory=list, description="Approve only these changes (empty: all)."
    )
    allow_blast_radius: bool = Field(
        default=False, description="Approve a plan over the blast-radius limits."
    )


class RejectConfig(dg.Config):
    plan_id: str
    approver: str
    comment: str = ""


class ApplyConfig(dg.Config):
    approval_id: str = Field(description="The approval whose changes to apply (the sensor sets it).")


@contextmanager
def _ledger_refusal_fails_the_op() -> Iterator[None]:
    """The ledger's refusal (unknown plan, not the latest, rejected, ...) fails the op with its reason."""
    try:
        yield
    except LedgerError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error


def _checked_approver(context: dg.OpExecutionContext, approvers: Approvers, approver: str) -> str:
    """The approver when NTHLAYER_APPROVERS allows them, else a failure that says why."""
    try:
        name = approvers.check(approver)
    except ApproverRefused as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    if approvers.warning:
        context.log.warning(approvers.warning)
    return name


def _approver_check(approvers: Approvers) -> str:
    return approvers.warning or "listed in NTHLAYER_APPROVERS"


@dg.op(description="Record a person's approval of a plan in the ledger; the sensor then launches apply_plan.")
def approve(
    context: dg.OpExecutionContext,
    config: ApproveConfig,
    ledger: LedgerResource,
    approvers: dg.ResourceParam[Approvers],
    reconcile: ReconcileSettings,
) -> dg.Output[str]:
    approver = _checked_approver(context, approvers, config.approver)
    with ledger.open() as store, _ledger_refusal_fails_the_op():
        approval = store.approve(
            config.plan_id,
            approver=approver,
            comment=config.comment,
            change_ids=config.change_ids or None,
            allow_blast_radius=config.allow_blast_radius,
            limits=reconcile.blast_radius_limits(),
        )
    context.log.info("approval %s of plan %s by %s", approval.id, approval.plan_id, approval.approver)
    return dg.Output(
        approval.id,
        metadata={
            "approval_id": approval.id,
            "plan_id": approval.plan_id,
            "approver": approval.approver,
            "changes_approved": len(approval.change_ids),
            "allow_blast_radius": approval.allow_blast_radius,
            "approver_check": _approver_check(approvers),
        },
    )


@dg.op(description="Record a person's rejection of a plan; a rejected plan is never applied.")
def reject(
    context: dg.OpExecutionContext,
    config: RejectConfig,
    ledger: LedgerResource,
    approvers: dg.ResourceParam[Approvers],
) -> dg.Output[str]:
    approver = _checked_approver(context, approvers, config.approver)
    with ledger.open() as store, _ledger_refusal_fails_the_op():
        rejection = store.reject(config.plan_id, approver=approver, comment=config.comment)
    context.log.info("plan %s rejected by %s: %s", rejection.plan_id, rejection.approver, AFTER_REJECTION)
    return dg.Output(
        rejection.id,
        metadata={
            "plan_id": rejection.plan_id,
            "approver": rejection.approver,
            "approver_check": _approver_check(approvers),
        },
    )


@dg.op(
    description=(
        "Apply an approval's changes in plan order: re-read each entity, skip what converged, mark stale "
        "what moved, write the rest, then verify. Every change has an intent-log row; a retry resumes there."
    ),
    pool=POOL,
    # HTTP retries live in the client, so a change that failed has had its retries: it waits for a new
    # approval or `nthlayer retry`. This policy retries only what never reached a verdict (an error outside
    # the provider's answers: the ledger out of reach longer than it reconnects, a crash), resuming from
    # the intent log, which re-reads before writing.
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL),
)
def apply_changes(
    context: dg.OpExecutionContext,
    config: ApplyConfig,
    ledger: LedgerResource,
    pagerduty: PagerDutyResource,
    slack: SlackNotifier,
    approvers: dg.ResourceParam[Approvers],
    definitions: DefinitionsRepository,
    cortex: CortexResource,
    reconcile: ReconcileSettings,
) -> dg.Output[dict[str, int]]:
    try:
        desired = current_desired_state(definitions, cortex, reconcile)
    except (DefinitionsError, SourceError, ValueError) as error:
        raise dg.Failure(
            f"cannot tell which approved changes the definitions still want, so nothing was written: {error}",
            allow_retries=False,
        ) from error
    with ledger.open() as store:
        approval = store.get_approval(config.approval_id)
        if approval is None:
            raise dg.Failure(f"approval {config.approval_id} is not in the ledger", allow_retries=False)
        if approval.source == "person":
            # An approval recorded before its approver left the list, or past the checks, writes nothing.
            try:
                approvers.check(approval.approver)
            except ApproverRefused as error:
                raise dg.Failure(f"approval {approval.id}: {error}", allow_retries=False) from error
        with pagerduty.client() as client:
            try:
                report = apply_approval(
                    ledger=store,
                    approval=approval,
                    client=client,
                    desired=desired,
                    limits=reconcile.blast_radius_limits(),
                    run_id=context.run_id,
                    log=context.log,
                )
            except ApplyRefused as error:
                raise dg.Failure(str(error), allow_retries=False) from error
    metadata = {
        **report.summary(),
        "plan_id": approval.plan_id,
        "approval_id": approval.id,
        "changes": dg.MetadataValue.md(report.markdown()),
    }
    # One message per apply outcome: this summary, success or not; the failure sensor announces only
    # runs that ended without one (the run's tag says which).
    problem = slack.post(**apply_summary_message(approval, report, run_url=slack.run_link(context.run_id)))
    if problem:
        context.log.warning("apply summary not announced: %s", problem)
    else:
        context.instance.add_run_tags(context.run_id, {ANNOUNCED_TAG: "true"})
    metadata["slack"] = problem or f"summary posted to {slack.channel}"
    if report.unconverged:
        raise dg.Failure(
            description=f"{len(report.unconverged)} applied change(s) did not converge: "
            + "; ".join(report.unconverged),
            metadata=metadata,
            allow_retries=False,
        )
    if not report.succeeded:
        failed = report.counts[ChangeStatus.FAILED.value]
        raise dg.Failure(
            description=f"{failed} change(s) failed after the client's retries (see the changes table); "
            f"`nthlayer retry {approval.plan_id} --approver NAME` tries them again",
            metadata=metadata,
            allow_retries=False,
        )
    return dg.Output(report.counts, metadata=metadata)


approve_plan_job = dg.GraphDefinition(name="approve_plan", node_defs=[approve]).to_job(
    description="Approve a plan (config: plan_id, approver, comment, change_ids, allow_blast_radius).",
    executor_def=dg.in_process_executor,
    tags={"nthlayer/mode": "approve"},
)

reject_plan_job = dg.GraphDefinition(name="reject_plan", node_defs=[reject]).to_job(
    description="Reject a plan (config: plan_id, approver, comment).",
    executor_def=dg.in_process_executor,
    tags={"nthlayer/mode": "reject"},
)

apply_plan_job = dg.GraphDefinition(name="apply_plan", node_defs=[apply_changes]).to_job(
    description="Write an approved plan's changes to PagerDuty. Launched by approved_plans_sensor.",
    # One step: the in-process executor starts in about half the time of the multiprocess one.
    executor_def=dg.in_process_executor,
    tags={"nthlayer/mode": "apply"},
)
