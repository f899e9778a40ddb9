"""The PagerDuty emulator over loopback: paths, shapes, pagination, auth, errors, rate limits."""

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest
from sandbox_seed import PAGERDUTY_TOKEN, TOKENS

from nthlayer_pipelines.sandbox import RunningSandbox, SandboxOrg, generate_org, running_sandbox

PD_ID = re.compile(r"^P[0-9A-Z]{6}$")
AUTH = {"Authorization": f"Token token={PAGERDUTY_TOKEN}"}


def team_id(org: SandboxOrg, name: str) -> str:
    team = org.pagerduty.team_by_name(name)
    assert team is not None
    return team.id


def user_id(org: SandboxOrg, email: str) -> str:
    user = org.pagerduty.user_by_email(email)
    assert user is not None
    return user.id


@pytest.fixture
def big_sandbox():
    """130 teams: more than one page of 100."""
    with running_sandbox(generate_org(130, 4, seed=3), tokens=TOKENS) as running:
        yield running


@pytest.fixture
def big_pd(big_sandbox: RunningSandbox):
    headers = {"Authorization": f"Token token={PAGERDUTY_TOKEN}"}
    with httpx.Client(base_url=big_sandbox.pagerduty_url, headers=headers) as client:
        yield client


def test_list_teams_pages_with_limit_offset_more_and_total_only_on_request(big_pd: httpx.Client) -> None:
    first = big_pd.get("/teams").json()
    assert (first["limit"], first["offset"], first["more"], first["total"]) == (25, 0, True, None)
    assert len(first["teams"]) == 25

    last = big_pd.get("/teams", params={"limit": 100, "offset": 100, "total": "true"}).json()
    assert (last["limit"], last["offset"], last["more"], last["total"]) == (100, 100, False, 130)
    assert len(last["teams"]) == 30

    names = [t["name"] for t in big_pd.get("/teams", params={"limit": 100}).json()["teams"]]
    names += [t["name"] for t in last["teams"]]
    assert names == sorted(names, key=str.casefold)
    assert len(set(names)) == 130


def test_limit_above_100_is_clamped_to_100(big_pd: httpx.Client) -> None:
    body = big_pd.get("/teams", params={"limit": 500}).json()
    assert body["limit"] == 100
    assert len(body["teams"]) == 100
    assert body["more"] is True


