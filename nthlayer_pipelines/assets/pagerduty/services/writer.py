"""Carry out the standards' changes: re-read the policy or the service, decide field by field, write
only the fields still to write, verify.

A managed policy is looked for by name before it is created, and again when the answer to the create is
lost; a service pointed at a policy this plan creates finds it by name. PagerDuty's own refusals of a
write (400, code 2001: "timeout cannot be null", "Escalation Policy has already been taken") are blocked
for a person with PagerDuty's words; they would fail the same way on every retry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from nthlayer_pipelines.assets.pagerduty.services.compare import (
    observed_rules,
    policy_name,
    urgency_rule_json,
    wanted_service_fields,
)
from nthlayer_pipelines.core.fields import decide_fields, fields_converged
from nthlayer_pipelines.core.kind import STATUS_FOR_ACTION, Action, ApplyRow, RunLog, team_lane
from nthlayer_pipelines.core.model import (
    SERVICE_STANDARD,
    Change,
    ChangeKind,
    ChangeStatus,
    DesiredState,
    FieldChange,
    Service,
    Team,
    Tier,
    team_name_key,
)
from nthlayer_pipelines.core.safety import BlastRadiusLimits, repoint_reasons
from nthlayer_pipelines.resources.pagerduty.client import (
    PagerDutyClient,
    PagerDutyError,
    WriteOutcomeUnknownError,
)
from nthlayer_pipelines.resources.pagerduty.models import (
    EscalationRuleSpec,
    PagerDutyEscalationPolicy,
    PagerDutyService,
    PagerDutyUrgencyRule,
)

logger = logging.getLogger("nthlayer_pipelines.apply")

INVALID_INPUT = 2001  # PagerDuty's code for a write it refuses as given


def comparable(name: str, value: JsonValue) -> JsonValue:
    """A service's policy is the same whatever else is said of it: judged by its id."""
    if name == "escalation_policy" and isinstance(value, dict):
        return value.get("id")
    return value


def policy_values(policy: PagerDutyEscalationPolicy) -> dict[str, JsonValue]:
    return {"num_loops": policy.num_loops, "escalation_rules": observed_rules(policy)}  # type: ignore[dict-item]


def service_values(service: PagerDutyService) -> dict[str, JsonValue]:
    return {
        "escalation_policy": {"id": service.escalation_policy_id},
        "incident_urgency_rule": urgency_rule_json(service.urgency_rule),  # type: ignore[dict-item]
        "acknowledgement_timeout": service.acknowledgement_timeout,
        "auto_resolve_timeout": service.auto_resolve_timeout,
    }


def rule_specs(rules: JsonValue) -> list[EscalationRuleSpec]:
    return [EscalationRuleSpec.model_validate(rule) for rule in rules or []]  # type: ignore[union-attr]


