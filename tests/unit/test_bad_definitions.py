"""A bad definitions repo is refused with every problem, each naming the file, the path inside it and why.

The corpus lives in tests/data/bad_definitions/<fault>/: `repo/` is the definitions root (absent for the
missing-path case) and `expected.txt` lists the expected problems in order, one a line, as
`file | path | fragment of the message`; `{root}` stands for the root as given. A line without `|`,
like `max_file_bytes: 2048`, sets a read limit for that case.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from nthlayer_pipelines.core.model import DefinitionsError
from nthlayer_pipelines.desired.git import load_definitions, validate_definitions
from nthlayer_pipelines.desired.yaml_files import ReadLimits

CORPUS = Path(__file__).parents[1] / "data" / "bad_definitions"
CASES = sorted(path.name for path in CORPUS.iterdir() if path.is_dir())

TEAM = """\
apiVersion: nthlayer/v1
kind: Team
metadata:
  name: payments
spec:
  displayName: Payments
  members:
    - {email: alice@example.com, role: manager}
"""


@dataclass(frozen=True)
class Expected:
    file: str
    path: str
    fragment: str


@dataclass(frozen=True)
class Case:
    root: Path
    limits: ReadLimits
    expected: list[Expected]


def load_case(name: str) -> Case:
    folder = CORPUS / name
    root = folder / "repo"
    limit_names = {field.name for field in fields(ReadLimits)}
    limits: dict[str, int] = {}
    expected: list[Expected] = []
    for line in (folder / "expected.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if "|" not in line:
            key, value = (part.strip() for part in line.split(":", 1))
            assert key in limit_names, f"{name}/expected.txt: unknown limit {key!r}"
            limits[key] = int(value)
            continue
        file, path, fragment = (part.strip() for part in line.split("|", 2))
        expected.append(Expected(file.replace("{root}", str(root)), path, fragment))
    return Case(root, ReadLimits(**limits), expected)


def test_the_corpus_holds_every_required_fault() -> None:
    required = {
        "malformed-yaml",
        "document-not-a-mapping",
        "missing-api-version",
        "wrong-api-version",
        "unknown-kind",
        "missing-metadata-name",
        "name-not-a-slug",
        "duplicate-team-across-files",
        "duplicate-member",
        "invalid-email",
        "unknown-role",
        "role-wrong-type",
        "unknown-field",
        "prune-not-a-bool",
        "malformed-pagerduty-team-id",
        "service-of-unknown-team",
        "service-with-unknown-tier",
        "duplicate-display-name",
        "duplicate-pagerduty-team-id",
        "empty-folder",
        "missing-path",
        "not-utf8",
        "alias-bomb",
        "huge-file",
        "python-tag",
        "standard-name-not-a-tier",
        "duplicate-standard",
        "standard-loops-out-of-range",
        "standard-without-rules",
        "standard-too-many-rules",
        "rule-target-count",
        "target-neither-or-both",
        "unknown-team-role",
        "escalate-after-minutes-invalid",
        "unknown-urgency",
        "standard-timeouts-invalid",
        "standard-unknown-field",
        "team-schedules-invalid",
        "service-display-name-empty",
        "malformed-pagerduty-service-id",
        "duplicate-service-pagerduty-id",
        "duplicate-service-display-name",
    }
    assert required <= set(CASES)
    assert all(load_case(name).expected for name in CASES)


@pytest.mark.parametrize("name", CASES)
def test_each_fault_is_reported_with_its_file_path_and_reason(name: str) -> None:
    case = load_case(name)

    problems = validate_definitions(case.root, limits=case.limits)

    assert [(problem.file, problem.path) for problem in problems] == [
        (expected.file, expected.path) for expected in case.expected
    ]
    for problem, expected in zip(problems, case.expected, strict=True):
        assert expected.fragment in problem.message, str(problem)


@pytest.mark.parametrize("name", CASES)
def test_no_desired_state_is_loaded_from_a_bad_repo(name: str) -> None:
    case = load_case(name)

    with pytest.raises(DefinitionsError) as raised:
        load_definitions(case.root, limits=case.limits)

    assert raised.value.problems == validate_definitions(case.root, limits=case.limits)
    assert str(raised.value) == "\n".join(str(problem) for problem in raised.value.problems)


def test_every_fault_of_a_repo_is_reported_at_once_in_file_and_line_order() -> None:
    problems = validate_definitions(CORPUS / "many-faults" / "repo")

    assert [str(problem) for problem in problems] == [
        "services.yaml: spec.team: unknown team 'platfrom': no Team of that name is declared "
        "(did you mean 'platform'?) (line 4)",
        "teams/broken.yaml: malformed YAML at line 5, column 2: did not find expected key "
        "(while parsing a block mapping started at line 1, column 1)",
        "teams/payments.yaml: documents[0].spec.members[1].role: unknown role 'admin': "
        "expected one of manager, responder, observer (line 9)",
        "teams/payments.yaml: documents[0].spec.members[2].email: invalid email 'carol-at-example.com': "
        "An email address must have an @-sign. (line 10)",
        "teams/payments.yaml: documents[0].spec.members[3].email: duplicate member 'ALICE@example.com': "
        "already listed at documents[0].spec.members[0] (emails are compared case-insensitively) (line 11)",
        "teams/payments.yaml: documents[1].spec.tier: unknown tier 'platinum': "
        "expected one of critical, high, standard, low (line 16)",
        "teams/platform.yaml: spec.prune: expected true or false, got string 'no' (line 7)",
        "teams/platform.yaml: spec.memebers: unknown field 'memebers' (did you mean 'members'?) (line 8)",
        "teams/platform.yaml: spec.pagerduty.teamId: malformed PagerDuty team id 'P12': expected 'P' and "
        "at least 6 uppercase letters or digits, like 'PABC123' (line 10)",
    ]


def test_a_file_over_the_default_size_limit_is_refused_unread(tmp_path: Path) -> None:
    padding = "# " + "x" * 97 + "\n"
    (tmp_path / "teams.yaml").write_text(TEAM + padding * 10_500)

    problems = validate_definitions(tmp_path)

    assert [str(problem) for problem in problems] == [
        "teams.yaml: file is 1,050,151 bytes, over the 1,048,576-byte limit for one definitions file; "
        "split it into smaller files"
    ]


def test_deep_nesting_is_refused_with_its_location_whichever_layer_refuses(tmp_path: Path) -> None:
    # libyaml parses this shape in time quadratic in its depth and composes it recursively in C. Our depth
    # bound or, first, libyaml's own (0.2.6 and later) refuses it; either way with the line and column.
    depth = 500_000
    (tmp_path / "teams.yaml").write_text(TEAM + "x-deep: " + "[" * depth + "]" * depth + "\n")

    problems = validate_definitions(tmp_path)

    assert len(problems) == 1
    assert re.fullmatch(
        r"teams\.yaml: nested (deeper than 32 levels|too deeply) at line 9, column \d+: "
        r"definitions are never that deep",
        str(problems[0]),
    ), str(problems[0])


def test_nesting_past_our_bound_but_within_the_parsers_is_refused_by_ours(tmp_path: Path) -> None:
    depth = 40
    (tmp_path / "teams.yaml").write_text(TEAM + "x-deep: " + "[" * depth + "]" * depth + "\n")

    problems = validate_definitions(tmp_path)

    assert [str(problem) for problem in problems] == [
        "teams.yaml: nested deeper than 32 levels at line 9, column 40: definitions are never that deep"
    ]


def test_aliases_nesting_a_document_too_deep_are_refused(tmp_path: Path) -> None:
    # Each level is one short line, so the text is shallow and small while the data it stands for is deep.
    levels = "".join(f"  l{level}: &l{level} [*l{level - 1}]\n" for level in range(1, 40))
    (tmp_path / "teams.yaml").write_text(TEAM + "x-chain:\n  l0: &l0 [x]\n" + levels)

    problems = validate_definitions(tmp_path)

    assert [str(problem) for problem in problems] == [
        "teams.yaml: aliases nest this document deeper than 32 levels (line 41)"
    ]


def test_a_definitions_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "teams.yaml").write_text(TEAM)
    os.mkfifo(tmp_path / "waiting.yaml")  # opening a FIFO for reading would block forever

    problems = validate_definitions(tmp_path)

    assert [str(problem) for problem in problems] == ["waiting.yaml: not a regular file"]


def test_keys_that_yaml_reads_as_booleans_or_numbers_are_reported(tmp_path: Path) -> None:
    (tmp_path / "teams.yaml").write_text(TEAM + "  on: true\n  1: one\n")

    problems = validate_definitions(tmp_path)

    assert [str(problem) for problem in problems] == [
        "teams.yaml: spec: field name 'on' is read as a boolean, not a string: quote it (line 9)",
        "teams.yaml: spec: field name '1' is read as an integer, not a string: quote it (line 10)",
    ]


def test_an_unknown_kind_still_has_its_api_version_checked(tmp_path: Path) -> None:
    (tmp_path / "teams.yaml").write_text(
        "apiVersion: nthlayer/v0\nkind: Group\nmetadata: {name: payments}\n"
        "---\nkind: 7\nmetadata: {name: platform}\n"
    )

    problems = validate_definitions(tmp_path)

    assert [str(problem) for problem in problems] == [
        "teams.yaml: documents[0].apiVersion: unsupported apiVersion 'nthlayer/v0': "
        "expected nthlayer/v1 (line 1)",
        "teams.yaml: documents[0].kind: unknown kind 'Group': expected one of Team, Service, Standard "
        "(line 2)",
        "teams.yaml: documents[1].kind: kind must be a string, one of Team, Service, Standard; "
        "got integer 7 (line 5)",
        "teams.yaml: documents[1].apiVersion: missing required field 'apiVersion' (line 5)",
    ]


def test_wrongly_typed_values_name_the_type_yaml_gave_them(tmp_path: Path) -> None:
    (tmp_path / "teams.yaml").write_text(
        "apiVersion: nthlayer/v1\nkind: Team\nmetadata: {name: 42}\n"
        "spec:\n  displayName: '  '\n  members: [alice@example.com]\n  pagerduty: PABC123\n"
        "  description: [a, b]\n  owner: someone\n"
    )

    problems = validate_definitions(tmp_path)

    assert [str(problem) for problem in problems] == [
        "teams.yaml: metadata.name: expected a string, got integer 42 (line 3)",
        "teams.yaml: spec.displayName: must not be empty (line 5)",
        "teams.yaml: spec.members[0]: expected a mapping, got string 'alice@example.com' (line 6)",
        "teams.yaml: spec.pagerduty: expected a mapping, got string 'PABC123' (line 7)",
        "teams.yaml: spec.description: expected a string, got a list (line 8)",
        "teams.yaml: spec.owner: unknown field 'owner': expected displayName, description, prune, members, "
        "pagerduty (line 9)",
    ]


def test_a_list_of_mappings_is_not_mistaken_for_a_role(tmp_path: Path) -> None:
    (tmp_path / "teams.yaml").write_text(TEAM.replace("role: manager", "role: {name: manager}"))

    problems = validate_definitions(tmp_path)

    assert [str(problem) for problem in problems] == [
        "teams.yaml: spec.members[0].role: role must be a string, one of manager, responder, observer; "
        "got a mapping (line 8)"
    ]


def test_a_value_yaml_cannot_build_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "teams.yaml").write_text(TEAM + "  x-count: " + "9" * 5000 + "\n")

    problems = validate_definitions(tmp_path)

    assert [str(problem) for problem in problems] == [
        "teams.yaml: a value cannot be read: Exceeds the limit (4300 digits) for integer string conversion: "
        "value has 5000 digits (line 1)"
    ]


def test_a_control_character_is_located_by_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "teams.yaml").write_text(TEAM.replace("Payments", "Pay\u00e9\x07ments"))

    problems = validate_definitions(tmp_path)

    assert [str(problem) for problem in problems] == [
        "teams.yaml: malformed YAML at line 6, column 20: character #x0007 is not allowed"
    ]


def test_an_unknown_file_root_given_as_a_string_is_named_as_given() -> None:
    problems = validate_definitions("no/such/definitions")

    assert [str(problem) for problem in problems] == ["no/such/definitions: definitions path does not exist"]


def test_a_linked_folder_is_refused_rather_than_silently_skipped(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "teams.yaml").write_text(TEAM)
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "platform").symlink_to(tmp_path / "shared", target_is_directory=True)

    problems = validate_definitions(tmp_path / "repo")

    assert [str(problem) for problem in problems] == [
        "platform: a link to a folder: links are not followed, so move the files here"
    ]
