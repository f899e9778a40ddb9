"""Turn divergences into an ordered plan of changes with stable ids, and render it for people and machines."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from nthlayer_pipelines.model import (
    Change,
    ChangeKind,
    DesiredState,
    DivergenceKind,
    Finding,
    FindingKind,
    Plan,
    Role,
)

PROVIDER = "pagerduty"

_CHANGE_FOR = {
    DivergenceKind.MISSING_TEAM: ChangeKind.CREATE_TEAM,
    DivergenceKind.MISSING_MEMBER: ChangeKind.ADD_MEMBER,
    DivergenceKind.ROLE_MISMATCH: ChangeKind.SET_ROLE,
    DivergenceKind.EXTRA_MEMBER: ChangeKind.REMOVE_MEMBER,
}


def _value(row: pd.Series, column: str) -> str | None:
    value = row[column]
    return None if pd.isna(value) else str(value)


def _role(row: pd.Series, column: str) -> Role | None:
    value = _value(row, column)
    return Role(value) if value else None


def build_plan(divergences: pd.DataFrame, desired: DesiredState) -> Plan:
    """Changes in plan order (creates, adds, role changes, removals; then team, email); findings after."""
    changes: list[Change] = []
    findings: list[Finding] = []
    for _, row in divergences.iterrows():
        kind = DivergenceKind(row["kind"])
        team, email = str(row["team"]), _value(row, "email")
        if kind is DivergenceKind.UNRESOLVED_USER:
            findings.append(
                Finding(kind=FindingKind.UNRESOLVED_USER, team=team, email=email, detail=row["detail"])
            )
            continue
        if kind is DivergenceKind.UNMANAGED_TEAM:
            findings.append(Finding(kind=FindingKind.UNMANAGED_TEAM, team=team, detail=row["detail"]))
            continue
        if kind is DivergenceKind.MISSING_TEAM:
            declared = desired.team(team)
            if declared is not None and declared.pagerduty_team_id:
                findings.append(
                    Finding(kind=FindingKind.MISSING_PINNED_TEAM, team=team, detail=row["detail"])
                )
                continue
        change_kind = _CHANGE_FOR[kind]
        changes.append(
            Change.planned(
                PROVIDER,
                change_kind,
                team=team,
                team_name=str(row["team_name"]),
                team_id=_value(row, "team_id"),
                email=email,
                user_id=_value(row, "user_id"),
                role=_role(row, "desired_role") if change_kind is not ChangeKind.REMOVE_MEMBER else None,
                from_role=_role(row, "observed_role"),
            )
        )
    changes.sort(key=lambda c: (c.kind.order, c.team, c.email or ""))
    findings.sort(key=lambda f: (f.kind.value, f.team or "", f.email or ""))
    ordered = tuple(changes)
    return Plan(id=Plan.make_id(ordered), changes=ordered, findings=tuple(findings))


def plan_summary(plan: Plan) -> dict[str, int]:
    """Counts under keys that stay the same run after run, so the UI can plot them."""
    return {
        "changes_total": len(plan.changes),
        "teams_to_create": plan.count(ChangeKind.CREATE_TEAM),
        "members_to_add": plan.count(ChangeKind.ADD_MEMBER),
        "roles_to_change": plan.count(ChangeKind.SET_ROLE),
        "members_to_remove": plan.count(ChangeKind.REMOVE_MEMBER),
        "findings": len(plan.findings),
    }


def render_plan_text(plan: Plan) -> str:
    """A `terraform plan`-like view: `+` add, `~` change, `-` remove, `!` finding."""
    counts = plan_summary(plan)
    if not plan.changes:
        lines = [f"Plan {plan.id}: no changes. PagerDuty matches the desired state."]
    else:
        lines = [
            f"Plan {plan.id}: {counts['teams_to_create']} to create, {counts['members_to_add']} to add, "
            f"{counts['roles_to_change']} to change, {counts['members_to_remove']} to remove.",
            "",
        ]
        for change in plan.changes:
            lines.append("  " + describe_change(change))
    if plan.findings:
        lines += ["", f"Findings ({len(plan.findings)}), not changed by this plan:"]
        for finding in plan.findings:
            subject = " ".join(x for x in (finding.team, finding.email) if x)
            lines.append(f"  ! {finding.kind.value}  {subject}: {finding.detail}")
    return "\n".join(lines)


def describe_change(change: Change) -> str:
    symbol = change.kind.symbol
    match change.kind:
        case ChangeKind.CREATE_TEAM:
            return f"{symbol} team {change.team_name!r} ({change.team})"
        case ChangeKind.ADD_MEMBER:
            return f"{symbol} {change.team}: {change.email} as {change.role}"
        case ChangeKind.SET_ROLE:
            return f"{symbol} {change.team}: {change.email} {change.from_role} -> {change.role}"
        case ChangeKind.REMOVE_MEMBER:
            return f"{symbol} {change.team}: {change.email or change.user_id} (was {change.from_role})"


def render_plan_markdown(plan: Plan, *, limit: int = 200) -> str:
    """The plan for the Dagster UI: the text view in a diff block, cut at `limit` changes."""
    shown = Plan(id=plan.id, changes=plan.changes[:limit], findings=plan.findings[:limit])
    # Unindented, so the UI's diff highlighting colours `+` and `-` lines.
    text = "\n".join(line.lstrip() for line in render_plan_text(shown).splitlines())
    if len(plan.changes) > limit or len(plan.findings) > limit:
        text += f"\n\n  ... {len(plan.changes)} changes and {len(plan.findings)} findings in all"
    return f"```diff\n{text}\n```"


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The stable machine contract of `nthlayer plan --json` (documented in the README)."""
    return {
        "plan_id": plan.id,
        "changes": [
            {
                "id": c.id,
                "kind": c.kind.value,
                "team": c.team,
                "email": c.email,
                "role": c.role.value if c.role else None,
                "from_role": c.from_role.value if c.from_role else None,
            }
            for c in plan.changes
        ],
        "findings": [
            {"kind": f.kind.value, "team": f.team, "email": f.email, "detail": f.detail}
            for f in plan.findings
        ],
    }


def plan_to_json_text(plan: Plan) -> str:
    return json.dumps(plan_to_json(plan), indent=2)
