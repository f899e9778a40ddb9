"""Cortex teams -> desired Teams, and the parsing of Cortex's answer: pure, no HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nthlayer_pipelines.core.model import Member, Role, SourceError, Team
from nthlayer_pipelines.desired.cortex import teams_from_cortex
from nthlayer_pipelines.resources.cortex.client import DEFAULT_ROLE_MAP, CortexTeam, parse_teams
from nthlayer_pipelines.resources.cortex.resource import CortexResource

ROLE_MAP = {tag: Role(role) for tag, role in DEFAULT_ROLE_MAP.items()}


def member(email: str | None, *tags: str, name: str = "Someone") -> dict[str, Any]:
    return {
        "name": name,
        "email": email,
        "notificationsEnabled": True,
        "roles": [{"tag": t, "type": "TEAM_ROLE", "name": t.title()} for t in tags],
    }


def cortex_team(tag: str, *members: dict[str, Any], name: str = "", archived: bool = False) -> dict[str, Any]:
    return {
        "id": f"id-{tag}",
        "teamTag": tag,
        "catalogEntityTag": tag,
        "isArchived": archived,
        "type": "CORTEX",
        "metadata": {"name": name or tag.title(), "description": None, "summary": None},
        "links": [],
        "slackChannels": [],
        "cortexTeam": {"members": list(members)},
    }


def mapped(*teams: dict[str, Any], prune: bool = False, default_role: Role = Role.RESPONDER) -> list[Team]:
    parsed = [CortexTeam.model_validate(t) for t in teams]
    return teams_from_cortex(parsed, role_map=ROLE_MAP, default_role=default_role, prune=prune)


def test_a_team_maps_its_tag_name_members_and_origin():
    teams = mapped(
        cortex_team(
            "payments", member("Alice@Example.com", "manager"), member("bob@example.com"), name="Payments"
        ),
        prune=True,
    )
    assert teams == [
        Team(
            name="payments",
            display_name="Payments",
            members=(
                Member(email="alice@example.com", role=Role.MANAGER),
                Member(email="bob@example.com", role=Role.RESPONDER),
            ),
            prune=True,
            source="cortex",
            origin="cortex:payments",
        )
    ]


def test_archived_teams_are_not_desired_state():
    teams = mapped(cortex_team("old-ops", member("a@example.com"), archived=True), cortex_team("search"))
    assert [t.name for t in teams] == ["search"]


def test_the_most_privileged_mapped_tag_wins_and_unmapped_tags_are_ignored():
    teams = mapped(
        cortex_team(
            "search",
            member("a@example.com", "observer", "oncall-manager", "responder"),
            member("b@example.com", "observer", "tech-lead"),
            member("c@example.com", "tech-lead"),
        ),
        default_role=Role.OBSERVER,
    )
    assert teams[0].members == (
        Member(email="a@example.com", role=Role.MANAGER),
        Member(email="b@example.com", role=Role.OBSERVER),
        Member(email="c@example.com", role=Role.OBSERVER),  # no mapped tag: the default
    )


def test_a_person_listed_twice_is_one_member_with_the_higher_role():
    teams = mapped(
        cortex_team("search", member("a@example.com", "observer"), member("A@EXAMPLE.COM ", "manager"))
    )
    assert teams[0].members == (Member(email="a@example.com", role=Role.MANAGER),)


def test_idp_group_members_are_read_and_their_roles_matched_by_name():
    team = cortex_team("platform")
    del team["cortexTeam"]
    team["type"] = "IDP"
    team["idpGroup"] = {
        "group": "platform@example.com",
        "provider": "GOOGLE",
        "members": [
            {"id": "1", "email": "dee@example.com", "name": "Dee", "roles": [{"name": "Manager"}]},
            {"id": "2", "email": "eve@example.com", "name": "Eve", "roles": []},
        ],
    }
    assert mapped(team)[0].members == (
        Member(email="dee@example.com", role=Role.MANAGER),
        Member(email="eve@example.com", role=Role.RESPONDER),
    )


def test_teams_come_out_sorted_by_name():
    assert [t.name for t in mapped(cortex_team("zeta"), cortex_team("alpha"), cortex_team("mid"))] == [
        "alpha",
        "mid",
        "zeta",
    ]


def test_a_member_without_email_is_an_error_naming_the_team_and_member():
    with pytest.raises(SourceError) as caught:
        mapped(cortex_team("payments", member("a@example.com"), member(None, "manager", name="Carol")))
    assert "cortex team 'payments': member 1 (Carol) has no email" in str(caught.value)


def test_a_tag_that_is_not_a_slug_is_refused_with_a_suggestion_and_every_problem_is_listed():
    with pytest.raises(SourceError) as caught:
        mapped(cortex_team("Data Platform"), cortex_team("ok", member("not-an-email")))
    message = str(caught.value)
    assert "2 problem(s)" in message
    assert "cortex team 'Data Platform': teamTag is not a lowercase slug" in message
    assert "e.g. 'data-platform'" in message
    assert "cortex team 'ok': member 0 (Someone) has an invalid email 'not-an-email'" in message


def test_a_tag_listed_twice_is_refused():
    with pytest.raises(SourceError, match="cortex team 'search': teamTag is listed twice"):
        mapped(cortex_team("search"), cortex_team("search"))


def test_parse_teams_reads_the_api_shape():
    body = json.dumps({"teams": [cortex_team("payments", member("a@example.com", "manager"))]})
    (team,) = parse_teams(body)
    assert (team.team_tag, team.is_archived, team.metadata.name) == ("payments", False, "Payments")
    assert [(m.email, [r.tag for r in m.roles]) for m in team.members] == [("a@example.com", ["manager"])]


def test_truncated_json_is_a_source_error():
    body = json.dumps({"teams": [cortex_team("payments")]})[:-20]
    with pytest.raises(SourceError, match=r"Cortex GET /api/v1/teams: the answer is not valid JSON \("):
        parse_teams(body)


def test_a_body_without_teams_is_a_source_error_naming_the_field():
    with pytest.raises(SourceError, match="does not parse: teams: Field required"):
        parse_teams('{"entities": []}')


def test_a_team_of_the_wrong_shape_is_named_by_index_and_tag():
    broken = cortex_team("search")
    del broken["metadata"]["name"]
    with pytest.raises(SourceError, match=r"teams\[1\]\(search\)\.metadata\.name: Field required"):
        parse_teams(json.dumps({"teams": [cortex_team("payments"), broken]}))


def test_resource_roles_refuse_a_role_pagerduty_does_not_have():
    resource = CortexResource(api_url="http://127.0.0.1:1/cortex", role_map={"lead": "boss"})
    with pytest.raises(
        ValueError, match=r"CortexResource.role_map\['lead'\]: 'boss' is not a PagerDuty role"
    ):
        resource.roles()
    assert CortexResource().roles() == (ROLE_MAP, Role.RESPONDER)
    assert CortexResource().enabled is False
