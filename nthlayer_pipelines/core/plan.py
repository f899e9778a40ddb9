"""Turn divergences into an ordered plan of changes with stable ids, and render it for people and machines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import (
    TEAM_MEMBERSHIP,
    Change,
    ChangeKind,
    DesiredState,
    DivergenceKind,
    FieldChange,
    Finding,
    FindingKind,
    Plan,
    Role,
)

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")

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


_FINDING_FOR = {
    DivergenceKind.UNRESOLVED_USER: FindingKind.UNRESOLVED_USER,
    DivergenceKind.UNMANAGED_TEAM: FindingKind.UNMANAGED_TEAM,
    DivergenceKind.AMBIGUOUS_TEAM: FindingKind.AMBIGUOUS_TEAM,
    DivergenceKind.PINNED_TEAM_NAME_MISMATCH: FindingKind.PINNED_TEAM_NAME_MISMATCH,
}


def build_plan(divergences: pd.DataFrame, desired: DesiredState) -> Plan:
    """Changes in plan order (creates, adds, role changes, removals; then team, email); findings after,
    blocking ones first."""
    changes: list[Change] = []
    findings: list[Finding] = []
    for _, row in divergences.iterrows():
        kind = DivergenceKind(row["kind"])
        team, email = str(row["team"]), _value(row, "email")
        if kind in _FINDING_FOR:
            findings.append(Finding(kind=_FINDING_FOR[kind], team=team, email=email, detail=row["detail"]))
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
    findings += possible_renames(changes, findings)
    return ordered_plan(changes, findings)


def ordered_plan(changes: Iterable[Change], findings: Iterable[Finding]) -> Plan:
    """The plan of every kind's changes in plan order (creates, additions, role changes, policies' rules,
    services, removals; then team, member, object) and findings after, blocking ones first."""
    ordered = tuple(sorted(changes, key=lambda c: (c.kind.order, c.team, c.email or "", c.target_name or "")))
    kept = sorted(
        findings, key=lambda f: (not f.blocking, f.kind.value, f.team or "", f.email or "", f.subject or "")
    )
    return Plan(id=Plan.make_id(ordered), changes=ordered, findings=tuple(kept))


def with_changes(plan: Plan, changes: Iterable[Change], findings: Iterable[Finding]) -> Plan:
    """`plan` with another kind's changes and findings in it, re-ordered and re-named."""
    return ordered_plan([*plan.changes, *changes], [*plan.findings, *findings])


def possible_renames(changes: list[Change], findings: list[Finding]) -> list[Finding]:
    """A removal from a team that also wants an address PagerDuty does not know, one finding each: an
    address renamed in PagerDuty looks exactly like a departure plus a newcomer without an account."""
    unresolved: dict[str, list[str]] = {}
    for finding in findings:
        if finding.kind is FindingKind.UNRESOLVED_USER and finding.team and finding.email:
            unresolved.setdefault(finding.team, []).append(finding.email)
    paired = []
    for change in changes:
        wanted = sorted(unresolved.get(change.team, ()))
        if change.kind is not ChangeKind.REMOVE_MEMBER or not wanted:
            continue
        who = change.email or change.user_id
        plural = "has no PagerDuty account" if len(wanted) == 1 else "have no PagerDuty account"
        detail = (
            f"{who} is removed while {' and '.join(wanted)} {plural}: "
            "if the address was renamed in PagerDuty, this removes the person"
        )
        paired.append(
            Finding(
                kind=FindingKind.POSSIBLE_EMAIL_RENAME, team=change.team, email=change.email, detail=detail
            )
        )
    return paired


