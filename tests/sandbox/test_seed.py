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
        "pagerduty": {
            "users": [],
            "teams": [],
            "memberships": [],
            "escalation_policies": [],
            "schedules": [],
            "services": [],
        },
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


SERVICES_SEED = """
pagerduty:
  users:
    - {name: Alice Example, email: alice@example.com}
    - {name: Bob Example, email: bob@example.com}
  teams:
    - {name: Payments, members: [{email: alice@example.com, role: manager}]}
  schedules:
    - {name: Payments Primary, time_zone: Europe/London, teams: [Payments],
       users: [bob@example.com, alice@example.com]}
  escalation_policies:
    - name: Payments On-Call
      teams: [Payments]
      num_loops: 1
      rules:
        - {escalation_delay_in_minutes: 10, targets: [{schedule: Payments Primary}]}
        - {targets: [{user: alice@example.com}]}
  services:
    - {name: Payment API, escalation_policy: Payments On-Call, tier: critical, urgency: high,
       acknowledgement_timeout: 1800, auto_resolve_timeout: null, status: critical}
"""


def test_a_seed_declares_schedules_policies_on_them_and_services_with_a_tier(tmp_path: Path) -> None:
    pagerduty = load_seed(write(tmp_path, SERVICES_SEED)).pagerduty
    schedule = pagerduty.schedule_by_name("Payments Primary")
    policy = pagerduty.policy_by_name("Payments On-Call")
    service = pagerduty.service_by_name("Payment API")
    assert schedule is not None and policy is not None and service is not None
    alice, bob = (pagerduty.user_by_email(e) for e in ("alice@example.com", "bob@example.com"))
    assert alice is not None and bob is not None
    assert schedule.user_ids == [bob.id, alice.id]
    assert schedule.time_zone == "Europe/London"
    assert [r.escalation_delay_in_minutes for r in policy.rules] == [10, 30]
    assert policy.rules[0].target_schedule_ids == [schedule.id]
    assert policy.target_user_ids == {alice.id}
    assert policy.num_loops == 1
    assert (service.escalation_policy_id, service.tier, service.status) == (policy.id, "critical", "critical")
    assert (service.acknowledgement_timeout, service.auto_resolve_timeout) == (1800, None)
    assert service.incident_urgency_rule == {"type": "constant", "urgency": "high"}


def test_the_example_seed_loads_with_its_services_and_their_drift() -> None:
    example = Path(__file__).parents[2] / "examples" / "sandbox-seed.yaml"
    pagerduty = load_seed(example).pagerduty
    payment = pagerduty.service_by_name("Payment API")
    assert payment is not None
    assert (payment.tier, payment.acknowledgement_timeout) == ("critical", 1800)
    policy = pagerduty.escalation_policies[payment.escalation_policy_id]
    assert policy.name == "Payments On-Call"
    primary, secondary = (pagerduty.schedule_by_name(n) for n in ("Payments Primary", "Payments Secondary"))
    assert primary is not None and secondary is not None
    assert policy.target_schedule_ids == {primary.id, secondary.id}


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            USERS + "  schedules:\n    - {name: S, users: [nobody@example.com]}",
            "pagerduty.schedules[0].users[0]",
            "no user with email nobody@example.com in pagerduty.users",
        ),
        (
            USERS + "  schedules:\n    - {name: S}",
            "pagerduty.schedules[0]",
            "give either users (one layer) or layers",
        ),
        (
            USERS + "  escalation_policies:\n    - {name: EP, targets: [{schedule: Nope}]}",
            "pagerduty.escalation_policies[0].targets[0].schedule",
            "no schedule named 'Nope' in pagerduty.schedules",
        ),
        (
            USERS + "  escalation_policies:\n    - {name: EP, rules: []}",
            "pagerduty.escalation_policies[0].rules",
            "an escalation policy needs at least one rule",
        ),
        (
            USERS + "  services:\n    - {name: S, escalation_policy: Nope}",
            "pagerduty.services[0].escalation_policy",
            "no escalation policy named 'Nope' in pagerduty.escalation_policies",
        ),
        (
            USERS
            + "  escalation_policies:\n    - {name: EP, targets: [alice@example.com]}\n"
            + "  services:\n    - {name: S, escalation_policy: EP, acknowledgement_timeout: -5}",
            "pagerduty.services[0].acknowledgement_timeout",
            "expected a non-negative integer, got -5",
        ),
        (
            USERS
            + "  escalation_policies:\n    - {name: EP, targets: [alice@example.com]}\n"
            + "  services:\n    - {name: S, escalation_policy: EP, urgency: urgent}",
            "pagerduty.services[0].urgency",
            "'urgent' is not one of high, low, severity_based",
        ),
    ],
)
def test_a_bad_services_seed_names_file_field_and_reason(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SeedError) as refused:
        load_seed(path)
    assert (refused.value.field, refused.value.reason) == (field, reason)
