"""What the tiers' standards want of PagerDuty's services and escalation policies, and how PagerDuty
differs: pure, no I/O.

Each declared service is found in PagerDuty by its pin, else by its name (the one service carrying it:
several is a finding, never a guess). Each team gets one managed escalation policy per tier, named from
`POLICY_NAME` and owned by the team, whose rules are the standard's with the targets resolved: `schedule:
primary` to the schedule the team declares as primary, `teamRole: manager` to the team's declared managers
as PagerDuty users. Rules compare in order, each rule's targets as a set (PagerDuty returns them in its own
order). Services, policies and schedules are never deleted and never created, except the managed policy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from nthlayer_pipelines.core.model import (
    Change,
    ChangeKind,
    DesiredState,
    FieldChange,
    Finding,
    FindingKind,
    Service,
    Standard,
    Team,
    Tier,
    team_name_key,
)
from nthlayer_pipelines.resources.pagerduty.models import (
    ObservedServices,
    PagerDutyEscalationPolicy,
    PagerDutySchedule,
    PagerDutyService,
    PagerDutyUrgencyRule,
)

PROVIDER = "pagerduty"
POLICY_NAME = "{team} ({tier})"  # the managed policy of a team's display name and a tier

Json = dict[str, object]


@dataclass(frozen=True)
class TeamContext:
    """What the membership side knows of a declared team: its PagerDuty team, and its users by email."""

    team_id: str | None  # None: not in PagerDuty yet, a pin PagerDuty lacks, or several candidates
    team_name: str  # the PagerDuty team's name, or the display name it will be created with
    user_ids: Mapping[str, str] = field(default_factory=dict)  # email -> PagerDuty user id


@dataclass
class StandardsComparison:
    changes: list[Change] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def policy_name(team: Team, tier: Tier) -> str:
    return POLICY_NAME.format(team=team.display_name, tier=tier.value)


def urgency_rule_json(rule: PagerDutyUrgencyRule | None) -> Json | None:
    if rule is None:
        return None
    return rule.model_dump(exclude_none=True)


def rules_json(rules: Sequence[tuple[int, Sequence[tuple[str, str]]]]) -> list[Json]:
    """Rules as the change carries them: each rule's delay and its targets sorted by type and id, so two
    readings of the same policy compare equal whatever order PagerDuty listed the targets in."""
    return [
        {
            "escalation_delay_in_minutes": delay,
            "targets": [{"id": i, "type": t} for t, i in sorted(set((t, i) for i, t in targets))],
        }
        for delay, targets in rules
    ]


def observed_rules(policy: PagerDutyEscalationPolicy) -> list[Json]:
    return rules_json(
        [(r.escalation_delay_in_minutes, [(t.id, t.type) for t in r.targets]) for r in policy.rules]
    )


def compare_standards(
    desired: DesiredState, observed: ObservedServices, teams: Mapping[str, TeamContext]
) -> StandardsComparison:
    """The changes that bring PagerDuty's services and their teams' managed policies to their tiers'
    standards, and the findings a person should read. Nothing at all when no service is declared."""
    result = StandardsComparison()
    if not desired.services:
        return result
    claimed, named = _resolve_services(desired, observed, result)
    team_ids = {c.team_id for c in teams.values() if c.team_id}
    _unmanaged(observed, team_ids, named, result)
    by_name = _by_name(observed.policies)
    names = {p.id: p.name for p in observed.policies}
    policies: dict[tuple[str, Tier], tuple[str | None, str] | None] = {}  # -> (policy id, name) or None
    for service in sorted(desired.services, key=lambda s: (s.team, s.name)):
        team = desired.team(service.team)
        found = claimed.get(service.name)
        if team is None or found is None:
            continue
        standard = desired.standard(service.tier)
        if standard is None:
            result.findings.append(
                _finding(
                    FindingKind.NO_STANDARD,
                    service,
                    f"{service.name} is tier {service.tier.value}, and no Standard sets that tier: "
                    "nothing about it is checked",
                )
            )
            continue
        context = teams.get(team.name, TeamContext(None, team.display_name))
        key = (team.name, service.tier)
        if key not in policies:
            policies[key] = _plan_policy(team, standard, context, observed, by_name, result)
        current = names.get(found.escalation_policy_id)
        _plan_service(service, found, current, standard, context, policies[key], result)
    _unused_policies(desired, observed, by_name, result)
    return result


def _resolve_services(
    desired: DesiredState, observed: ObservedServices, result: StandardsComparison
) -> tuple[dict[str, PagerDutyService], set[str]]:
    """Declared service name -> its PagerDuty service; what cannot be found for sure is a finding. Also
    the ids of every PagerDuty service a definition reaches, found or among an ambiguity's candidates."""
    by_id = {s.id: s for s in observed.services}
    by_name = _by_name(observed.services)
    found: dict[str, PagerDutyService] = {}
    claims: dict[str, list[str]] = defaultdict(list)  # service id -> the definitions that reach it
    named: set[str] = set()
    for service in desired.services:
        pin = service.pagerduty_service_id
        if pin is not None:
            match = by_id.get(pin)
            if match is None:
                result.findings.append(
                    _finding(
                        FindingKind.MISSING_SERVICE,
                        service,
                        f"{service.name} is pinned to PagerDuty service {pin}, which PagerDuty does not have",
                    )
                )
                continue
            if team_name_key(match.name) != team_name_key(service.display_name):
                result.findings.append(
                    _finding(
                        FindingKind.PINNED_SERVICE_NAME_MISMATCH,
                        service,
                        f"{service.name} is pinned to {match.name!r} ({pin}), whose name is not "
                        f"{service.display_name!r}: planned by its pin",
                    )
                )
        else:
            matches = by_name.get(team_name_key(service.display_name), [])
            if not matches:
                result.findings.append(
                    _finding(
                        FindingKind.MISSING_SERVICE,
                        service,
                        f"no PagerDuty service is named {service.display_name!r}: create it in PagerDuty "
                        "(services are never created here), or pin it by id",
                    )
                )
                continue
            if len(matches) > 1:
                named.update(m.id for m in matches)
                candidates = ", ".join(f"{m.name!r} ({m.id})" for m in matches)
                result.findings.append(
                    _finding(
                        FindingKind.AMBIGUOUS_SERVICE,
                        service,
                        f"{len(matches)} PagerDuty services carry the name {service.display_name!r}: "
                        f"{candidates}; "
                        "nothing is planned for it until it is pinned by id (spec.pagerduty.serviceId)",
                    )
                )
                continue
            match = matches[0]
        found[service.name] = match
        claims[match.id].append(service.name)
        named.add(match.id)
    for service_id, names in claims.items():
        if len(names) > 1:
            for name in names:
                del found[name]
            result.findings.append(
                Finding(
                    kind=FindingKind.AMBIGUOUS_SERVICE,
                    subject=service_id,
                    detail=f"definitions {', '.join(sorted(names))} all resolve to PagerDuty service "
                    f"{service_id}: nothing is planned for it until one of them claims it",
                )
            )
    return found, named