@dataclass
class StandardsWriter:
    """The standards' changes for one apply: which policies it found or made, which objects it wrote."""

    client: PagerDutyClient
    log: RunLog = logger
    resource: str = SERVICE_STANDARD
    touched: set[str] = field(default_factory=set)
    _policy_ids: dict[str, str] = field(default_factory=dict)  # managed policy name key -> id

    def lane(self, change: Change) -> str:
        # A service's change is its team's (its policy is named for the team): with the team's members.
        return team_lane(change)

    def unwanted(self, change: Change, desired: DesiredState) -> str | None:
        return unwanted_reason(change, desired)

    def live_blast_radius(self, changes: Sequence[Change], limits: BlastRadiusLimits) -> tuple[str, ...]:
        return tuple(repoint_reasons(changes, limits))

    def carry_out(self, change: Change) -> ApplyRow:
        try:
            if change.kind is ChangeKind.CREATE_ESCALATION_POLICY:
                return self._create_policy(change)
            if change.kind is ChangeKind.UPDATE_ESCALATION_POLICY:
                return self._update_policy(change)
            return self._update_service(change)
        except PagerDutyError as error:
            if error.status == 400 and error.code == INVALID_INPUT:
                reason = "; ".join([error.message, *error.errors])
                return ApplyRow(
                    change, ChangeStatus.BLOCKED, f"PagerDuty refuses it: {reason}", None, change.target_id
                )
            return ApplyRow(change, ChangeStatus.FAILED, "", str(error), change.target_id)

    def _create_policy(self, change: Change) -> ApplyRow:
        name = change.target_name or ""
        existing = self._find_policy(name)
        if len(existing) > 1:
            ids = ", ".join(p.id for p in existing)
            return ApplyRow(
                change, ChangeStatus.STALE, f"{len(existing)} policies are now named {name!r} ({ids})"
            )
        if existing:
            return ApplyRow(
                change,
                ChangeStatus.SKIPPED,
                f"policy {name!r} already exists ({existing[0].id})",
                None,
                existing[0].id,
            )
        loops, rules = change.field("num_loops"), change.field("escalation_rules")
        try:
            created = self.client.create_escalation_policy(
                name,
                team_id=change.team_id,
                num_loops=int(loops.after) if loops and isinstance(loops.after, int) else 0,
                rules=rule_specs(rules.after if rules else []),
            )
            detail = f"created {created.id}"
        except WriteOutcomeUnknownError as error:
            found = self._find_policy(name)
            if len(found) != 1:
                detail = (
                    "no answer to the create and no single policy of that name yet; the next refresh tells"
                )
                return ApplyRow(change, ChangeStatus.FAILED, detail, str(error))
            created, detail = found[0], f"created {found[0].id} (the answer was lost; found by name)"
        self._policy_ids[team_name_key(name)] = created.id
        self.touched.add(created.id)
        return ApplyRow(change, ChangeStatus.APPLIED, detail, None, created.id)

    def _find_policy(self, name: str) -> list[PagerDutyEscalationPolicy]:
        found = self.client.find_escalation_policies_by_name(name)
        if len(found) == 1:
            self._policy_ids[team_name_key(name)] = found[0].id
        return found

    def _update_policy(self, change: Change) -> ApplyRow:
        assert change.target_id is not None  # an update names the policy it found
        policy = self.client.get_escalation_policy(change.target_id)
        if policy is None:
            return ApplyRow(change, ChangeStatus.STALE, f"policy {change.target_id} no longer exists")
        current = policy_values(policy)
        verdict = decide_fields(change, current)
        if verdict.decision.action is not Action.WRITE:
            return ApplyRow(
                change, STATUS_FOR_ACTION[verdict.decision.action], verdict.decision.detail, None, policy.id
            )
        values = {**current, **{f.name: f.after for f in verdict.to_write}}
        loops = values["num_loops"]
        self.client.update_escalation_policy(
            policy.id,
            num_loops=loops if isinstance(loops, int) else 0,
            rules=rule_specs(values["escalation_rules"]),
            name=policy.name,  # as just read: no second read, and a rename since is not undone
        )
        self.touched.add(policy.id)
        return ApplyRow(change, ChangeStatus.APPLIED, verdict.decision.detail, None, policy.id)

    def _update_service(self, change: Change) -> ApplyRow:
        assert change.target_id is not None  # a service change names the service it found
        service = self.client.get_service(change.target_id)
        if service is None:
            return ApplyRow(change, ChangeStatus.STALE, f"service {change.target_id} no longer exists")
        resolved = self._resolved(change)
        if resolved is None:
            policy = change.field("escalation_policy")
            name = policy.after.get("name") if policy and isinstance(policy.after, dict) else "?"
            detail = f"policy {name!r} does not exist yet: its creation has not been applied"
            return ApplyRow(change, ChangeStatus.FAILED, detail, None, service.id)
        verdict = decide_fields(resolved, service_values(service), comparable)
        if verdict.decision.action is not Action.WRITE:
            return ApplyRow(
                change, STATUS_FOR_ACTION[verdict.decision.action], verdict.decision.detail, None, service.id
            )
        self.client.update_service(service.id, **_service_arguments(verdict.to_write))
        self.touched.add(service.id)
        return ApplyRow(resolved, ChangeStatus.APPLIED, verdict.decision.detail, None, service.id)

    def _resolved(self, change: Change) -> Change | None:
        """The change with the id of a policy this plan created by name filled in; None while none is."""
        policy = change.field("escalation_policy")
        if policy is None or not isinstance(policy.after, dict) or policy.after.get("id"):
            return change
        name = str(policy.after.get("name") or "")
        policy_id = self._policy_ids.get(team_name_key(name))
        if policy_id is None:
            found = self._find_policy(name)
            if len(found) != 1:
                return None
            policy_id = found[0].id
        after = {**policy.after, "id": policy_id}
        fields = tuple(f.model_copy(update={"after": after}) if f is policy else f for f in change.fields)
        return change.model_copy(update={"fields": fields})

    def start_verifying(self) -> None:
        return None

    def holds(self, row: ApplyRow) -> tuple[bool, str]:
        assert row.team_id is not None  # every applied row knows what it wrote
        try:
            if row.change.kind is ChangeKind.CREATE_ESCALATION_POLICY:
                found = self.client.get_escalation_policy(row.team_id)
                return found is not None, "the policy is not there"
            if row.change.kind is ChangeKind.UPDATE_ESCALATION_POLICY:
                policy = self.client.get_escalation_policy(row.team_id)
                current = policy_values(policy) if policy else {}
                return policy is not None and fields_converged(row.change, current), f"found {current}"
            service = self.client.get_service(row.team_id)
            values = service_values(service) if service else {}
            return service is not None and fields_converged(row.change, values, comparable), f"found {values}"
        except PagerDutyError as error:
            return False, f"could not be read: {error}"


