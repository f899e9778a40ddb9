"""Desired state from a Git definitions repo: Team and Service documents in *.yaml / *.yml files.

Every problem in every file is collected before anything is refused, so one run of `nthlayer validate`
shows the whole list. An invalid repo, or one that declares nothing, never yields a desired state:
planning from it could remove real people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nthlayer_pipelines.model import (
    DefinitionsError,
    DesiredState,
    Member,
    Service,
    Team,
    ValidationProblem,
    normalize_email,
    team_name_key,
)

from .git_schema import (
    API_VERSION,
    DOCUMENT_KINDS,
    ServiceDocument,
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
    """A Team or Service document; its raw data serves the checks that run even when it is invalid."""

    document: YamlDocument
    data: dict[str, Any]
    parsed: TeamDocument | ServiceDocument | None

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

    teams: list[_Declared] = []
    services: list[_Declared] = []
    for file_path, name in files:
        documents, file_issues = read_definition_file(file_path, name, limits)
        issues.extend(file_issues)
        for document in documents:
            declared = _declare(document, issues)
            if declared is not None:
                (teams if declared.data["kind"] == "Team" else services).append(declared)
    issues.extend(_check_teams(teams))
    issues.extend(_check_services(services, teams))

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
    return _desired_state(teams, services), []


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
    return declared


def _unknown_kind(document: YamlDocument, data: dict[str, Any]) -> list[Issue]:
    location = (*document.root, "kind")
    kind = data.get("kind")
    expected = " or ".join(_KINDS)
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
        name = team.text("metadata", "name")
        if name is not None:
            first = by_name.setdefault(name, team)
            if first is not team:
                message = f"duplicate team {name!r}: first declared in {first.where()}"
                found.append(team.issue(team.at("metadata", "name"), message))
                continue  # the same team twice: its display name and id would only repeat the news
        display_name = team.text("spec", "displayName")
        if display_name and display_name.strip():
            first = by_display_name.setdefault(team_name_key(display_name), team)
            if first is not team:
                message = (
                    f"displayName {display_name!r} is also used by team {first.text('metadata', 'name')!r} "
                    f"({first.where()}): names are matched case-insensitively, so both would map to one "
                    "PagerDuty team"
                )
                found.append(team.issue(team.at("spec", "displayName"), message))
        team_id = team.text("spec", "pagerduty", "teamId")
        if team_id:
            first = by_pagerduty_id.setdefault(team_id.strip().upper(), team)
            if first is not team:
                message = (
                    f"PagerDuty team {team_id!r} is already claimed by team "
                    f"{first.text('metadata', 'name')!r} "
                    f"({first.where()}): one PagerDuty team can have only one definition"
                )
                found.append(team.issue(team.at("spec", "pagerduty", "teamId"), message))
    return found


def _check_services(services: list[_Declared], teams: list[_Declared]) -> list[Issue]:
    found: list[Issue] = []
    team_names = sorted({name for team in teams if (name := team.text("metadata", "name")) is not None})
    by_name: dict[str, _Declared] = {}
    for service in services:
        name = service.text("metadata", "name")
        if name is not None:
            first = by_name.setdefault(name, service)
            if first is not service:
                message = f"duplicate service {name!r}: first declared in {first.where()}"
                found.append(service.issue(service.at("metadata", "name"), message))
        team = service.text("spec", "team")
        if team is not None and team not in team_names:
            message = (
                f"unknown team {team!r}: no Team of that name is declared{did_you_mean(team, team_names)}"
            )
            found.append(service.issue(service.at("spec", "team"), message))
    return found


def _desired_state(teams: list[_Declared], services: list[_Declared]) -> DesiredState:
    built_teams = []
    for declared in teams:
        document = declared.parsed
        assert isinstance(document, TeamDocument)  # no problems were found, so every document parsed
        spec = document.spec
        members = sorted(
            (Member(email=member.email, role=member.role) for member in spec.members), key=_email
        )
        built_teams.append(
            Team(
                name=document.metadata.name,
                display_name=spec.display_name,
                members=tuple(members),
                prune=spec.prune,
                pagerduty_team_id=spec.pagerduty.team_id if spec.pagerduty else None,
                source=SOURCE,
                origin=declared.document.file,
            )
        )
    built_services = []
    for declared in services:
        document = declared.parsed
        assert isinstance(document, ServiceDocument)
        built_services.append(
            Service(
                name=document.metadata.name,
                team=document.spec.team,
                tier=document.spec.tier,
                origin=declared.document.file,
            )
        )
    return DesiredState(
        teams=tuple(sorted(built_teams, key=lambda team: team.name)),
        services=tuple(sorted(built_services, key=lambda service: service.name)),
        sources=(SOURCE,),
    )


def _email(member: Member) -> str:
    return member.email
