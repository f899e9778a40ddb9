"""Slack messages (Block Kit) about applied plans and failed runs. Pure: building, not sending."""

from __future__ import annotations

from typing import Any

from nthlayer_pipelines.apply import ApplyReport
from nthlayer_pipelines.core.plan import describe_change
from nthlayer_pipelines.resources.ledger import Approval


def apply_summary_message(approval: Approval, report: ApplyReport, *, run_url: str) -> dict[str, Any]:
    counts = (
        ", ".join(f"{count} {status}" for status, count in report.counts.items() if count) or "nothing to do"
    )
    verdict = "applied" if report.succeeded else "applied with problems"
    text = f"nthlayer: plan {approval.plan_id} {verdict} ({counts}), approved by {approval.approver}"
    fields = [
        {"type": "mrkdwn", "text": f"*Plan*\n`{approval.plan_id}`"},
        {"type": "mrkdwn", "text": f"*Approved by*\n{approval.approver}"},
        {"type": "mrkdwn", "text": f"*Outcome*\n{counts}"},
        {"type": "mrkdwn", "text": f"*API calls*\n{report.api_calls} ({report.retries} retries)"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"PagerDuty plan {verdict}"}},
        {"type": "section", "fields": fields},
    ]
    if report.rows:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": changes_text(report)}})
    blocks.append(
        {"type": "section", "text": {"type": "mrkdwn", "text": f"<{run_url}|Open the apply run in Dagster>"}}
    )
    return {"text": text, "blocks": blocks}


SECTION_LIMIT = 3000  # Slack's most characters in a section's text


def changes_text(report: ApplyReport) -> str:
    """What this run did to each change, one line each and field by field (`~ service "Payment API" ...
    acknowledgement_timeout: 1800 → 600`), as many as fit one section; the run lists every one."""
    lines: list[str] = []
    used = 0
    for shown, row in enumerate(report.rows):
        line = f"`{row.status}` {describe_change(row.change)}"
        rest = len(report.rows) - shown
        tail = f"… and {rest} more: the run lists every change"
        if used + len(line) + 1 > SECTION_LIMIT - len(tail) - 1:
            lines.append(tail)
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


# What a failed run of each announced job is called in Slack; an unknown job goes by its own name.
_FAILED_JOB_WORDS = {"refresh": "refresh", "nightly_audit": "nightly audit"}


def run_failure_message(*, job: str, run_id: str, plan_id: str, error: str, run_url: str) -> dict[str, Any]:
    """A failed run: an apply names its plan, a refresh or an audit its job."""
    if job == "apply_plan":
        text = f"nthlayer: applying plan {plan_id or '?'} failed: {error}"
        header, subject = "PagerDuty apply failed", f"*Plan* `{plan_id or '?'}`"
    else:
        what = _FAILED_JOB_WORDS.get(job, job)
        text = f"nthlayer: the {what} failed: {error}"
        header = f"nthlayer {what} failed"
        subject = f"*Job* `{job}`"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{subject}\n{error[:2000]}"}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"<{run_url}|Open run {run_id[:8]} in Dagster>"},
        },
    ]
    return {"text": text, "blocks": blocks}