def test_offset_plus_limit_may_reach_but_not_pass_10000(pd: httpx.Client) -> None:
    at_cap = pd.get("/teams", params={"limit": 100, "offset": 9900})
    assert at_cap.status_code == 200
    assert at_cap.json() == {"teams": [], "limit": 100, "offset": 9900, "more": False, "total": None}

    past_cap = pd.get("/teams", params={"limit": 100, "offset": 9901})
    assert past_cap.status_code == 400
    error = past_cap.json()["error"]
    assert error["code"] == 2002
    assert error["message"] == "Arguments Caused Error"
    assert error["errors"][0].startswith("Offset+limit exceeds maximum allowed value of 10000.")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"limit": "ten"}, "limit must be an integer"),
        ({"limit": "0"}, "limit must be greater than 0"),
        ({"offset": "-1"}, "offset must be greater than or equal to 0"),
    ],
)
def test_invalid_limit_or_offset_is_a_400(pd: httpx.Client, params: dict, reason: str) -> None:
    response = pd.get("/users", params=params)
    assert response.status_code == 400
    assert response.json() == {
        "error": {"message": "Invalid Input Provided", "code": 2001, "errors": [reason]}
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Token token=wrong"},
        {"Authorization": f"Bearer {PAGERDUTY_TOKEN}"},
        {"Authorization": PAGERDUTY_TOKEN},
    ],
    ids=["missing", "wrong-token", "bearer-scheme", "bare-token"],
)
def test_wrong_or_missing_token_is_401_code_2006(sandbox: RunningSandbox, headers: dict) -> None:
    response = httpx.get(sandbox.pagerduty_url + "/teams", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": {"message": "Authentication failed", "code": 2006, "errors": []}}


def test_team_and_user_objects_carry_id_type_summary_self_html_url(
    sandbox: RunningSandbox, pd: httpx.Client, org: SandboxOrg
) -> None:
    payments = team_id(org, "Payments")
    team = pd.get(f"/teams/{payments}").json()["team"]
    assert team == {
        "id": payments,
        "type": "team",
        "summary": "Payments",
        "self": f"{sandbox.pagerduty_url}/teams/{payments}",
        "html_url": f"https://{org.pagerduty.subdomain}.pagerduty.com/teams/{payments}",
        "name": "Payments",
        "description": "Money in, money out",
        "default_role": "manager",
    }
    alice = pd.get(f"/users/{user_id(org, 'alice@example.com')}").json()["user"]
    assert (alice["type"], alice["name"], alice["email"], alice["role"]) == (
        "user",
        "Alice Example",
        "alice@example.com",
        "admin",
    )
    assert {t["summary"] for t in alice["teams"]} == {"Payments", "Search"}
    assert {t["type"] for t in alice["teams"]} == {"team_reference"}
    assert all(PD_ID.match(t["id"]) for t in alice["teams"])


def html_urls(value: object) -> list[str]:
    """Every `html_url` anywhere in an answer."""
    if isinstance(value, dict):
        found = [value["html_url"]] if "html_url" in value else []
        return found + [url for item in value.values() for url in html_urls(item)]
    if isinstance(value, list):
        return [url for item in value for url in html_urls(item)]
    return []


def test_every_html_url_names_the_accounts_subdomain(
    sandbox: RunningSandbox, pd: httpx.Client, org: SandboxOrg
) -> None:
    payments = team_id(org, "Payments")
    pd.put(f"/teams/{payments}/users/{user_id(org, 'dave@example.com')}", json={"role": "observer"})
    answers = [
        pd.get("/users", params={"include[]": "teams"}).json(),
        pd.get(f"/users/{user_id(org, 'alice@example.com')}").json(),
        pd.get("/teams").json(),
        pd.get(f"/teams/{payments}").json(),
        pd.get(f"/teams/{payments}/members", params={"include[]": "users"}).json(),
        pd.get(f"/teams/{payments}/members").json(),
        pd.get("/escalation_policies").json(),
        pd.get("/audit/records").json(),
    ]
    urls = [url for answer in answers for url in html_urls(answer)]
    assert len(urls) > 30
    account = re.compile(
        rf"^https://{re.escape(org.pagerduty.subdomain)}\.pagerduty\.com/[a-z_]+/P[0-9A-Z]+$"
    )
    assert [url for url in urls if not account.match(url)] == []


def test_a_sandbox_started_afresh_is_another_account_unless_the_seed_pins_one() -> None:
    first, second = generate_org(3, 2, seed=4), generate_org(3, 2, seed=4)
    assert first.to_dict() == second.to_dict(), "the same users, teams and ids ..."
    assert first.pagerduty.subdomain != second.pagerduty.subdomain, "... of another account"
    assert re.fullmatch(r"sandbox-[0-9a-f]{8}", first.pagerduty.subdomain)
    pinned = [generate_org(3, 2, seed=4, subdomain="acme").pagerduty for _ in range(2)]
    assert [p.subdomain for p in pinned] == ["acme", "acme"]
    assert pinned[0].html_base == "https://acme.pagerduty.com"
    with pytest.raises(ValueError, match="'Acme Corp' is not a DNS label"):
        generate_org(1, 1, subdomain="Acme Corp")


def test_unknown_team_is_404_code_2100(pd: httpx.Client) -> None:
    response = pd.get("/teams/PNOPE00")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == 2100
    assert response.json()["error"]["message"] == "Not Found"


def test_unknown_path_answers_in_pagerduty_error_shape(pd: httpx.Client) -> None:
    response = pd.get("/no_such_collection")
    assert response.status_code == 404
    assert response.json() == {"error": {"message": "Not Found", "code": 2100, "errors": []}}


def test_users_filter_by_team_ids_and_query_and_include_teams(pd: httpx.Client, org: SandboxOrg) -> None:
    search = team_id(org, "Search")
    in_search = pd.get("/users", params={"team_ids[]": search}).json()["users"]
    assert [u["email"] for u in in_search] == ["alice@example.com", "dave@example.com"]

    both = pd.get("/users", params=[("team_ids[]", search), ("team_ids[]", team_id(org, "Payments"))]).json()
    assert [u["email"] for u in both["users"]] == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]

    by_query = pd.get("/users", params={"query": "CAROL"}).json()["users"]
    assert [u["name"] for u in by_query] == ["Carol Example"]

    expanded = pd.get("/users", params={"query": "dave", "include[]": "teams"}).json()["users"][0]
    assert expanded["teams"][0]["type"] == "team"
    assert expanded["teams"][0]["name"] == "Search"