def _unmanaged(
    observed: ObservedServices, team_ids: set[str], claimed: set[str], result: StandardsComparison
) -> None:
    """Services of a declared team (theirs by PagerDuty's account of it, or by their policy's team) that
    no definition claims. Services of teams nobody declares are not this repository's business."""
    team_policies = {p.id for p in observed.policies if set(p.team_ids) & team_ids}
    for service in observed.services:
        if service.id in claimed:
            continue
        if set(service.team_ids) & team_ids or service.escalation_policy_id in team_policies:
            result.findings.append(
                Finding(
                    kind=FindingKind.UNMANAGED_SERVICE,
                    subject=service.name,
                    detail=f"PagerDuty service {service.name!r} ({service.id}) belongs to a declared team, "
                    "and no Service definition claims it",
                )
            )


def _plan_policy(
    team: Team,
    standard: Standard,
    context: TeamContext,
    observed: ObservedServices,
    by_name: Mapping[str, list[PagerDutyEscalationPolicy]],
    result: StandardsComparison,
) -> tuple[str | None, str] | None:
    """Plan the team's managed policy for the standard's tier: (its id or None while it is created, its
    name), or None when it cannot be planned (a finding says why)."""
    name = policy_name(team, standard.tier)
    if context.team_id is None:
        result.findings.append(
            _unmet(
                team,
                name,
                f"team {team.name!r} has no PagerDuty team yet (or it is not settled which one): its "
                f"{standard.tier.value} policy is planned once it has",
            )
        )
        return None
    rules = _wanted_rules(team, standard, context, observed, result)
    if rules is None:
        return None
    existing = by_name.get(team_name_key(name), [])
    if len(existing) > 1:
        named = ", ".join(p.id for p in existing)
        result.findings.append(
            _unmet(
                team,
                name,
                f"{len(existing)} escalation policies are named {name!r} ({named}): rename all but one",
            )
        )
        return None
    wanted_loops = standard.loops
    if not existing:
        result.changes.append(
            Change.of_fields(
                PROVIDER,
                ChangeKind.CREATE_ESCALATION_POLICY,
                team=team.name,
                team_name=context.team_name,
                team_id=context.team_id,
                target_id=None,
                target_name=name,
                fields=(
                    FieldChange(name="num_loops", after=wanted_loops),
                    FieldChange(name="escalation_rules", after=rules),
                ),
            )
        )
        return None, name
    policy = existing[0]
    if policy.team_ids and context.team_id not in policy.team_ids:
        result.findings.append(
            _unmet(
                team,
                name,
                f"escalation policy {name!r} ({policy.id}) belongs to another team "
                f"({', '.join(policy.team_ids)}): rename it, or give it to {context.team_name!r}",
            )
        )
        return None
    differing = []
    if policy.num_loops != wanted_loops:
        differing.append(FieldChange(name="num_loops", before=policy.num_loops, after=wanted_loops))
    found_rules = observed_rules(policy)
    if found_rules != rules:
        differing.append(FieldChange(name="escalation_rules", before=found_rules, after=rules))
    if differing:
        result.changes.append(
            Change.of_fields(
                PROVIDER,
                ChangeKind.UPDATE_ESCALATION_POLICY,
                team=team.name,
                team_name=context.team_name,
                team_id=context.team_id,
                target_id=policy.id,
                target_name=policy.name,
                fields=tuple(differing),
            )
        )
    return policy.id, policy.name