def _service_arguments(fields: Sequence[FieldChange]) -> dict[str, object]:
    """`update_service`'s arguments for the fields to write, and no others."""
    arguments: dict[str, object] = {}
    for field_change in fields:
        name, after = field_change.name, field_change.after
        if name == "escalation_policy" and isinstance(after, dict):
            arguments["escalation_policy_id"] = after["id"]
        elif name == "incident_urgency_rule":
            arguments["urgency_rule"] = PagerDutyUrgencyRule.model_validate(after)
        else:
            arguments[name] = after
    return arguments


def unwanted_reason(change: Change, desired: DesiredState) -> str | None:
    """Why the definitions as they stand now no longer want `change`; None while they still do. The
    change must still follow from a declared service (or team) and its tier's standard as it stands."""
    team = desired.team(change.team)
    if team is None:
        return f"no definition declares team {change.team!r} any more"
    if change.kind in (ChangeKind.CREATE_ESCALATION_POLICY, ChangeKind.UPDATE_ESCALATION_POLICY):
        return _policy_unwanted(change, desired, team)
    service = _declared_service(change, desired)
    if service is None:
        return f"no definition declares service {change.target_name!r} in {change.team!r} any more"
    standard = desired.standard(service.tier)
    if standard is None:
        return f"no Standard sets tier {service.tier.value} any more"
    if change.kind is ChangeKind.SET_SERVICE_POLICY:
        policy = change.field("escalation_policy")
        wanted = policy_name(team, service.tier)
        named = policy.after.get("name") if policy and isinstance(policy.after, dict) else None
        if named is None or team_name_key(str(named)) != team_name_key(wanted):
            return f"{service.name} is now to page through {wanted!r}"
        return None
    wanted_fields = wanted_service_fields(standard)
    for f in change.fields:
        if wanted_fields.get(f.name) != f.after:
            return f"the {service.tier.value} standard now wants {f.name} {wanted_fields.get(f.name)!r}"
    return None


def _policy_unwanted(change: Change, desired: DesiredState, team: Team) -> str | None:
    tier = next(
        (t for t in Tier if team_name_key(policy_name(team, t)) == team_name_key(change.target_name or "")),
        None,
    )
    standard = desired.standard(tier) if tier else None
    if tier is None or standard is None:
        return f"{change.target_name!r} is no longer a managed policy of {change.team!r}"
    if not any(s.team == team.name and s.tier is tier for s in desired.services):
        return f"no declared service of {change.team!r} is tier {tier.value} any more"
    loops = change.field("num_loops")
    if loops is not None and loops.after != standard.loops:
        return f"the {tier.value} standard now loops {standard.loops} times"
    rules = change.field("escalation_rules")
    if rules is not None and isinstance(rules.after, list):
        delays = [r.get("escalation_delay_in_minutes") for r in rules.after if isinstance(r, dict)]
        if delays != [r.escalate_after_minutes for r in standard.rules]:
            return f"the {tier.value} standard's rules changed since the plan was made"
    return None


def _declared_service(change: Change, desired: DesiredState) -> Service | None:
    for service in desired.services:
        if service.team != change.team:
            continue
        if service.pagerduty_service_id is not None:
            if service.pagerduty_service_id == change.target_id:
                return service
        elif team_name_key(service.display_name) == team_name_key(change.target_name or ""):
            return service
    return None