def test_team_members_list_roles_and_expand_users_on_include(pd: httpx.Client, org: SandboxOrg) -> None:
    payments = team_id(org, "Payments")
    body = pd.get(f"/teams/{payments}/members", params={"total": "true"}).json()
    assert [(m["user"]["summary"], m["role"]) for m in body["members"]] == [
        ("Alice Example", "manager"),
        ("Bob Example", "responder"),
        ("Carol Example", "observer"),
    ]
    assert {m["user"]["type"] for m in body["members"]} == {"user_reference"}
    assert (body["more"], body["total"]) == (False, 3)

    page = pd.get(f"/teams/{payments}/members", params={"limit": 2, "offset": 1}).json()
    assert [m["role"] for m in page["members"]] == ["responder", "observer"]

    expanded = pd.get(f"/teams/{payments}/members", params={"include[]": "users"}).json()["members"][0]
    assert expanded["user"]["type"] == "user"
    assert expanded["user"]["email"] == "alice@example.com"


def test_put_membership_adds_then_changes_role(pd: httpx.Client, org: SandboxOrg) -> None:
    search, carol = team_id(org, "Search"), user_id(org, "carol@example.com")
    added = pd.put(f"/teams/{search}/users/{carol}", json={"role": "observer"})
    assert added.status_code == 204
    assert added.content == b""
    assert org.pagerduty.memberships[search][carol] == "observer"

    changed = pd.put(f"/teams/{search}/users/{carol}", json={"role": "manager"})
    assert changed.status_code == 204
    assert org.pagerduty.memberships[search][carol] == "manager"
    roles = {m["user"]["id"]: m["role"] for m in pd.get(f"/teams/{search}/members").json()["members"]}
    assert roles[carol] == "manager"


def test_put_membership_rejects_an_unknown_role(pd: httpx.Client, org: SandboxOrg) -> None:
    search, carol = team_id(org, "Search"), user_id(org, "carol@example.com")
    response = pd.put(f"/teams/{search}/users/{carol}", json={"role": "admin"})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Invalid Input Provided",
        "code": 2001,
        "errors": ["Role must be one of observer, responder, manager"],
    }
    assert carol not in org.pagerduty.memberships[search]


def test_membership_writes_on_unknown_team_or_user_are_404(pd: httpx.Client, org: SandboxOrg) -> None:
    search, carol = team_id(org, "Search"), user_id(org, "carol@example.com")
    assert pd.put(f"/teams/PNOPE00/users/{carol}", json={"role": "observer"}).status_code == 404
    assert pd.put(f"/teams/{search}/users/PNOPE00", json={"role": "observer"}).status_code == 404
    assert pd.delete(f"/teams/PNOPE00/users/{carol}").json()["error"]["code"] == 2100


def test_delete_membership_refused_while_user_is_a_target_of_the_teams_escalation_policy(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    payments, alice = team_id(org, "Payments"), user_id(org, "alice@example.com")
    response = pd.delete(f"/teams/{payments}/users/{alice}")
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "Invalid Input Provided",
            "code": 2001,
            "errors": ["User cannot be removed as they belong to an escalation policy on this team"],
        }
    }
    assert org.pagerduty.memberships[payments][alice] == "manager"


def test_delete_membership_allowed_when_only_another_teams_policy_targets_the_user(
    pd: httpx.Client, org: SandboxOrg
) -> None:
    # Bob is a target of Search's policy, but a member of Payments only.
    payments, bob = team_id(org, "Payments"), user_id(org, "bob@example.com")
    response = pd.delete(f"/teams/{payments}/users/{bob}")
    assert response.status_code == 204
    assert bob not in org.pagerduty.memberships[payments]
    assert pd.delete(f"/teams/{payments}/users/{bob}").status_code == 204


def test_post_team_creates_it_with_a_fresh_pagerduty_id(sandbox: RunningSandbox, pd: httpx.Client) -> None:
    response = pd.post("/teams", json={"team": {"type": "team", "name": "Checkout", "description": "Carts"}})
    assert response.status_code == 201
    team = response.json()["team"]
    assert PD_ID.match(team["id"])
    assert (team["type"], team["name"], team["summary"], team["description"]) == (
        "team",
        "Checkout",
        "Checkout",
        "Carts",
    )
    assert team["self"] == f"{sandbox.pagerduty_url}/teams/{team['id']}"
    assert pd.get(f"/teams/{team['id']}").json()["team"]["name"] == "Checkout"
    assert sandbox.state.pagerduty.team_by_name("Checkout").id == team["id"]