def plan_summary(plan: Plan) -> dict[str, int]:
    """Counts under keys that stay the same run after run, so the UI can plot them."""
    return {
        "changes_total": len(plan.changes),
        "teams_to_create": plan.count(ChangeKind.CREATE_TEAM),
        "members_to_add": plan.count(ChangeKind.ADD_MEMBER),
        "roles_to_change": plan.count(ChangeKind.SET_ROLE),
        "members_to_remove": plan.count(ChangeKind.REMOVE_MEMBER),
        "policies_to_create": plan.count(ChangeKind.CREATE_ESCALATION_POLICY),
        "policies_to_update": plan.count(ChangeKind.UPDATE_ESCALATION_POLICY),
        "services_to_repoint": plan.count(ChangeKind.SET_SERVICE_POLICY),
        "services_to_update": plan.count(ChangeKind.UPDATE_SERVICE),
        "findings": len(plan.findings),
        "teams_blocked": len(plan.blocking_findings),
    }


def render_plan_text(plan: Plan) -> str:
    """A `terraform plan`-like view: `+` add, `~` change, `-` remove, `!` finding; teams left out for a
    person to settle (`!!`) come first, so no reader takes a short plan for the whole story."""
    counts = plan_summary(plan)
    blocked = plan.blocking_findings
    if not plan.changes:
        outcome = (
            f"{len(blocked)} team(s) blocked (below)" if blocked else "PagerDuty matches the desired state"
        )
        lines = [f"Plan {plan.id}: no changes. {outcome}."]
    else:
        lines = [
            f"Plan {plan.id}: {counts['teams_to_create']} to create, {counts['members_to_add']} to add, "
            f"{counts['roles_to_change']} to change, {counts['members_to_remove']} to remove."
            + _standards_counts(counts),
        ]
    if blocked:
        lines += [
            "",
            f"Blocked ({len(blocked)}): nothing is planned for these teams until a person settles them:",
        ]
        lines += [f"  !! {f.kind.value}  {_subject(f)}: {f.detail}" for f in blocked]
    if plan.changes:
        lines.append("")
        lines += ["  " + line for change in plan.changes for line in describe_lines(change)]
    others = [f for f in plan.findings if not f.blocking]
    if others:
        lines += ["", f"Findings ({len(others)}), not changed by this plan:"]
        lines += [f"  ! {f.kind.value}  {_subject(f)}: {f.detail}" for f in others]
    return "\n".join(lines)


def _subject(finding: Finding) -> str:
    return " ".join(x for x in (finding.team, finding.subject, finding.email) if x)


def describe_change(change: Change) -> str:
    """One line naming the PagerDuty team written to, e.g. `+ payments (Payments, PABC123): alice@example.com
    as responder`; a team the plan creates has no id yet, and says so. An attribute change names its object
    and each field, `before → after`."""
    header, *fields = describe_lines(change)
    return f"{header}  {'; '.join(line.strip() for line in fields)}" if fields else header


def describe_lines(change: Change) -> list[str]:
    """The change as terraform shows a resource: a line naming it, then one line per attribute it sets."""
    symbol = change.kind.symbol
    target = f"{change.team} ({change.team_name}, {change.team_id or 'no id yet'})"
    match change.kind:
        case ChangeKind.CREATE_TEAM:
            return [f"{symbol} {target}: create the team"]
        case ChangeKind.ADD_MEMBER:
            return [f"{symbol} {target}: {change.email} as {change.role}"]
        case ChangeKind.SET_ROLE:
            return [f"{symbol} {target}: {change.email} {change.from_role} -> {change.role}"]
        case ChangeKind.REMOVE_MEMBER:
            return [f"{symbol} {target}: {change.email or change.user_id} (was {change.from_role})"]
    return [
        f"{symbol} {object_label(change)}, team {target}",
        *("    " + field_line(f) for f in change.fields),
    ]


def object_label(change: Change) -> str:
    """`service "Payment API" (PSVC123)`, `escalation_policy "Payments (critical)" (new)`."""
    noun = (
        "service"
        if change.kind in (ChangeKind.SET_SERVICE_POLICY, ChangeKind.UPDATE_SERVICE)
        else ("escalation_policy")
    )
    return f'{noun} "{change.target_name}" ({change.target_id or "new"})'


def field_line(field: FieldChange) -> str:
    """`acknowledgement_timeout: 1800 → 600`; a field the change creates shows its value alone."""
    after = show_value(field.name, field.after)
    if field.before is None and field.name in ("num_loops", "escalation_rules"):
        return f"{field.name}: {after}"
    return f"{field.name}: {show_value(field.name, field.before)} → {after}"


