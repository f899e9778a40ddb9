"""Fuzzing every reader of outside input: the definitions loader, PagerDuty's, Cortex's and Slack's answers,
and a run's config. Whatever comes in, the answer is the reader's own error naming what is wrong (or a
correct result), never another exception and never a desired state made of bad data.

Provider answers come over real HTTP on loopback from a scripted server, through the clients' public calls.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nthlayer_pipelines.core.model import DefinitionsError, DesiredState, Role, SourceError
from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.desired.cortex import teams_from_cortex
from nthlayer_pipelines.desired.git import load_definitions
from nthlayer_pipelines.desired.yaml_files import format_location
from nthlayer_pipelines.resources.cortex.client import CortexClient, parse_teams
from nthlayer_pipelines.resources.pagerduty.client import (
    OffsetPager,
    PagerDutyAuthError,
    PagerDutyClient,
    PagerDutyError,
    error_from_response,
)
from nthlayer_pipelines.resources.slack.resource import SlackNotifier
from tests.reliability import Reliability
from tests.scripted_server import Reply, ScriptedServer

FUZZ_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
INPUTS_TRIED: Counter[str] = Counter()  # examples run per test, for the README's reliability table


def fuzz(test: Callable[..., None]) -> Callable[..., None]:
    """The settings above, and a count of every example the test runs (through Hypothesis's documented
    `inner_test` hook)."""
    inner = test.hypothesis.inner_test  # type: ignore[attr-defined]

    @functools.wraps(inner)
    def counted(*args: Any, **kwargs: Any) -> None:
        INPUTS_TRIED[test.__name__] += 1
        inner(*args, **kwargs)

    test.hypothesis.inner_test = counted  # type: ignore[attr-defined]
    return FUZZ_SETTINGS(test)


@pytest.fixture(scope="module", autouse=True)
def count_inputs_tried(reliability: Reliability) -> Iterator[None]:
    yield
    reliability.count("fuzzing", inputs_tried=sum(INPUTS_TRIED.values()))


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def wrong_for(value: Any) -> st.SearchStrategy[Any]:
    """A JSON value of another type than `value`'s (a bool is not a number here, nor a number a bool)."""
    return json_values.filter(lambda other: type(other) is not type(value))


# ---- the definitions loader ------------------------------------------------------------------------------

