"""Desired state from a Git definitions repo: Team, Service and Standard documents in *.yaml / *.yml files.

Every problem in every file is collected before anything is refused, so one run of `nthlayer validate`
shows the whole list. An invalid repo, or one that declares nothing, never yields a desired state:
planning from it could remove real people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nthlayer_pipelines.core.model import (
    DefinitionsError,
    DesiredState,
    Member,
    ScheduleRef,
    Service,
    ServiceStandard,
    Standard,
    StandardRule,
    StandardTarget,
    Team,
    Tier,
    ValidationProblem,
    normalize_email,
    team_name_key,
)

from .git_schema import (
    API_VERSION,
    DOCUMENT_KINDS,
    MAX_RULES,
    MAX_TARGETS,
    ServiceDocument,
    StandardDocument,
    TeamDocument,
    describe,
    did_you_mean,
    validate_document,
)
from .yaml_files import (
    DEFAULT_LIMITS,
    Issue,
    Location,
    ReadLimits,
    YamlDocument,
    find_definition_files,
    format_location,
    read_definition_file,
)

SOURCE = "git"
_KINDS = tuple(DOCUMENT_KINDS)


def load_definitions(path: str | Path, *, limits: ReadLimits = DEFAULT_LIMITS) -> DesiredState:
    """The desired state declared under `path` (a folder, or one file).

    Raises:
        DefinitionsError: with every problem found, ordered by file and position.
    """
    state, problems = read_definitions(path, limits=limits)
    if problems or state is None:
        raise DefinitionsError(problems)
    return state


def validate_definitions(path: str | Path, *, limits: ReadLimits = DEFAULT_LIMITS) -> list[ValidationProblem]:
    """Every problem in the definitions under `path`, ordered by file and position; empty when valid."""
    return read_definitions(path, limits=limits)[1]


@dataclass
class _Declared:
    """A Team, Service or Standard document; its raw data serves the checks that run even when it is
    invalid."""

    document: YamlDocument
    data: dict[str, Any]
    parsed: TeamDocument | ServiceDocument | StandardDocument | None

    def at(self, *location: str | int) -> Location:
        return (*self.document.root, *location)

    def text(self, *keys: str) -> str | None:
        """The string at a key path of the raw document, None when absent or of another type."""
        value: Any = self.data
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, str) else None

    def where(self) -> str:
        if not self.document.root:
            return self.document.file
        return f"{self.document.file} at {format_location(self.document.root)}"

    def issue(self, location: Location, message: str) -> Issue:
        return self.document.issue(location, message)


def read_definitions(
    path: str | Path, *, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[DesiredState | None, list[ValidationProblem]]:
    """The desired state and the problems found; the state is None whenever there is a problem."""
    root = Path(path)
    if not root.exists():
        return None, [ValidationProblem(file=str(path), path="", message="definitions path does not exist")]
    files, issues = find_definition_files(root)
    if not files and not issues:
        message = (
            "no definition files (*.yaml or *.yml) found: an empty definitions folder is refused, "
            "never read as 'no teams'"
        )
        return None, [ValidationProblem(file=str(path), path="", message=message)]

    declared_by_kind: dict[str, list[_Declared]] = {kind: [] for kind in _KINDS}
    for file_path, name in files:
        documents, file_issues = read_definition_file(file_path, name, limits)
        issues.extend(file_issues)
        for document in documents:
            declared = _declare(document, issues)
            if declared is not None:
                declared_by_kind[declared.data["kind"]].append(declared)
    teams, services, standards = (declared_by_kind[kind] for kind in ("Team", "Service", "Standard"))
    issues.extend(_check_teams(teams))
    issues.extend(_check_services(services, teams))
    issues.extend(_check_standards(standards))

    if issues:
        ordered = sorted(
            enumerate(issues), key=lambda pair: (pair[1].file, pair[1].line, pair[1].column, pair[0])
        )
        return None, [issue.to_problem() for _, issue in ordered]
    if not teams:
        message = (
            "no Team definitions found: a repo that declares no team is refused, never read as 'no teams'"
        )
        return None, [ValidationProblem(file=str(path), path="", message=message)]
    return _desired_state(teams, services, standards), []


def _declare(document: YamlDocument, issues: list[Issue]) -> _Declared | None:
    """Validate one document against the schema of its kind; None when it is empty or of no known kind."""
    data = document.data
    if data is None:
        return None  # an empty document, such as a trailing '---'
    if not isinstance(data, dict):
        message = f"expected a mapping with apiVersion, kind, metadata and spec, got {describe(data)}"
        issues.append(document.issue(document.root, message))
        return None
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in DOCUMENT_KINDS:  # a list or mapping is not hashable
        issues.extend(_unknown_kind(document, data))
        return None
    declared = _Declared(document, data, None)
    declared.parsed, problems = validate_document(DOCUMENT_KINDS[kind], data)  # type: ignore[assignment]
    issues.extend(declared.issue(declared.at(*location), message) for location, message in problems)
    if kind == "Team":
        issues.extend(_check_members(declared))
    elif kind == "Standard":
        issues.extend(_check_escalation_counts(declared))
    return declared


def _unknown_kind(document: YamlDocument, data: dict[str, Any]) -> list[Issue]:
    location = (*document.root, "kind")
    kind = data.get("kind")
    expected = f"one of {', '.join(_KINDS)}"
    if "kind" not in data:
        found = [document.issue(location, f"missing required field 'kind': expected {expected}")]
    elif not isinstance(kind, str):
        found = [document.issue(location, f"kind must be a string, {expected}; got {describe(kind)}")]
    else:
        found = [
            document.issue(
                location, f"unknown kind {kind!r}: expected {expected}{did_you_mean(kind, _KINDS)}"
            )
        ]
    # The schema of an unknown kind is unknown, but the apiVersion is checked all the same.
    version_location = (*document.root, "apiVersion")
    version = data.get("apiVersion")
    if "apiVersion" not in data:
        found.append(document.issue(version_location, "missing required field 'apiVersion'"))
    elif version != API_VERSION:
        shown = repr(version) if isinstance(version, str) else describe(version)
        found.append(
            document.issue(version_location, f"unsupported apiVersion {shown}: expected {API_VERSION}")
        )
    return found


def _check_members(team: _Declared) -> list[Issue]:
    """Duplicate members, and prune without an explicit member list: checked on raw data, valid or not."""
    spec = team.data.get("spec")
    if not isinstance(spec, dict):
        return []
    found: list[Issue] = []
    if spec.get("prune") is True and "members" not in spec:
        message = (
            "missing required field 'members': a team with prune: true must list its members "
            "(members: [] for nobody)"
        )
        found.append(team.issue(team.at("spec", "members"), message))
    members = spec.get("members")
    if not isinstance(members, list):
        return found
    first_index: dict[str, int] = {}
    for index, member in enumerate(members):
        email = member.get("email") if isinstance(member, dict) else None
        if not isinstance(email, str):
            continue
        key = normalize_email(email)
        if key in first_index:
            first = format_location(team.at("spec", "members", first_index[key]))
            message = (
                f"duplicate member {email!r}: already listed at {first} "
                "(emails are compared case-insensitively)"
            )
            found.append(team.issue(team.at("spec", "members", index, "email"), message))
        else:
            first_index[key] = index
    return found


def _check_teams(teams: list[_Declared]) -> list[Issue]:
    """Names, display names and PagerDuty team ids must each belong to one team across the whole repo."""
    found: list[Issue] = []
    by_name: dict[str, _Declared] = {}
    by_display_name: dict[str, _Declared] = {}
    by_pagerduty_id: dict[str, _Declared] = {}
    for team in teams:
        duplicate = _duplicate_name(team, by_name, "team")
        if duplicate is not None:
            found.append(duplicate)
            continue  # the same team twice: its display name and id would only repeat the news
        display_name = team.text("spec", "displayName")
        if display_name and display_name.strip():
            first = _first_claim(by_display_name, team_name_key(display_name), team)
            if first is not None:
                message = (
                    f"displayName {display_name!r} is also used by team {first.text('metadata', 'name')!r} "
                    f"({first.where()}): names are matched case-insensitively, so both would map to one "
                    "PagerDuty team"
                )
                found.append(team.issue(team.at("spec", "displayName"), message))
        found.extend(_pagerduty_id_claimed(team, by_pagerduty_id, "team", "teamId"))
    return found


def _first_claim(claims: dict[str, _Declared], key: str, declared: _Declared) -> _Declared | None:
    """The document that claimed `key` before `declared` did; None when `declared` is the first."""
    first = claims.setdefault(key, declared)
    return None if first is declared else first


def _duplicate_name(declared: _Declared, by_name: dict[str, _Declared], what: str) -> Issue | None:
    name = declared.text("metadata", "name")
    first = None if name is None else _first_claim(by_name, name, declared)
    if first is None:
        return None
    message = f"duplicate {what} {name!r}: first declared in {first.where()}"
    return declared.issue(declared.at("metadata", "name"), message)


def _pagerduty_id_claimed(
    declared: _Declared, by_id: dict[str, _Declared], what: str, field: str
) -> list[Issue]:
    """A PagerDuty object's id (spec.pagerduty.<field>) pinned by a second definition."""
    pagerduty_id = declared.text("spec", "pagerduty", field)
    first = _first_claim(by_id, pagerduty_id.strip().upper(), declared) if pagerduty_id else None
    if first is None:
        return []
    message = (
        f"PagerDuty {what} {pagerduty_id!r} is already claimed by {what} {first.text('metadata', 'name')!r} "
        f"({first.where()}): one PagerDuty {what} can have only one definition"
    )
    return [declared.issue(declared.at("spec", "pagerduty", field), message)]