@pytest.mark.parametrize("name", ["Payments", "payments"])
def test_post_team_with_a_taken_name_is_a_400(pd: httpx.Client, org: SandboxOrg, name: str) -> None:
    response = pd.post("/teams", json={"team": {"type": "team", "name": name}})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "Invalid Input Provided",
            "code": 2001,
            "errors": ["Name has already been taken"],
        }
    }
    assert len(org.pagerduty.teams) == 2


def test_post_team_without_a_name_is_a_400(pd: httpx.Client) -> None:
    response = pd.post("/teams", json={"team": {"type": "team", "name": "  "}})
    assert response.status_code == 400
    assert response.json()["error"]["errors"] == ["Name can't be blank"]


def test_escalation_policies_filter_by_user_and_team(pd: httpx.Client, org: SandboxOrg) -> None:
    everything = pd.get("/escalation_policies").json()["escalation_policies"]
    assert [p["name"] for p in everything] == ["Payments On-Call", "Search On-Call"]

    bob = user_id(org, "bob@example.com")
    targeting_bob = pd.get("/escalation_policies", params={"user_ids[]": bob}).json()["escalation_policies"]
    assert [p["name"] for p in targeting_bob] == ["Search On-Call"]
    targets = targeting_bob[0]["escalation_rules"][0]["targets"]
    assert [(t["type"], t["summary"]) for t in targets] == [
        ("user_reference", "Dave Example"),
        ("user_reference", "Bob Example"),
    ]

    of_payments = pd.get("/escalation_policies", params={"team_ids[]": team_id(org, "Payments")}).json()
    assert [p["name"] for p in of_payments["escalation_policies"]] == ["Payments On-Call"]

    policy_id = everything[0]["id"]
    policy = pd.get(f"/escalation_policies/{policy_id}").json()["escalation_policy"]
    assert policy["teams"][0]["summary"] == "Payments"


def test_rate_limit_counts_per_token_and_answers_429_with_headers(org: SandboxOrg) -> None:
    with running_sandbox(org, tokens=TOKENS, rate_limit=3, rate_window_seconds=60) as sandbox:
        headers = {"Authorization": f"Token token={PAGERDUTY_TOKEN}"}
        with httpx.Client(base_url=sandbox.pagerduty_url, headers=headers) as client:
            remaining = [client.get("/teams").headers["ratelimit-remaining"] for _ in range(3)]
            assert remaining == ["2", "1", "0"]
            limited = client.get("/teams")
            assert limited.status_code == 429
            assert limited.json() == {"error": {"message": "Rate Limit Exceeded", "code": 2020}}
            assert limited.headers["ratelimit-limit"] == "3"
            assert limited.headers["ratelimit-remaining"] == "0"
            assert 0 < int(limited.headers["ratelimit-reset"]) <= 60
        statuses = [e["status"] for e in sandbox.requests("pagerduty")]
        assert statuses == [200, 200, 200, 429]


def test_rate_limit_window_reopens_after_it_resets(org: SandboxOrg) -> None:
    with running_sandbox(org, tokens=TOKENS, rate_limit=1, rate_window_seconds=0.2) as sandbox:
        headers = {"Authorization": f"Token token={PAGERDUTY_TOKEN}"}
        with httpx.Client(base_url=sandbox.pagerduty_url, headers=headers) as client:
            assert client.get("/teams").status_code == 200
            assert client.get("/teams").status_code == 429
            # The window is 0.2 s long: wait it out.
            time.sleep(0.25)
            assert client.get("/teams").status_code == 200


def test_latency_is_added_to_each_request_without_serialising_them(org: SandboxOrg) -> None:
    latency_ms = 400
    with running_sandbox(org, tokens=TOKENS, latency_ms=latency_ms) as sandbox:

        def one_request(_: int) -> int:
            with httpx.Client(base_url=sandbox.pagerduty_url, headers=AUTH) as client:
                return client.get("/teams").status_code

        with ThreadPoolExecutor(max_workers=5) as pool:
            assert list(pool.map(one_request, range(5))) == [200] * 5

        entries = sandbox.requests("pagerduty")
        # The event loop's timers may fire up to a millisecond early.
        assert all(e["duration_ms"] >= latency_ms - 2 for e in entries)
        # Every request arrived before the first one was answered: they were served side by side.
        arrivals = sorted(datetime.fromisoformat(e["time"]).timestamp() for e in entries)
        assert arrivals[-1] < arrivals[0] + (latency_ms - 2) / 1000