TEAM = {
    "apiVersion": "nthlayer/v1",
    "kind": "Team",
    "metadata": {"name": "payments"},
    "spec": {
        "displayName": "Payments",
        "prune": True,
        "members": [
            {"email": "alice@example.com", "role": "manager"},
            {"email": "bob@example.com", "role": "responder"},
        ],
        "pagerduty": {"teamId": "PABC123", "schedules": {"primary": "Payments Primary"}},
    },
}
STANDARD = {
    "apiVersion": "nthlayer/v1",
    "kind": "Standard",
    "metadata": {"name": "critical"},
    "spec": {
        "escalation": {
            "loops": 2,
            "rules": [
                {"targets": [{"schedule": "primary"}], "escalateAfterMinutes": 5},
                {"targets": [{"schedule": "secondary"}, {"teamRole": "manager"}], "escalateAfterMinutes": 10},
            ],
        },
        "service": {"urgency": "high", "acknowledgementTimeoutMinutes": 30, "autoResolveTimeoutMinutes": 240},
    },
}
# Where a value of another type is an error. (`description` may be a string or null; every other leaf here
# has exactly one accepted type.)
TYPED_PATHS = [
    ("apiVersion",),
    ("kind",),
    ("metadata",),
    ("metadata", "name"),
    ("spec",),
    ("spec", "displayName"),
    ("spec", "prune"),
    ("spec", "members"),
    ("spec", "members", 0),
    ("spec", "members", 1, "email"),
    ("spec", "members", 0, "role"),
    ("spec", "pagerduty"),
    ("spec", "pagerduty", "teamId"),
    ("spec", "pagerduty", "schedules"),
    ("spec", "pagerduty", "schedules", "primary"),
]
# A Standard's leaves that hold one type; a timeout may also be null (off).
STANDARD_TYPED_PATHS = [
    ("metadata", "name"),
    ("spec", "escalation"),
    ("spec", "escalation", "loops"),
    ("spec", "escalation", "rules"),
    ("spec", "escalation", "rules", 1),
    ("spec", "escalation", "rules", 1, "targets"),
    ("spec", "escalation", "rules", 0, "escalateAfterMinutes"),
    ("spec", "service"),
    ("spec", "service", "urgency"),
    ("spec", "service", "acknowledgementTimeoutMinutes"),
    ("spec", "service", "autoResolveTimeoutMinutes"),
]
NULLABLE_PATHS = {
    ("spec", "service", "acknowledgementTimeoutMinutes"),
    ("spec", "service", "autoResolveTimeoutMinutes"),
}
REQUIRED_PATHS = [
    ("apiVersion",),
    ("kind",),
    ("metadata",),
    ("metadata", "name"),
    ("spec",),
    ("spec", "displayName"),
    ("spec", "members"),  # required once prune is true
    ("spec", "members", 0, "email"),
    ("spec", "members", 1, "role"),
]  # spec.pagerduty.teamId is optional: an unpinned team is matched by name
STANDARD_REQUIRED_PATHS = [
    ("metadata", "name"),
    ("spec", "escalation"),
    ("spec", "escalation", "rules"),
    ("spec", "escalation", "rules", 1, "targets"),
    ("spec", "escalation", "rules", 0, "escalateAfterMinutes"),
    ("spec", "service"),
    ("spec", "service", "urgency"),
    ("spec", "service", "acknowledgementTimeoutMinutes"),  # null is off: absent is a mistake
    ("spec", "service", "autoResolveTimeoutMinutes"),
]
DOCUMENTS = {"team": TEAM, "standard": STANDARD}


def copy_of(document: Any) -> Any:
    return json.loads(json.dumps(document))