def show_value(name: str, value: object) -> str:
    """A field's value as a reader takes it in: rules as `[5 min: schedule PS1]`, urgency by its word."""
    if value is None:
        return "off" if name.endswith("_timeout") else "none"
    if name == "escalation_rules" and isinstance(value, list):
        return " ".join(_show_rule(rule) for rule in value if isinstance(rule, dict))
    if name == "incident_urgency_rule" and isinstance(value, dict):
        if value.get("type") == "constant":
            return str(value.get("urgency"))
        inside, outside = value.get("during_support_hours"), value.get("outside_support_hours")
        return f"support hours ({inside} inside, {outside} outside)"
    if name == "escalation_policy" and isinstance(value, dict):
        named = value.get("name")
        return f'"{named}" ({value.get("id") or "new"})' if named else str(value.get("id"))
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _show_rule(rule: dict[str, object]) -> str:
    targets = rule.get("targets") if isinstance(rule.get("targets"), list) else []
    names = ", ".join(
        f"{str(t.get('type', '')).removesuffix('_reference')} {t.get('id')}"
        for t in targets  # type: ignore[union-attr]
        if isinstance(t, dict)
    )
    return f"[{rule.get('escalation_delay_in_minutes')} min: {names}]"


def markdown_cell(text: str) -> str:
    """Text for a cell of a markdown table: a `|` or a newline would end the cell or the row."""
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_text(text: str) -> str:
    """A name or an email as itself in markdown: `_` in `first_last@example.com` would make italics."""
    for special in ("\\", "`", "*", "_", "[", "]", "<", ">"):
        text = text.replace(special, "\\" + special)
    return markdown_cell(text)


_CHANGE_WORDS = {
    ChangeKind.CREATE_TEAM: "create team",
    ChangeKind.ADD_MEMBER: "add",
    ChangeKind.SET_ROLE: "set role",
    ChangeKind.REMOVE_MEMBER: "remove",
    ChangeKind.CREATE_ESCALATION_POLICY: "create policy",
    ChangeKind.UPDATE_ESCALATION_POLICY: "update policy",
    ChangeKind.SET_SERVICE_POLICY: "re-point service",
    ChangeKind.UPDATE_SERVICE: "update service",
}


def _change_row(change: Change) -> str:
    """Four short cells that wrap at spaces, so the row fits a narrow column: id, change, team, member."""
    team_id = f"`{change.team_id}`" if change.team_id else "no id yet"
    team = f"{_markdown_text(change.team)} ({_markdown_text(change.team_name)}, {team_id})"
    who = _markdown_text(change.email or change.user_id or "")
    match change.kind:
        case ChangeKind.CREATE_TEAM:
            member = ""
        case ChangeKind.ADD_MEMBER:
            member = f"{who} as {change.role}"
        case ChangeKind.SET_ROLE:
            member = f"{who}: {change.from_role} → {change.role}"
        case ChangeKind.REMOVE_MEMBER:
            member = f"{who} (was {change.from_role})"
        case _:  # an attribute change: its object, then each field
            fields = "; ".join(_markdown_text(field_line(f)) for f in change.fields)
            member = f"{_markdown_text(object_label(change))}: {fields}"
    cells = [f"`{change.id}`", f"`{change.kind.symbol}` {_CHANGE_WORDS[change.kind]}", team, member]
    return "| " + " | ".join(cells) + " |"


def _last_column(plan: Plan) -> str:
    if all(c.resource == TEAM_MEMBERSHIP for c in plan.changes):
        return "member"
    return "member, or object and fields"


def _standards_counts(counts: Mapping[str, int]) -> str:
    """The headline's tail for services and policies: empty when the plan has none."""
    parts = [
        (counts["policies_to_create"], "policies to create"),
        (counts["policies_to_update"], "to update"),
        (counts["services_to_repoint"], "services to re-point"),
        (counts["services_to_update"], "to update"),
    ]
    if not any(n for n, _ in parts):
        return ""
    return " Standards: " + ", ".join(f"{n} {words}" for n, words in parts) + "."