def _wanted_rules(
    team: Team,
    standard: Standard,
    context: TeamContext,
    observed: ObservedServices,
    result: StandardsComparison,
) -> list[Json] | None:
    """The standard's rules with the team's targets resolved; None (with findings) when one cannot be."""
    schedules_by_id = {s.id: s for s in observed.schedules}
    schedules_by_name = _by_name(observed.schedules)
    rules: list[tuple[int, list[tuple[str, str]]]] = []
    met = True
    for number, rule in enumerate(standard.rules, start=1):
        targets: list[tuple[str, str]] = []
        for target in rule.targets:
            where = f"the {standard.tier.value} standard's rule {number}"
            if target.schedule is not None:
                schedule_id = _schedule_id(
                    team, target.schedule, where, schedules_by_id, schedules_by_name, result
                )
                if schedule_id is None:
                    met = False
                else:
                    targets.append((schedule_id, "schedule_reference"))
            elif target.team_role is not None:
                emails = sorted(m.email for m in team.members if m.role is target.team_role)
                users = [context.user_ids[e] for e in emails if e in context.user_ids]
                if not users:
                    met = False
                    result.findings.append(
                        _unmet(
                            team,
                            policy_name(team, standard.tier),
                            f"{where} targets the {target.team_role.value}s of {team.name!r}, which "
                            f"declares none with a PagerDuty account",
                        )
                    )
                targets += [(user_id, "user_reference") for user_id in users]
        rules.append((rule.escalate_after_minutes, targets))
    return rules_json(rules) if met else None


def _schedule_id(
    team: Team,
    key: str,
    where: str,
    by_id: Mapping[str, PagerDutySchedule],
    by_name: Mapping[str, list[PagerDutySchedule]],
    result: StandardsComparison,
) -> str | None:
    declared = team.schedule(key)
    if declared is None:
        result.findings.append(
            _unmet(
                team,
                key,
                f"{where} targets the {key!r} schedule, which team {team.name!r} does not declare "
                "(spec.pagerduty.schedules)",
            )
        )
        return None
    if declared.ref in by_id:
        return declared.ref
    matches = by_name.get(team_name_key(declared.ref), [])
    if len(matches) == 1:
        return matches[0].id
    why = (
        "PagerDuty has no schedule of that id or name"
        if not matches
        else f"{len(matches)} schedules carry that name ({', '.join(m.id for m in matches)}): pin one by id"
    )
    result.findings.append(
        Finding(
            kind=FindingKind.MISSING_SCHEDULE,
            team=team.name,
            subject=declared.ref,
            detail=f"team {team.name!r} declares {declared.ref!r} as its {key} schedule: {why}",
        )
    )
    return None


