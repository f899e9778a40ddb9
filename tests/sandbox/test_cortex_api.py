"""The Cortex emulator: team shapes, archived teams, teams without members, auth and errors."""

import httpx
import pytest
from sandbox_seed import CORTEX_TOKEN

from nthlayer_pipelines.sandbox import RunningSandbox, SandboxOrg


def test_team_shape_follows_cortex(cortex: httpx.Client, org: SandboxOrg) -> None:
    data = org.cortex.find("data")
    assert data is not None
    assert cortex.get("/api/v1/teams/data").json() == {
        "id": data.id,
        "teamTag": "data",
        "catalogEntityTag": "data",
        "isArchived": False,
        "type": "CORTEX",
        "metadata": {"name": "Data Platform", "description": "Pipelines and warehouses", "summary": ""},
        "links": [],
        "slackChannels": [],
        "cortexTeam": {
            "members": [
                {
                    "name": "Grace",
                    "email": "grace@example.com",
                    "notificationsEnabled": True,
                    "roles": [
                        {
                            "tag": "oncall-manager",
                            "type": "TEAM_ROLE",
                            "name": "Oncall Manager",
                            "source": "ENTITY_DEFINED",
                        }
                    ],
                },
                {"name": "Ken", "email": "ken@example.com", "notificationsEnabled": True, "roles": []},
            ]
        },
    }
    assert cortex.get(f"/api/v1/teams/{data.id}").json()["teamTag"] == "data"


def test_list_omits_teams_without_members_unless_asked(cortex: httpx.Client) -> None:
    default = cortex.get("/api/v1/teams").json()
    assert [t["teamTag"] for t in default["teams"]] == ["data", "legacy"]

    with_empty = cortex.get("/api/v1/teams", params={"includeTeamsWithoutMembers": "true"}).json()
    assert [t["teamTag"] for t in with_empty["teams"]] == ["data", "empty", "legacy"]
    assert with_empty["teams"][1]["cortexTeam"] == {"members": []}


def test_archived_teams_are_listed_and_marked(cortex: httpx.Client) -> None:
    teams = {t["teamTag"]: t for t in cortex.get("/api/v1/teams").json()["teams"]}
    assert teams["legacy"]["isArchived"] is True
    assert teams["data"]["isArchived"] is False
    assert cortex.get("/api/v1/teams/legacy").json()["isArchived"] is True


def test_team_tag_query_answers_one_team(cortex: httpx.Client) -> None:
    assert (
        cortex.get("/api/v1/teams", params={"teamTag": "data"}).json()["metadata"]["name"] == "Data Platform"
    )


def test_unknown_team_is_404_in_cortex_error_shape(cortex: httpx.Client) -> None:
    response = cortex.get("/api/v1/teams/nobody")
    assert response.status_code == 404
    body = response.json()
    assert {k: body[k] for k in ("type", "message", "httpStatus")} == {
        "type": "NOT_FOUND",
        "message": "Team not found",
        "httpStatus": 404,
    }
    assert body["details"] == "No team with tag or id nobody"
    assert len(body["requestId"]) == 36


def test_bad_include_flag_is_a_400(cortex: httpx.Client) -> None:
    response = cortex.get("/api/v1/teams", params={"includeTeamsWithoutMembers": "yes"})
    assert response.status_code == 400
    assert response.json()["type"] == "BAD_REQUEST"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Token token={CORTEX_TOKEN}"}],
    ids=["missing", "wrong-token", "wrong-scheme"],
)
def test_wrong_or_missing_token_is_401_in_cortex_error_shape(sandbox: RunningSandbox, headers: dict) -> None:
    response = httpx.get(sandbox.cortex_url + "/api/v1/teams", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert sorted(body) == ["details", "httpStatus", "message", "requestId", "type"]
    assert (body["type"], body["message"], body["httpStatus"]) == ("UNAUTHORIZED", "Unauthorized", 401)