def _finding_item(finding: Finding, mark: str) -> str:
    subject = _markdown_text(_subject(finding))
    return f"- `{mark}` {finding.kind.value} {subject}: {_markdown_text(finding.detail)}"


def render_plan_markdown(plan: Plan, *, approval: str = "", limit: int = 200) -> str:
    """The plan for the Dagster UI, laid out to wrap at any width: a table of the changes, one row each
    with its change id, the PagerDuty team written to and the member; blocked teams before it and other
    findings after, as lists; then `approval` (markdown: how to approve it). At most `limit` changes and
    `limit` findings."""
    counts = plan_summary(plan)
    blocked = plan.blocking_findings
    if plan.changes:
        headline = (
            f"Plan `{plan.id}`: {counts['teams_to_create']} to create, {counts['members_to_add']} to add, "
            f"{counts['roles_to_change']} to change, {counts['members_to_remove']} to remove."
            + _standards_counts(counts)
        )
    else:
        outcome = (
            f"{len(blocked)} team(s) blocked (below)" if blocked else "PagerDuty matches the desired state"
        )
        headline = f"Plan `{plan.id}`: no changes.\n\n{outcome}."
    lines = [headline]
    if blocked:
        lines += [
            "",
            f"**Blocked ({len(blocked)})**: nothing is planned for these teams until a person settles them:",
            "",
        ]
        lines += [_finding_item(f, "!!") for f in blocked[:limit]]
    if plan.changes:
        lines += [
            "",
            f"| change id | change | team (PagerDuty team, id) | {_last_column(plan)} |",
            "| --- | --- | --- | --- |",
        ]
        lines += [_change_row(change) for change in plan.changes[:limit]]
    others = [f for f in plan.findings if not f.blocking]
    if others:
        lines += ["", f"**Findings ({len(others)})**, not changed by this plan:", ""]
        lines += [_finding_item(f, "!") for f in others[:limit]]
    if len(plan.changes) > limit or len(plan.findings) > limit:
        lines += [
            "",
            f"... {len(plan.changes)} changes and {len(plan.findings)} findings in all: "
            "`nthlayer plan --json` lists every one",
        ]
    if approval:
        lines += ["", "**Approve**", "", approval]
    return "\n".join(lines)


# `nthlayer plan --json`'s version: 2 added the envelope's fields (provider, resource, action, subject,
# risk, target_id, target_name, fields) and findings' `subject`; every field of version 1 is still there.
# schemas/plan.schema.json describes it and a test holds every output to it.
PLAN_JSON_SCHEMA_VERSION = 2


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The stable machine contract of `nthlayer plan --json` (documented in the README)."""
    return {
        "schema_version": PLAN_JSON_SCHEMA_VERSION,
        "plan_id": plan.id,
        "changes": [
            {
                "id": c.id,
                "kind": c.kind.value,
                "team": c.team,
                "team_name": c.team_name,
                "team_id": c.team_id,
                "email": c.email,
                "role": c.role.value if c.role else None,
                "from_role": c.from_role.value if c.from_role else None,
                "provider": c.provider,
                "resource": c.resource,
                "action": c.action.value,
                "subject": c.subject,
                "risk": c.risk.value,
                "target_id": c.target_id,
                "target_name": c.target_name,
                "fields": [f.model_dump(mode="json") for f in c.fields],
            }
            for c in plan.changes
        ],
        "findings": [
            {
                "kind": f.kind.value,
                "team": f.team,
                "email": f.email,
                "subject": f.subject,
                "detail": f.detail,
                "blocking": f.blocking,
            }
            for f in plan.findings
        ],
    }


def plan_to_json_text(plan: Plan, *, blocked: Mapping[str, Any] | None = None) -> str:
    """The JSON contract; `blocked` (the failed checks and their reasons) only when a check of it failed."""
    payload = plan_to_json(plan)
    if blocked is not None:
        payload["blocked"] = dict(blocked)
    return json.dumps(payload, indent=2)
