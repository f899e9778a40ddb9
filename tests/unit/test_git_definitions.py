"""A valid Git definitions repo becomes exactly the desired state it declares."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nthlayer_pipelines.desired.git import load_definitions, validate_definitions
from nthlayer_pipelines.desired.yaml_files import format_location
from nthlayer_pipelines.model import DesiredState, Member, Role, Service, Team, Tier

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
                origin="teams/platform.yml",
            ),
        ),
        services=(
            Service(name="checkout-web", team="payments", tier=Tier.HIGH, origin="services.yaml"),
            Service(name="payment-api", team="payments", tier=Tier.CRITICAL, origin="teams/payments.yaml"),
            Service(name="status-page", team="platform", tier=Tier.LOW, origin="services.yaml"),
        ),
        sources=("git",),
    )
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
        Service(name="payments", team="payments", tier=Tier.STANDARD, origin="payments.yaml"),
    )


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