def _check_escalation_counts(standard: _Declared) -> list[Issue]:
    """A Standard's numbers of rules and of targets per rule, checked on raw data so that a list both too
    long and holding a bad item has both reported."""
    escalation = standard.data.get("spec")
    escalation = escalation.get("escalation") if isinstance(escalation, dict) else None
    rules = escalation.get("rules") if isinstance(escalation, dict) else None
    if not isinstance(rules, list):
        return []
    found: list[Issue] = []
    where = standard.at("spec", "escalation", "rules")
    if not rules:
        found.append(
            standard.issue(where, "an escalation needs at least one rule: the first is paged at once")
        )
    elif len(rules) > MAX_RULES:
        message = f"{len(rules)} rules: PagerDuty allows at most {MAX_RULES} in an escalation policy"
        found.append(standard.issue(where, message))
    for index, rule in enumerate(rules):
        targets = rule.get("targets") if isinstance(rule, dict) else None
        if not isinstance(targets, list):
            continue
        if not targets or len(targets) > MAX_TARGETS:
            message = f"a rule needs 1 to {MAX_TARGETS} targets, got {len(targets)}"
            found.append(standard.issue((*where, index, "targets"), message))
    return found


def _check_services(services: list[_Declared], teams: list[_Declared]) -> list[Issue]:
    """Names, PagerDuty service ids and PagerDuty names must each belong to one service across the repo;
    a service's team must be declared."""
    found: list[Issue] = []
    team_names = sorted({name for team in teams if (name := team.text("metadata", "name")) is not None})
    by_name: dict[str, _Declared] = {}
    by_display_name: dict[str, _Declared] = {}
    by_pagerduty_id: dict[str, _Declared] = {}
    for service in services:
        team = service.text("spec", "team")
        if team is not None and team not in team_names:
            message = (
                f"unknown team {team!r}: no Team of that name is declared{did_you_mean(team, team_names)}"
            )
            found.append(service.issue(service.at("spec", "team"), message))
        duplicate = _duplicate_name(service, by_name, "service")
        if duplicate is not None:
            found.append(duplicate)
            continue  # the same service twice: its names and id would only repeat the news
        display_name, location = _service_display_name(service)
        if display_name and display_name.strip():
            first = _first_claim(by_display_name, team_name_key(display_name), service)
            if first is not None:
                written = (
                    f"displayName {display_name!r}"
                    if location[-1] == "displayName"
                    else f"name {display_name!r} (its PagerDuty name, as it has no displayName)"
                )
                message = (
                    f"{written} is also the PagerDuty name of service "
                    f"{first.text('metadata', 'name')!r} ({first.where()}): names are matched "
                    "case-insensitively, so both would map to one PagerDuty service"
                )
                found.append(service.issue(location, message))
        found.extend(_pagerduty_id_claimed(service, by_pagerduty_id, "service", "serviceId"))
    return found


