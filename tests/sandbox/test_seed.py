"""Seed files: a good one becomes an org, a bad one is refused naming the file, the field and the reason."""

from pathlib import Path

import pytest

from nthlayer_pipelines.sandbox import SeedError, load_seed

GOOD_SEED = """
pagerduty:
  users:
    - {name: Alice Example, email: alice@example.com, role: user}
    - {name: Bob Example, email: bob@example.com, id: PBOB123}
  teams:
    - name: Payments
      description: Money
      members:
        - {email: alice@example.com, role: manager}
        - {email: BOB@example.com, role: responder}
  escalation_policies:
    - {name: Payments On-Call, teams: [Payments], targets: [alice@example.com]}
cortex:
  teams:
    - tag: data
      name: Data Platform
      description: ""
      archived: false
      members:
        - {email: grace@example.com, name: Grace, roles: [oncall-manager, {tag: lead, name: Tech Lead}]}
slack:
  channels: [ops-changes, {name: incidents, id: C0INCIDENT}]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seed.yaml"
    path.write_text(text)
    return path


def test_a_good_seed_becomes_an_org(tmp_path: Path) -> None:
    org = load_seed(write(tmp_path, GOOD_SEED))

    pagerduty = org.pagerduty
    payments = pagerduty.team_by_name("Payments")
    bob = pagerduty.user_by_email("bob@example.com")
    assert bob.id == "PBOB123"
    assert (payments.name, payments.description) == ("Payments", "Money")
    assert {pagerduty.users[u].email: r for u, r in pagerduty.memberships[payments.id].items()} == {
        "alice@example.com": "manager",
        "bob@example.com": "responder",
    }
    (policy,) = pagerduty.escalation_policies.values()
    assert (policy.name, policy.team_ids) == ("Payments On-Call", [payments.id])
    assert policy.target_user_ids == {pagerduty.user_by_email("alice@example.com").id}

    data = org.cortex.find("data")
    assert [(r.tag, r.name) for r in data.members[0].roles] == [
        ("oncall-manager", "Oncall Manager"),
        ("lead", "Tech Lead"),
    ]
    assert org.slack.resolve("incidents") == "C0INCIDENT"
    assert org.slack.resolve("#ops-changes") is not None


def test_a_seed_may_pin_the_accounts_subdomain_else_each_load_is_a_new_account(tmp_path: Path) -> None:
    unpinned = write(tmp_path, GOOD_SEED)
    first, second = load_seed(unpinned).pagerduty, load_seed(unpinned).pagerduty
    assert first.subdomain != second.subdomain
    assert all(p.subdomain.startswith("sandbox-") for p in (first, second))
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(GOOD_SEED.replace("pagerduty:\n", "pagerduty:\n  subdomain: acme-corp\n", 1))
    assert [load_seed(pinned).pagerduty.subdomain for _ in range(2)] == ["acme-corp", "acme-corp"]


def test_an_empty_seed_is_an_empty_org(tmp_path: Path) -> None:
    org = load_seed(write(tmp_path, ""))
    assert org.to_dict() == {
        "pagerduty": {"users": [], "teams": [], "memberships": [], "escalation_policies": []},
        "cortex": {"teams": []},
        "slack": {"channels": [], "messages": []},
    }


USERS = "pagerduty:\n  users:\n    - {name: Alice, email: alice@example.com}\n"


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("- a list", "(top level)", "expected a mapping, got a list"),
        ("pagerdooty: {}", "(top level)", "unknown key 'pagerdooty' (allowed: cortex, pagerduty, slack)"),
        ("pagerduty:\n  users: {}", "pagerduty.users", "expected a list, got a mapping"),
        (
            "pagerduty:\n  subdomain: Acme Corp",
            "pagerduty.subdomain",
            "'Acme Corp' is not an account subdomain (lowercase letters, digits and inner hyphens, as in "
            "acme for https://acme.pagerduty.com)",
        ),
        ("pagerduty:\n  subdomain: 7", "pagerduty.subdomain", "expected a non-empty string, got a number"),
        ("pagerduty:\n  users:\n    - {name: A}", "pagerduty.users[0].email", "is required"),
        (
            "pagerduty:\n  users:\n    - {name: A, email: not-an-email}",
            "pagerduty.users[0].email",
            "'not-an-email' is not an email address",
        ),
        (
            "pagerduty:\n  users:\n    - {name: A, email: a@example.com, role: boss}",
            "pagerduty.users[0].role",
            "'boss' is not one of admin, limited_user, observer, owner, read_only_user, restricted_access, "
            "read_only_limited_user, user",
        ),
        (
            "pagerduty:\n  users:\n    - {name: A, email: a@example.com, id: X123}",
            "pagerduty.users[0].id",
            "'X123' is not a PagerDuty id (P and 6 of 0-9, A-Z)",
        ),
        (
            USERS + "    - {name: Alice Again, email: ALICE@example.com}",
            "pagerduty.users[1].email",
            "ALICE@example.com is already used by another user",
        ),
        (
            USERS + "  teams:\n    - {name: T, members: [{email: zed@example.com, role: manager}]}",
            "pagerduty.teams[0].members[0].email",
            "no user with email zed@example.com in pagerduty.users",
        ),
        (
            USERS + "  teams:\n    - {name: T, members: [{email: alice@example.com, role: boss}]}",
            "pagerduty.teams[0].members[0].role",
            "'boss' is not one of observer, responder, manager",
        ),
        (
            USERS + "  teams:\n    - {name: T, members: [{email: alice@example.com}]}",
            "pagerduty.teams[0].members[0].role",
            "is required",
        ),
        (
            USERS + "  teams:\n    - {name: T}\n    - {name: t}",
            "pagerduty.teams[1].name",
            "a team named 't' is already declared",
        ),
        (
            USERS + "  escalation_policies:\n    - {name: EP, teams: [Nope], targets: [alice@example.com]}",
            "pagerduty.escalation_policies[0].teams[0]",
            "no team named 'Nope' in pagerduty.teams",
        ),
        (
            USERS + "  escalation_policies:\n    - {name: EP, targets: []}",
            "pagerduty.escalation_policies[0].targets",
            "an escalation rule needs 1 to 10 targets",
        ),
        (
            "cortex:\n  teams:\n    - {tag: Data Team, name: D}",
            "cortex.teams[0].tag",
            "'Data Team' is not a tag (lowercase letters, digits, . _ -)",
        ),
        (
            "cortex:\n  teams:\n    - {tag: d, name: D, archived: maybe}",
            "cortex.teams[0].archived",
            "expected true or false, got 'maybe'",
        ),
        (
            "cortex:\n  teams:\n    - {tag: d, name: D, members: [{email: g@example.com, roles: [7]}]}",
            "cortex.teams[0].members[0].roles[0]",
            "expected a mapping, got a number",
        ),
        ("cortex: []", "cortex", "expected a mapping, got a list"),
        ("slack:\n  channels: [ops, '#ops']", "slack.channels[1]", "channel '#ops' is already declared"),
    ],
)
def test_a_bad_seed_names_file_field_and_reason(tmp_path: Path, text: str, field: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SeedError) as refused:
        load_seed(path)
    assert (refused.value.source, refused.value.field, refused.value.reason) == (str(path), field, reason)
    assert str(refused.value) == f"{path}: {field}: {reason}"


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "pagerduty:\n  users: [\n    {name: A\n")
    with pytest.raises(SeedError) as refused:
        load_seed(path)
    assert refused.value.field == "line 4, column 1"
    assert refused.value.reason.startswith("not valid YAML: ")


def test_a_missing_file_is_a_seed_error(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match=r"missing\.yaml: cannot read the file: No such file or directory"):
        load_seed(tmp_path / "missing.yaml")
