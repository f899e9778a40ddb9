"""The apply's Slack summary names each change, field by field, within one section's limit."""

from __future__ import annotations

from datetime import UTC, datetime

from nthlayer_pipelines.apply import ApplyReport
from nthlayer_pipelines.core.kind import ApplyRow
from nthlayer_pipelines.core.model import Change, ChangeKind, ChangeStatus, FieldChange, Role
from nthlayer_pipelines.orchestration.notifications import SECTION_LIMIT, apply_summary_message, changes_text
from nthlayer_pipelines.resources.ledger import Approval


def report(rows: list[ApplyRow]) -> ApplyReport:
    return ApplyReport(
        plan_id="plan-000000000001",
        approval_id="apr-1",
        run_id="r",
        rows=tuple(rows),
        api_calls=3,
        retries=0,
        duration_seconds=1.0,
    )


def service_change() -> Change:
    return Change.of_fields(
        "pagerduty",
        ChangeKind.UPDATE_SERVICE,
        team="payments",
        team_name="Payments",
        team_id="PT1",
        target_id="PSVC1",
        target_name="Payment API",
        fields=(FieldChange(name="acknowledgement_timeout", before=1800, after=600),),
    )


def test_each_change_is_a_line_with_its_fields() -> None:
    member = Change.planned(
        "pagerduty",
        ChangeKind.ADD_MEMBER,
        team="payments",
        team_name="Payments",
        team_id="PT1",
        email="carol@example.com",
        user_id="PU3",
        role=Role.RESPONDER,
    )
    text = changes_text(
        report([ApplyRow(member, ChangeStatus.APPLIED), ApplyRow(service_change(), ChangeStatus.APPLIED)])
    )
    assert text.splitlines() == [
        "`applied` + payments (Payments, PT1): carol@example.com as responder",
        '`applied` ~ service "Payment API" (PSVC1), team payments (Payments, PT1)  '
        "acknowledgement_timeout: 1800 → 600",
    ]


def test_a_long_run_is_cut_to_one_section_saying_how_many_more() -> None:
    rows = [ApplyRow(service_change(), ChangeStatus.APPLIED)] * 200
    text = changes_text(report(rows))
    assert len(text) <= SECTION_LIMIT
    assert text.splitlines()[-1].startswith("… and ") and "more: the run lists every change" in text
    approval = Approval(
        id="apr-1",
        seq=1,
        plan_id="plan-000000000001",
        approver="alice",
        comment="",
        change_ids=(),
        allow_blast_radius=False,
        decision="approved",
        source="person",
        created_at=datetime.now(UTC),
    )
    message = apply_summary_message(approval, report(rows), run_url="http://dagster/runs/r")
    assert any(block.get("text", {}).get("text") == text for block in message["blocks"])
