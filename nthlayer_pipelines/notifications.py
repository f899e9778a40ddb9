"""Slack messages (Block Kit) about applied plans and failed apply runs. Pure: building, not sending."""

from __future__ import annotations

from typing import Any

from nthlayer_pipelines.apply import ApplyReport
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
        {"type": "section", "text": {"type": "mrkdwn", "text": f"<{run_url}|Open the apply run in Dagster>"}},
    ]
    return {"text": text, "blocks": blocks}


def apply_failure_message(*, run_id: str, plan_id: str, error: str, run_url: str) -> dict[str, Any]:
    text = f"nthlayer: applying plan {plan_id or '?'} failed: {error}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "PagerDuty apply failed"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Plan* `{plan_id or '?'}`\n{error[:2000]}"}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"<{run_url}|Open run {run_id[:8]} in Dagster>"},
        },
    ]
    return {"text": text, "blocks": blocks}