def replaced(document: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    changed = copy_of(document)
    node = changed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return changed


def removed(document: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    changed = copy_of(document)
    node = changed
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return changed


def value_at(document: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nthlayer-fuzz-") as folder:
        yield Path(folder)


def refused(folder: Path, name: str, content: bytes) -> DefinitionsError:
    """Load a definitions folder holding one file; it must be refused with located problems."""
    for old in folder.iterdir():
        old.unlink()
    (folder / name).write_bytes(content)
    try:
        state = load_definitions(folder)
    except DefinitionsError as error:
        assert error.problems, "a refusal names at least one problem"
        for problem in error.problems:
            # A file that declares nothing is a problem of the whole folder.
            assert problem.file in (name, str(folder)) and problem.message
        return error
    raise AssertionError(f"bad definitions were accepted: {state!r}")


def test_the_unchanged_document_is_valid(scratch: Path) -> None:
    (scratch / "team.yaml").write_text(yaml.safe_dump(TEAM))
    state = load_definitions(scratch)
    assert isinstance(state, DesiredState) and [t.name for t in state.teams] == ["payments"]
    (scratch / "team.yaml").unlink()


def test_the_unchanged_standard_is_valid_beside_a_team(scratch: Path) -> None:
    (scratch / "team.yaml").write_text(yaml.safe_dump_all([TEAM, STANDARD]))
    state = load_definitions(scratch)
    assert [s.tier for s in state.standards] == ["critical"]
    (scratch / "team.yaml").unlink()


@fuzz
@given(
    data=st.data(),
    kind_and_path=st.sampled_from(
        [("team", path) for path in TYPED_PATHS] + [("standard", path) for path in STANDARD_TYPED_PATHS]
    ),
)
def test_a_value_of_the_wrong_type_is_refused_at_its_path(
    scratch: Path, data: st.DataObject, kind_and_path
) -> None:
    kind, path = kind_and_path
    document = DOCUMENTS[kind]
    value = data.draw(wrong_for(value_at(document, path)))
    if path == ("spec", "pagerduty") or (kind == "standard" and path in NULLABLE_PATHS):
        assume(value is not None)  # pagerduty: null means no pin; a timeout's null is off
    error = refused(scratch, "team.yaml", yaml.safe_dump(replaced(document, path, value)).encode())
    where = format_location(path)
    assert any(p.path == where or p.path.startswith(where + ".") for p in error.problems), error.problems


@fuzz
@given(
    kind_and_path=st.sampled_from(
        [("team", path) for path in REQUIRED_PATHS] + [("standard", path) for path in STANDARD_REQUIRED_PATHS]
    )
)
def test_a_missing_required_field_is_refused_naming_it(scratch: Path, kind_and_path) -> None:
    kind, path = kind_and_path
    error = refused(scratch, "team.yaml", yaml.safe_dump(removed(DOCUMENTS[kind], path)).encode())
    assert [p.path for p in error.problems] == [format_location(path)]
    assert f"missing required field '{path[-1]}'" in error.problems[0].message


@fuzz
@given(
    parent=st.sampled_from([(), ("metadata",), ("spec",), ("spec", "members", 1), ("spec", "pagerduty")]),
    key=st.text(min_size=1, max_size=12).filter(lambda k: k not in {"description", "prune"}),
    value=json_values,
)
def test_an_unknown_field_is_refused_naming_it(scratch: Path, parent, key: str, value: Any) -> None:
    assume(key not in value_at(TEAM, parent))
    error = refused(scratch, "team.yaml", yaml.safe_dump(replaced(TEAM, (*parent, key), value)).encode())
    assert format_location((*parent, key)) in [p.path for p in error.problems]


@fuzz
@given(content=st.binary(max_size=400))
def test_random_bytes_are_refused(scratch: Path, content: bytes) -> None:
    refused(scratch, "team.yaml", content)


@fuzz
@given(tree=json_values)
def test_any_other_yaml_tree_is_refused(scratch: Path, tree: Any) -> None:
    refused(scratch, "team.yml", yaml.safe_dump(tree).encode())


@fuzz
@given(text=st.text(max_size=300))
def test_any_text_is_refused(scratch: Path, text: str) -> None:
    refused(scratch, "team.yaml", text.encode("utf-8", errors="surrogatepass"))


@fuzz
@given(depth=st.integers(33, 600), flow=st.booleans())
def test_deep_nesting_is_refused_before_it_is_built(scratch: Path, depth: int, flow: bool) -> None:
    content = "[" * depth + "]" * depth if flow else "".join("  " * i + "- \n" for i in range(depth))
    error = refused(scratch, "team.yaml", content.encode())
    assert "deeper than 32 levels" in error.problems[0].message


@fuzz
@given(levels=st.integers(3, 12), fanout=st.integers(4, 12))
def test_an_alias_bomb_is_refused_without_expanding_it(scratch: Path, levels: int, fanout: int) -> None:
    assume(fanout**levels > 100_000)
    lines = ["a0: &a0 [x]"]
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * fanout)}]")
    error = refused(scratch, "team.yaml", "\n".join(lines).encode())
    assert "aliases expand this document to more than 100,000 values" in error.problems[0].message


@fuzz
@given(size=st.integers(1_048_577, 1_200_000))
def test_a_huge_file_is_refused_unread(scratch: Path, size: int) -> None:
    error = refused(scratch, "team.yaml", b"#" * size)
    assert "over the 1,048,576-byte limit" in error.problems[0].message


def test_a_display_name_longer_than_pagerduty_allows_is_refused(scratch: Path) -> None:
    """PagerDuty refuses a team name over 100 characters; the loader says so before any plan."""
    error = refused(
        scratch, "team.yaml", yaml.safe_dump(replaced(TEAM, ("spec", "displayName"), "P" * 101)).encode()
    )
    assert "spec.displayName" in str(error) and "100" in str(error)