def wanted_service_fields(standard: Standard) -> dict[str, object]:
    """The service attributes the standard sets, as PagerDuty's API writes them (timeouts in seconds,
    None for off)."""
    wanted = standard.service
    return {
        "incident_urgency_rule": {"type": "constant", "urgency": wanted.urgency.value},
        "acknowledgement_timeout": _seconds(wanted.acknowledgement_timeout_minutes),
        "auto_resolve_timeout": _seconds(wanted.auto_resolve_timeout_minutes),
    }


def _plan_service(
    service: Service,
    found: PagerDutyService,
    current_policy: str | None,
    standard: Standard,
    context: TeamContext,
    policy: tuple[str | None, str] | None,
    result: StandardsComparison,
) -> None:
    """Point the service at its managed policy, and set its urgency rule and timeouts."""
    if policy is not None and found.escalation_policy_id != policy[0]:
        result.changes.append(
            _service_change(
                ChangeKind.SET_SERVICE_POLICY,
                service,
                found,
                context,
                (
                    FieldChange(
                        name="escalation_policy",
                        before={"id": found.escalation_policy_id, "name": current_policy},
                        after={"id": policy[0], "name": policy[1]},
                    ),
                ),
            )
        )
    wanted_fields = wanted_service_fields(standard)
    found_fields: dict[str, object] = {
        "incident_urgency_rule": urgency_rule_json(found.urgency_rule),
        "acknowledgement_timeout": found.acknowledgement_timeout,
        "auto_resolve_timeout": found.auto_resolve_timeout,
    }
    differing = tuple(
        FieldChange(name=name, before=found_fields[name], after=after)  # type: ignore[arg-type]
        for name, after in wanted_fields.items()
        if found_fields[name] != after
    )
    if differing:
        result.changes.append(_service_change(ChangeKind.UPDATE_SERVICE, service, found, context, differing))


def _service_change(
    kind: ChangeKind,
    service: Service,
    found: PagerDutyService,
    context: TeamContext,
    fields: tuple[FieldChange, ...],
) -> Change:
    return Change.of_fields(
        PROVIDER,
        kind,
        team=service.team,
        team_name=context.team_name,
        team_id=context.team_id,
        target_id=found.id,
        target_name=found.name,
        fields=fields,
    )


def _unused_policies(
    desired: DesiredState,
    observed: ObservedServices,
    by_name: Mapping[str, list[PagerDutyEscalationPolicy]],
    result: StandardsComparison,
) -> None:
    """A team's managed policy for a tier none of its declared services has, used by no service: said,
    never deleted."""
    in_use = {(s.team, s.tier) for s in desired.services}
    for team in desired.teams:
        for standard in desired.standards:
            if (team.name, standard.tier) in in_use:
                continue
            for policy in by_name.get(team_name_key(policy_name(team, standard.tier)), []):
                if not policy.service_ids:
                    result.findings.append(
                        Finding(
                            kind=FindingKind.UNUSED_MANAGED_POLICY,
                            team=team.name,
                            subject=policy.name,
                            detail=f"escalation policy {policy.name!r} ({policy.id}) is managed for "
                            f"{team.name!r} and no service uses it: delete it in PagerDuty if it is not "
                            "wanted (policies are never deleted here)",
                        )
                    )


def _seconds(minutes: int | None) -> int | None:
    return None if minutes is None else minutes * 60


def _unmet(team: Team, subject: str, detail: str) -> Finding:
    """The team's standard cannot be met as declared: nothing is planned for the policy it names."""
    return Finding(kind=FindingKind.STANDARD_UNMET, team=team.name, subject=subject, detail=detail)


def _finding(kind: FindingKind, service: Service, detail: str) -> Finding:
    return Finding(kind=kind, team=service.team, subject=service.name, detail=detail)


_Named = TypeVar("_Named", PagerDutyService, PagerDutyEscalationPolicy, PagerDutySchedule)


def _by_name(items: Sequence[_Named]) -> dict[str, list[_Named]]:
    grouped: dict[str, list[_Named]] = defaultdict(list)
    for item in sorted(items, key=lambda i: i.id):
        grouped[team_name_key(item.name)].append(item)
    return grouped
