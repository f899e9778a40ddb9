"""A valid Git definitions repo becomes exactly the desired state it declares."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nthlayer_pipelines.core.model import (
    DesiredState,
    Member,
    Role,
    ScheduleRef,
    Service,
    ServiceStandard,
    Standard,
    StandardRule,
    StandardTarget,
    Team,
    Tier,
    Urgency,
)
from nthlayer_pipelines.desired.git import load_definitions, validate_definitions
from nthlayer_pipelines.desired.yaml_files import format_location

GOOD = Path(__file__).parents[1] / "data" / "good_definitions"


def test_the_example_repo_gives_exactly_its_declared_state() -> None:
    state = load_definitions(GOOD)

    assert state == DesiredState(
        teams=(
            Team(
                name="legacy-search",
                display_name="Legacy Search",
                members=(),
                prune=True,
                origin="teams/retired/legacy-search.yaml",
            ),
            Team(
                name="payments",
                display_name="Payments",
                members=(
                    Member(email="alice@example.com", role=Role.MANAGER),
                    Member(email="bob@example.com", role=Role.RESPONDER),
                ),
                prune=True,
                pagerduty_team_id="PABC123",
                schedules=(
                    ScheduleRef(key="primary", ref="Payments Primary"),
                    ScheduleRef(key="secondary", ref="PSCHED2"),
                ),
                origin="teams/payments.yaml",
            ),
            Team(
                name="platform",
                display_name="Platform Engineering",
                members=(
                    Member(email="carol@example.com", role=Role.MANAGER),
                    Member(email="dave@example.com", role=Role.RESPONDER),
                    Member(email="erin@example.com", role=Role.OBSERVER),
                ),
                prune=False,
                schedules=(ScheduleRef(key="primary", ref="Platform Primary"),),
                origin="teams/platform.yml",
            ),
        ),
        services=(
            Service(
                name="checkout-web",
                team="payments",
                tier=Tier.HIGH,
                display_name="checkout-web",  # no displayName: the service's name
                origin="services.yaml",
            ),
            Service(
                name="payment-api",
                team="payments",
                tier=Tier.CRITICAL,
                display_name="Payment API",
                pagerduty_service_id="PSVC123",
                origin="teams/payments.yaml",
            ),
            Service(
                name="status-page",
                team="platform",
                tier=Tier.LOW,
                display_name="status-page",
                origin="services.yaml",
            ),
        ),
        standards=(  # in tier order, whatever the order of the file
            Standard(
                tier=Tier.CRITICAL,
                loops=2,
                rules=(
                    StandardRule(targets=(StandardTarget(schedule="primary"),), escalate_after_minutes=5),
                    StandardRule(
                        targets=(
                            StandardTarget(schedule="secondary"),
                            StandardTarget(team_role=Role.MANAGER),
                        ),
                        escalate_after_minutes=10,
                    ),
                ),
                service=ServiceStandard(
                    urgency=Urgency.HIGH, acknowledgement_timeout_minutes=30, auto_resolve_timeout_minutes=240
                ),
                origin="standards.yaml",
            ),
            Standard(
                tier=Tier.HIGH,
                loops=0,
                rules=(
                    StandardRule(targets=(StandardTarget(schedule="primary"),), escalate_after_minutes=15),
                    StandardRule(
                        targets=(StandardTarget(team_role=Role.MANAGER),), escalate_after_minutes=30
                    ),
                ),
                service=ServiceStandard(
                    urgency=Urgency.SEVERITY_BASED,
                    acknowledgement_timeout_minutes=None,
                    auto_resolve_timeout_minutes=480,
                ),
                origin="standards.yaml",
            ),
        ),
        sources=("git",),
    )
    assert state.standard(Tier.CRITICAL) is state.standards[0]
    assert state.standard(Tier.LOW) is None
    payments = state.team("payments")
    assert payments is not None and payments.schedule("secondary") == ScheduleRef(
        key="secondary", ref="PSCHED2"
    )
    assert payments.schedule("tertiary") is None
    assert all(team.source == "git" for team in state.teams)


def test_the_example_repo_has_no_problems_whether_named_by_str_or_path() -> None:
    assert validate_definitions(GOOD) == []
    assert load_definitions(str(GOOD)) == load_definitions(GOOD)


def test_hidden_folders_and_other_files_are_not_read() -> None:
    # .github/workflows/ci.yml is YAML but not a definition: read, it would be an unknown kind.
    assert (GOOD / ".github" / "workflows" / "ci.yml").is_file()
    assert (GOOD / "README.md").is_file()

    origins = {team.origin for team in load_definitions(GOOD).teams}

    assert origins == {"teams/payments.yaml", "teams/platform.yml", "teams/retired/legacy-search.yaml"}


def test_one_file_can_be_loaded_on_its_own() -> None:
    state = load_definitions(GOOD / "teams" / "platform.yml")

    assert [(team.name, team.origin) for team in state.teams] == [("platform", "platform.yml")]
    assert state.services == ()


def test_anchors_merge_keys_and_empty_documents_are_plain_yaml(tmp_path: Path) -> None:
    (tmp_path / "teams.yaml").write_text(
        "apiVersion: nthlayer/v1\nkind: Team\nmetadata: {name: billing}\n"
        "spec:\n"
        "  displayName: Billing\n"
        "  members:\n"
        "    - &manager {email: carol@example.com, role: manager}\n"
        "    - {<<: *manager, email: dan@example.com}\n"
        "---\n"
        "---\n"
    )

    state = load_definitions(tmp_path)

    assert state.teams[0].members == (
        Member(email="carol@example.com", role=Role.MANAGER),
        Member(email="dan@example.com", role=Role.MANAGER),
    )
    assert len(state.teams) == 1


def test_emails_are_lowercased_and_members_sorted_by_email(tmp_path: Path) -> None:
    (tmp_path / "team.yaml").write_text(
        "apiVersion: nthlayer/v1\nkind: Team\nmetadata: {name: payments}\n"
        "spec:\n  displayName: Payments\n  members:\n"
        "    - {email: Zoe@Example.COM, role: observer}\n"
        "    - {email: ALICE@example.com, role: manager}\n"
    )

    team = load_definitions(tmp_path).teams[0]

    assert team.members == (
        Member(email="alice@example.com", role=Role.MANAGER),
        Member(email="zoe@example.com", role=Role.OBSERVER),
    )


def test_date_like_and_padded_display_names_stay_text(tmp_path: Path) -> None:
    (tmp_path / "team.yaml").write_text(
        "apiVersion: nthlayer/v1\nkind: Team\nmetadata: {name: launch}\n"
        "spec: {displayName: 2024-01-01, members: []}\n"
        "---\n"
        "apiVersion: nthlayer/v1\nkind: Team\nmetadata: {name: padded}\n"
        "spec: {displayName: '  Padded Team ', members: []}\n"
    )

    assert [team.display_name for team in load_definitions(tmp_path).teams] == ["2024-01-01", "Padded Team"]


def test_a_team_and_a_service_may_share_a_name(tmp_path: Path) -> None:
    (tmp_path / "payments.yaml").write_text(
        "apiVersion: nthlayer/v1\nkind: Team\nmetadata: {name: payments}\n"
        "spec: {displayName: Payments, members: []}\n"
        "---\n"
        "apiVersion: nthlayer/v1\nkind: Service\nmetadata: {name: payments}\n"
        "spec: {team: payments, tier: standard}\n"
    )

    state = load_definitions(tmp_path)

    assert state.services == (
        Service(
            name="payments",
            team="payments",
            tier=Tier.STANDARD,
            display_name="payments",
            origin="payments.yaml",
        ),
    )


STANDARD = """\
apiVersion: nthlayer/v1
kind: Standard
metadata: {name: critical}
spec:
  escalation:
    rules: [{targets: [{schedule: primary}, {teamRole: manager}], escalateAfterMinutes: 5}]
  service: {urgency: high, acknowledgementTimeoutMinutes: null, autoResolveTimeoutMinutes: null}