# ---- PagerDuty's answers ---------------------------------------------------------------------------------

USER = {"id": "PU00001", "type": "user", "name": "Alice", "email": "alice@example.com"}
TEAM_ITEM = {"id": "PT00001", "type": "team", "name": "Payments", "description": None}
MEMBER = {"user": {"id": "PU00001", "type": "user_reference"}, "role": "manager"}
POLICY = {
    "id": "PE00001",
    "name": "Payments On-Call",
    "teams": [{"id": "PT00001", "type": "team_reference"}],
    "escalation_rules": [
        {"escalation_delay_in_minutes": 30, "targets": [{"id": "PU00001", "type": "user_reference"}]}
    ],
}


def listing(client: PagerDutyClient, collection: str) -> list[Any]:
    match collection:
        case "users":
            return client.list_users()
        case "teams":
            return client.list_teams()
        case "members":
            return client.list_team_members("PT00001")
        case _:
            return client.list_escalation_policies()


VALID_ITEMS = {"users": USER, "teams": TEAM_ITEM, "members": MEMBER, "escalation_policies": POLICY}
FIELDS = {  # the fields a client reads, and the path a broken one is named by
    "users": [("id",), ("name",), ("email",)],
    "teams": [("id",), ("name",)],
    "members": [("user",), ("user", "id"), ("role",)],
    "escalation_policies": [("id",), ("name",), ("teams",), ("escalation_rules",)],
}


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


def pagerduty(server: ScriptedServer, *replies: Reply) -> PagerDutyClient:
    server.actions[:] = list(replies)
    return PagerDutyClient(server.url, "pd-fuzz-token", max_attempts=1)


@fuzz
@given(status=st.integers(200, 599), body=json_values | st.binary(max_size=200))
def test_any_answer_to_a_listing_is_a_pagerduty_error_or_a_parsed_list(
    scripted: ScriptedServer, status: int, body: Any
) -> None:
    collection = "users"
    with pagerduty(scripted, Reply(status, body)) as client:
        try:
            users = listing(client, collection)
        except PagerDutyError as error:
            assert str(error).startswith("PagerDuty GET /users")
            return
    assert status < 300 and isinstance(body, dict) and body.get("more") is False
    assert all(isinstance(u.id, str) and u.email == u.email.lower() for u in users)


@fuzz
@given(
    data=st.data(),
    collection=st.sampled_from(sorted(FIELDS)),
    delete=st.booleans(),
)
def test_a_broken_field_of_an_item_is_named(
    scripted: ScriptedServer, data: st.DataObject, collection: str, delete: bool
) -> None:
    path = data.draw(st.sampled_from(FIELDS[collection]))
    item = VALID_ITEMS[collection]
    if delete:
        broken = removed(item, path)
    else:
        broken = replaced(item, path, data.draw(wrong_for(value_at(item, path))))
    body = {collection: [broken], "limit": 100, "offset": 0, "more": False}
    with pagerduty(scripted, Reply(200, body)) as client:
        try:
            parsed = listing(client, collection)
        except PagerDutyError as error:
            assert "does not parse" in error.message
            named = {str(part) for part in path} | {"user_id", "team_ids", "user_ids"}
            assert any(name in error.message for name in named), error.message
            return
    # Only a change PagerDuty's readers tolerate gets through: an empty list of rules or teams.
    assert collection == "escalation_policies" and path in {("teams",), ("escalation_rules",)}
    assert len(parsed) == 1


@fuzz
@given(status=st.integers(400, 599), body=json_values | st.binary(max_size=200))
def test_an_error_answer_becomes_a_pagerduty_error_with_its_status(status: int, body: Any) -> None:
    import httpx

    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.Response(status, content=content, request=httpx.Request("GET", "http://pd/users"))
    error = error_from_response(response, "GET", "/users")
    assert isinstance(error, PagerDutyError) and error.status == status
    assert f"HTTP {status}" in str(error)
    assert isinstance(error, PagerDutyAuthError) == (status == 401)
    if status == 401:
        assert "PAGERDUTY_API_TOKEN" in str(error)