def _service_display_name(service: _Declared) -> tuple[str | None, Location]:
    """The service's PagerDuty name as written, and where: its displayName, else its metadata.name."""
    spec = service.data.get("spec")
    if isinstance(spec, dict) and spec.get("displayName") is not None:
        return service.text("spec", "displayName"), service.at("spec", "displayName")
    return service.text("metadata", "name"), service.at("metadata", "name")


def _check_standards(standards: list[_Declared]) -> list[Issue]:
    """One Standard per tier across the whole repo."""
    found: list[Issue] = []
    by_tier: dict[str, _Declared] = {}
    for standard in standards:
        tier = standard.text("metadata", "name")
        if tier is None:
            continue
        first = _first_claim(by_tier, tier, standard)
        if first is not None:
            message = (
                f"duplicate Standard for tier {tier!r}: first declared in {first.where()}; "
                "a tier has one standard"
            )
            found.append(standard.issue(standard.at("metadata", "name"), message))
    return found


def _desired_state(
    teams: list[_Declared], services: list[_Declared], standards: list[_Declared]
) -> DesiredState:
    return DesiredState(
        teams=tuple(sorted((_team(declared) for declared in teams), key=lambda team: team.name)),
        services=tuple(
            sorted((_service(declared) for declared in services), key=lambda service: service.name)
        ),
        standards=tuple(
            sorted((_standard(declared) for declared in standards), key=lambda s: list(Tier).index(s.tier))
        ),
        sources=(SOURCE,),
    )