"""


def test_a_schedule_a_team_does_not_declare_is_left_to_the_plan_not_refused(tmp_path: Path) -> None:
    # payments runs a critical service but declares no 'primary': a finding when planned, not invalid YAML.
    (tmp_path / "payments.yaml").write_text(
        "apiVersion: nthlayer/v1\nkind: Team\nmetadata: {name: payments}\n"
        "spec: {displayName: Payments, members: []}\n"
        "---\n"
        "apiVersion: nthlayer/v1\nkind: Service\nmetadata: {name: payment-api}\n"
        "spec: {team: payments, tier: critical}\n"
    )
    (tmp_path / "standards.yaml").write_text(STANDARD)

    state = load_definitions(tmp_path)

    standard = state.standard(Tier.CRITICAL)
    assert standard is not None and standard.origin == "standards.yaml"
    assert standard.loops == 0  # loops left out
    assert standard.rules[0].targets == (
        StandardTarget(schedule="primary"),
        StandardTarget(team_role=Role.MANAGER),
    )
    assert standard.service == ServiceStandard(
        urgency=Urgency.HIGH, acknowledgement_timeout_minutes=None, auto_resolve_timeout_minutes=None
    )
    assert state.teams[0].schedules == ()
    assert state.services[0].display_name == "payment-api"


def test_standards_alone_are_not_a_definitions_repo(tmp_path: Path) -> None:
    (tmp_path / "standards.yaml").write_text(STANDARD)

    assert [problem.message for problem in validate_definitions(tmp_path)] == [
        "no Team definitions found: a repo that declares no team is refused, never read as 'no teams'"
    ]


def test_locations_print_like_the_yaml_they_point_into() -> None:
    assert format_location(()) == ""
    assert format_location(("spec", "members", 2, "role")) == "spec.members[2].role"
    assert format_location(("documents", 1, "metadata", "name")) == "documents[1].metadata.name"


slugs = st.from_regex(r"[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,5})?", fullmatch=True)
emails = st.builds(
    "{}@{}.example.com".format, st.from_regex(r"[a-zA-Z][a-zA-Z0-9.]{0,10}[a-zA-Z0-9]", fullmatch=True), slugs
).filter(lambda email: ".." not in email)
teams = st.lists(
    st.tuples(
        slugs,
        st.lists(
            st.tuples(emails, st.sampled_from(Role)), max_size=5, unique_by=lambda pair: pair[0].lower()
        ),
        st.booleans(),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda team: team[0],
)


@settings(max_examples=40, deadline=None)
@given(teams)
def test_any_valid_declaration_loads_back_as_declared(declared: list[tuple[str, list, bool]]) -> None:
    documents = [
        {
            "apiVersion": "nthlayer/v1",
            "kind": "Team",
            "metadata": {"name": name},
            "spec": {
                "displayName": f"Team {name}",
                "prune": prune,
                "members": [{"email": email, "role": role.value} for email, role in members],
            },
        }
        for name, members, prune in declared
    ]
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "teams.yaml").write_text(yaml.safe_dump_all(documents))

        state = load_definitions(folder)

    expected = sorted(
        (
            name,
            f"Team {name}",
            prune,
            sorted((email.lower(), role) for email, role in members),
        )
        for name, members, prune in declared
    )
    assert [
        (team.name, team.display_name, team.prune, [(member.email, member.role) for member in team.members])
        for team in state.teams
    ] == expected