@fuzz
@given(body=st.dictionaries(st.sampled_from(["users", "more", "offset", "total"]), json_values))
def test_a_page_that_does_not_paginate_is_a_pagerduty_error(body: dict[str, Any]) -> None:
    pager = OffsetPager("/users", "users")
    try:
        items = pager.accept(body)
    except PagerDutyError as error:
        assert "/users" in str(error)
        return
    assert isinstance(body["users"], list) and isinstance(body["more"], bool)
    assert all(isinstance(item, dict) for item in items)


# ---- Cortex's answers ------------------------------------------------------------------------------------

CORTEX_TEAM = {
    "id": "1",
    "teamTag": "data",
    "isArchived": False,
    "type": "CORTEX",
    "metadata": {"name": "Data Platform", "description": None},
    "cortexTeam": {
        "members": [{"email": "grace@example.com", "name": "Grace", "roles": [{"tag": "manager"}]}]
    },
}
CORTEX_FIELDS = [
    ("teamTag",),
    ("isArchived",),
    ("metadata",),
    ("metadata", "name"),
    ("cortexTeam",),
    ("cortexTeam", "members"),
    ("cortexTeam", "members", 0),
]


@fuzz
@given(body=json_values | st.binary(max_size=200))
def test_any_cortex_answer_is_a_source_error_or_teams(body: Any) -> None:
    text = body if isinstance(body, bytes) else json.dumps(body)
    try:
        teams = parse_teams(text)
        mapped = teams_from_cortex(
            teams, role_map={"manager": Role.MANAGER}, default_role=Role.RESPONDER, prune=False
        )
    except SourceError as error:
        assert str(error).startswith("Cortex ")
        return
    assert isinstance(body, dict) and isinstance(body.get("teams"), list)
    assert len(mapped) <= len(teams)


@fuzz
@given(data=st.data(), path=st.sampled_from(CORTEX_FIELDS), delete=st.booleans())
def test_a_broken_cortex_field_is_named(data: st.DataObject, path, delete: bool) -> None:
    if delete:
        assume(
            path
            in {("teamTag",), ("isArchived",), ("metadata",), ("metadata", "name"), ("cortexTeam", "members")}
        )
        broken = removed(CORTEX_TEAM, path)
    else:
        value = data.draw(wrong_for(value_at(CORTEX_TEAM, path)))
        assume(not (path == ("cortexTeam",) and value is None))  # no member list: an IdP team or none
        broken = replaced(CORTEX_TEAM, path, value)
    with pytest.raises(SourceError) as raised:
        parse_teams(json.dumps({"teams": [broken]}))
    assert "teams[0](data)." + format_location(path) in str(raised.value) or (
        path == ("teamTag",) and "teams[0].teamTag" in str(raised.value)
    )


@fuzz
@given(status=st.integers(200, 599), body=json_values | st.binary(max_size=200))
def test_any_answer_over_http_is_a_source_error_or_teams(
    scripted: ScriptedServer, status: int, body: Any
) -> None:
    scripted.actions[:] = [Reply(status, body)]
    with CortexClient(scripted.url, "cortex-fuzz-token", max_attempts=1) as client:
        try:
            teams = client.list_teams()
        except SourceError as error:
            assert str(error).startswith("Cortex GET /api/v1/teams")
            return
    assert status < 300 and isinstance(teams, list)


# ---- Slack's answers ------------------------------------------------------------------------------------


@fuzz
@given(status=st.integers(200, 599), body=json_values | st.binary(max_size=200))
def test_no_slack_answer_raises_out_of_an_announcement(
    scripted: ScriptedServer, status: int, body: Any
) -> None:
    scripted.actions[:] = [Reply(status, body)] * 3  # slack_sdk may retry a 5xx or 429
    notifier = SlackNotifier(token="xoxb-fuzz-token", base_url=scripted.url + "/api/", channel="ops")
    problem = notifier.post(text="plan applied")
    assert problem is None or problem.startswith("Slack")
    if problem is None:
        assert status == 200 and isinstance(body, dict) and body.get("ok")