def _team(declared: _Declared) -> Team:
    document = declared.parsed
    assert isinstance(document, TeamDocument)  # no problems were found, so every document parsed
    spec = document.spec
    members = sorted((Member(email=member.email, role=member.role) for member in spec.members), key=_email)
    schedules = spec.pagerduty.schedules if spec.pagerduty else {}
    return Team(
        name=document.metadata.name,
        display_name=spec.display_name,
        members=tuple(members),
        prune=spec.prune,
        pagerduty_team_id=spec.pagerduty.team_id if spec.pagerduty else None,
        schedules=tuple(ScheduleRef(key=key, ref=ref) for key, ref in sorted(schedules.items())),
        source=SOURCE,
        origin=declared.document.file,
    )


def _service(declared: _Declared) -> Service:
    document = declared.parsed
    assert isinstance(document, ServiceDocument)
    spec = document.spec
    return Service(
        name=document.metadata.name,
        team=spec.team,
        tier=spec.tier,
        display_name=spec.display_name or document.metadata.name,
        pagerduty_service_id=spec.pagerduty.service_id if spec.pagerduty else None,
        origin=declared.document.file,
    )


def _standard(declared: _Declared) -> Standard:
    document = declared.parsed
    assert isinstance(document, StandardDocument)
    escalation, service = document.spec.escalation, document.spec.service
    return Standard(
        tier=document.metadata.name,
        loops=escalation.loops,
        rules=tuple(
            StandardRule(
                targets=tuple(
                    StandardTarget(schedule=target.schedule, team_role=target.team_role)
                    for target in rule.targets
                ),
                escalate_after_minutes=rule.escalate_after_minutes,
            )
            for rule in escalation.rules
        ),
        service=ServiceStandard(
            urgency=service.urgency,
            acknowledgement_timeout_minutes=service.acknowledgement_timeout_minutes,
            auto_resolve_timeout_minutes=service.auto_resolve_timeout_minutes,
        ),
        origin=declared.document.file,
    )


def _email(member: Member) -> str:
    return member.email