# ---- a run's config, as the launchpad sends it -----------------------------------------------------------

APPROVE_FIELDS = {
    "plan_id": "plan-1",
    "approver": "alice",
    "comment": "",
    "change_ids": [],
    "allow_blast_radius": False,
}


@pytest.fixture(scope="module")
def jobs() -> dg.Definitions:
    return build_definitions({"PAGERDUTY_API_TOKEN": "pd-fuzz-token", "NTHLAYER_LEDGER_URL": "sqlite://"})


def assert_refused_before_any_run(job: dg.JobDefinition, run_config: dict[str, Any]) -> str:
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(dg.DagsterInvalidConfigError) as raised:
        job.execute_in_process(run_config=run_config, instance=instance)
    assert instance.get_runs() == [], "no run may start on config the job refuses"
    return str(raised.value)


@fuzz
@given(data=st.data(), field=st.sampled_from(sorted(APPROVE_FIELDS)))
def test_approve_plan_refuses_a_value_of_the_wrong_type_before_running(
    jobs: dg.Definitions, data: st.DataObject, field: str
) -> None:
    value = data.draw(wrong_for(APPROVE_FIELDS[field]))
    assume(value is not None or field in ("plan_id", "approver"))  # null is the default of the others
    config = {**APPROVE_FIELDS, field: value}
    message = assert_refused_before_any_run(
        jobs.resolve_job_def("approve_plan"), {"ops": {"approve": {"config": config}}}
    )
    assert field in message


@fuzz
@given(teams=json_values.filter(lambda v: not (isinstance(v, list) and all(isinstance(t, str) for t in v))))
def test_refresh_refuses_a_scope_that_is_not_a_list_of_slugs(jobs: dg.Definitions, teams: Any) -> None:
    assume(teams is not None)  # null is the default: every team
    run_config = {"resources": {"reconcile": {"config": {"teams": teams}}}}
    message = assert_refused_before_any_run(jobs.resolve_job_def("refresh"), run_config)
    assert "teams" in message


@pytest.mark.parametrize(
    ("job", "run_config"),
    [  # a token sent elsewhere, a wider pre-approval policy, a looser blast radius: the deployment's to set
        ("refresh", {"resources": {"pagerduty": {"config": {"api_url": "https://collector.example"}}}}),
        ("refresh", {"resources": {"reconcile": {"config": {"pre_approved_kinds": "remove_member"}}}}),
        ("refresh", {"resources": {"reconcile": {"config": {"max_total_removals": 100000}}}}),
        ("apply_plan", {"resources": {"pagerduty": {"config": {"api_token": {"env": "HOME"}}}}}),
    ],
)
def test_a_run_cannot_reconfigure_the_deployment(
    jobs: dg.Definitions, job: str, run_config: dict[str, Any]
) -> None:
    message = assert_refused_before_any_run(jobs.resolve_job_def(job), run_config)
    field = next(iter(next(iter(run_config["resources"].values()))["config"]))
    assert f'Received unexpected config entry "{field}"' in message, message


@pytest.mark.parametrize(
    "run_config",
    [
        {"ops": {"approve": {"config": {"plan_id": "plan-1"}}}},  # no approver
        {"ops": {"approve": {"config": {**APPROVE_FIELDS, "approvers": ["mallory"]}}}},
        {"ops": {"reject": {"config": APPROVE_FIELDS}}},  # another job's op
        {"ops": {"approve": {"config": APPROVE_FIELDS}}, "resources": {"approvers": {"config": ["mallory"]}}},
    ],
)
def test_approve_plan_refuses_config_of_another_shape(
    jobs: dg.Definitions, run_config: dict[str, Any]
) -> None:
    assert "approve_plan" in assert_refused_before_any_run(jobs.resolve_job_def("approve_plan"), run_config)
