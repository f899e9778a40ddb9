"""Incremental refresh of services, escalation policies and schedules, pure: what audit records ask for,
what the answers ask for in turn, how they fold into the stored snapshot, and which account it is."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nthlayer_pipelines.resources.pagerduty.models import (
    AuditRecord,
    ObservedServices,
    PagerDutyEscalationPolicy,
    PagerDutySchedule,
    PagerDutyService,
)
from nthlayer_pipelines.resources.pagerduty.services_incremental import (
    ROOT_RESOURCE_TYPES,
    KindRead,
    ObjectKind,
    ServicesAccount,
    ServicesAnswers,
    ServicesRead,
    dependent_reads,
    merge_services,
    plan_services_read,
    services_account_mismatch,
    services_total_mismatch,
    subdomains_of,
)
from nthlayer_pipelines.sandbox import SandboxOrg
from nthlayer_pipelines.sandbox.pagerduty.audit import AuditOrigin
from nthlayer_pipelines.sandbox.pagerduty.models import USER_TARGET, EscalationTarget, RuleSpec
from nthlayer_pipelines.sandbox.pagerduty.org import LayerSpec
from nthlayer_pipelines.sandbox.pagerduty.render import Renderer
from tests.unit.test_incremental import NOW, OURS, SINCE, record, replay

SERVICE, POLICY, SCHEDULE = ObjectKind.SERVICE, ObjectKind.ESCALATION_POLICY, ObjectKind.SCHEDULE
HTML = "https://acme.pagerduty.com"


def service(service_id: str, policy_id: str, name: str | None = None, **fields: Any) -> PagerDutyService:
    return PagerDutyService(
        id=service_id,
        name=name or f"Service {service_id}",
        escalation_policy_id=policy_id,
        html_url=f"{HTML}/service-directory/{service_id}",
        **fields,
    )


def policy(
    policy_id: str, *, teams: tuple[str, ...] = (), services: tuple[str, ...] = ()
) -> PagerDutyEscalationPolicy:
    return PagerDutyEscalationPolicy(
        id=policy_id,
        name=f"Policy {policy_id}",
        team_ids=teams,
        service_ids=services,
        html_url=f"{HTML}/escalation_policies/{policy_id}",
    )


def schedule(schedule_id: str, name: str | None = None) -> PagerDutySchedule:
    return PagerDutySchedule(
        id=schedule_id, name=name or f"Schedule {schedule_id}", html_url=f"{HTML}/schedules/{schedule_id}"
    )


PREVIOUS = ObservedServices(
    services=(service("PS1", "PE1"), service("PS2", "PE1"), service("PS3", "PE2")),
    policies=(policy("PE1", teams=("PT1",), services=("PS1", "PS2")), policy("PE2", services=("PS3",))),
    schedules=(schedule("PC1"),),
)


def changed(kind: str, object_id: str, *names: str, action: str = "update", **options: Any) -> AuditRecord:
    fields = [{"name": name, "value": "x"} for name in names]
    return record((kind, object_id), action=action, fields=fields, **options)


def plan(records: list[AuditRecord], **options: Any) -> ServicesRead:
    return plan_services_read(records, own_token_suffixes=[OURS[-4:]], since=SINCE, **options)


def test_the_refresh_reads_the_records_of_services_policies_and_schedules() -> None:
    assert ROOT_RESOURCE_TYPES == ("services", "escalation_policies", "schedules")
    assert [kind.reference_type for kind in ObjectKind] == [
        "service_reference",
        "escalation_policy_reference",
        "schedule_reference",
    ]


# ---- what a batch of records asks for ------------------------------------------------------------------


def test_each_object_a_record_names_is_read_again_once() -> None:
    records = [
        changed("service", "PS1", "acknowledgement_timeout"),
        changed("service", "PS1", "auto_resolve_timeout"),
        changed("escalation_policy", "PE1", "num_loops"),
        record(("escalation_policy", "PE2"), resource=("escalation_rule", "PR1"), fields=[{"name": "x"}]),
        changed("schedule", "PC9", "name", action="create"),
    ]
    read = plan(list(reversed(records)))  # PagerDuty lists newest first; order does not matter
    assert read.kinds == {
        SERVICE: KindRead(reads=frozenset({"PS1"})),
        POLICY: KindRead(reads=frozenset({"PE1", "PE2"})),
        SCHEDULE: KindRead(reads=frozenset({"PC9"})),
    }
    assert read.record_count == 5 and not read.changes_nothing
    assert read.newest_record_id == max(records, key=lambda r: (r.execution_time, r.id)).id


def test_a_deleted_object_is_dropped_without_a_read_and_a_deleted_part_reads_its_object() -> None:
    records = [
        changed("service", "PS2", "timeout"),
        changed("service", "PS2", "name", action="delete", at=NOW - timedelta(minutes=10)),
        record(("service", "PS3"), action="delete", resource=("integration", "PI1")),
    ]
    read = plan(records)
    assert read.of(SERVICE) == KindRead(reads=frozenset({"PS3"}), deleted=frozenset({"PS2"}))


def test_a_change_only_to_fields_the_snapshot_does_not_hold_is_ignored() -> None:
    ui = {"type": "browser"}
    records = [
        changed("service", "PS1", "description", "support_hours", method=ui),
        changed("escalation_policy", "PE1", "on_call_handoff_notifications", method=ui),
        changed("schedule", "PC1", "time_zone", method=ui),
        changed("team", "PT1", "name", method=ui),  # another root: nothing this snapshot holds
        changed("service", "PS2", "description", "escalation_policy", method=ui),
        record(("service", "PS3"), method=ui),  # no fields named: the record does not say what changed
    ]
    read = plan(records)
    assert read.kinds == {SERVICE: KindRead(reads=frozenset({"PS2", "PS3"}))}
    assert read.ignored_record_ids == {r.id for r in records[:4]}
    assert read.foreign_record_ids == {records[4].id, records[5].id}
    assert read.own_record_ids == frozenset()


def test_our_writes_are_read_like_any_other_and_counted_apart_by_request() -> None:
    request = uuid.uuid4().hex
    ours = changed("service", "PS1", "escalation_policy", request=request)
    same_request = changed(
        "escalation_policy", "PE3", "name", action="create", request=request, method={"type": "browser"}
    )
    theirs = changed(
        "service", "PS3", "acknowledgement_timeout", method={"type": "api_token", "truncated_token": "zzzz"}
    )
    read = plan([ours, same_request, theirs])
    assert read.own_record_ids == {ours.id, same_request.id}
    assert read.foreign_record_ids == {theirs.id}
    assert read.of(SERVICE).reads == {"PS1", "PS3"} and read.of(POLICY).reads == {"PE3"}


def test_records_before_since_or_already_applied_are_left_out_and_repeats_count_once() -> None:
    old = changed("service", "PS1", "name", at=SINCE - timedelta(seconds=1))
    applied = changed("service", "PS2", "name")
    fresh = changed("service", "PS3", "name")
    read = plan([old, applied, fresh, fresh], already_applied=[applied.id])
    assert read.of(SERVICE).reads == {"PS3"}
    assert read.record_count == 1


def test_more_objects_of_a_kind_than_max_reads_lists_that_kind_again() -> None:
    records = [changed("service", f"PS{n}", "name") for n in range(4)]
    records.append(changed("schedule", "PC1", "name"))
    read = plan(records, max_reads=3)
    assert read.of(SERVICE).relist is True
    assert read.of(SCHEDULE).relist is False
    with pytest.raises(ValueError, match="max_reads must not be negative"):
        plan(records, max_reads=-1)


def test_no_records_ask_for_nothing() -> None:
    read = plan([])
    assert read.changes_nothing and read.record_count == 0 and read.newest_record_id is None


# ---- what the answers ask for in turn ------------------------------------------------------------------


def answers(**found: dict[str, Any]) -> ServicesAnswers:
    result = ServicesAnswers()
    for kind, objects in found.items():
        result.add(ObjectKind(kind), objects)
    return result


def test_a_service_that_changed_its_policy_sends_both_policies_to_be_read() -> None:
    read = plan([changed("service", "PS1", "escalation_policy")])
    got = answers(service={"PS1": service("PS1", "PE2")})
    assert dependent_reads(PREVIOUS, read, got) == {POLICY: {"PE1", "PE2"}}
    left, joined = policy("PE1", teams=("PT1",), services=("PS2",)), policy("PE2", services=("PS1", "PS3"))
    got.add(POLICY, {"PE1": left, "PE2": joined})
    assert dependent_reads(PREVIOUS, read, got) == {}, "nothing is read twice"


def test_a_service_with_the_same_policy_sends_nothing_more() -> None:
    read = plan([changed("service", "PS1", "acknowledgement_timeout")])
    got = answers(service={"PS1": service("PS1", "PE1", acknowledgement_timeout=60)})
    assert dependent_reads(PREVIOUS, read, got) == {}


def test_a_created_or_deleted_service_sends_its_policy_to_be_read() -> None:
    read = plan(
        [
            changed("service", "PS9", "name", action="create"),
            changed("service", "PS3", "name", action="delete"),
        ]
    )
    got = answers(service={"PS9": service("PS9", "PE1")})
    assert dependent_reads(PREVIOUS, read, got) == {POLICY: {"PE1", "PE2"}}
    gone = answers(service={"PS9": None})  # created and deleted since: PagerDuty answers 404
    assert dependent_reads(PREVIOUS, read, gone) == {POLICY: {"PE2"}}


def test_a_policy_whose_teams_changed_sends_its_services_to_be_read() -> None:
    read = plan([changed("escalation_policy", "PE1", "teams")])
    moved = answers(escalation_policy={"PE1": policy("PE1", teams=("PT2",), services=("PS1", "PS2"))})
    assert dependent_reads(PREVIOUS, read, moved) == {SERVICE: {"PS1", "PS2"}}
    same = answers(escalation_policy={"PE1": policy("PE1", teams=("PT1",), services=("PS1", "PS2"))})
    assert dependent_reads(PREVIOUS, read, same) == {}


def test_a_kind_listed_again_is_compared_whole_and_never_read_by_id() -> None:
    read = ServicesRead(since=SINCE, kinds={SERVICE: KindRead(relist=True)})
    listed = ServicesAnswers(listed={SERVICE: (service("PS1", "PE1"), service("PS2", "PE2"))})
    assert dependent_reads(PREVIOUS, read, listed) == {POLICY: {"PE1", "PE2"}}, "PS2 moved, PS3 is gone"
    both = ServicesAnswers(listed={SERVICE: listed.listed[SERVICE], POLICY: PREVIOUS.policies})
    assert dependent_reads(PREVIOUS, read, both) == {}


# ---- folding the answers into the stored snapshot ------------------------------------------------------


def test_merge_replaces_what_was_read_drops_what_is_gone_and_keeps_the_rest() -> None:
    read = plan(
        [
            changed("service", "PS1", "acknowledgement_timeout"),
            changed("service", "PS2", "name"),
            changed("service", "PS3", "name", action="delete"),
            changed("schedule", "PC2", "name", action="create"),
        ]
    )
    faster = service("PS1", "PE1", acknowledgement_timeout=60)
    got = answers(
        service={"PS1": faster, "PS2": None},
        schedule={"PC2": schedule("PC2", "Another rota")},
    )
    merged = merge_services(PREVIOUS, read, got)
    assert merged.services == (faster,)
    assert merged.policies == PREVIOUS.policies
    assert [s.id for s in merged.schedules] == ["PC2", "PC1"], "by name, as PagerDuty lists them"
    assert merge_services(PREVIOUS, plan([]), ServicesAnswers()) == PREVIOUS


def test_a_kind_listed_again_replaces_the_stored_one() -> None:
    read = ServicesRead(since=SINCE, kinds={SCHEDULE: KindRead(relist=True)})
    listed = ServicesAnswers(listed={SCHEDULE: (schedule("PC7"),)})
    merged = merge_services(PREVIOUS, read, listed)
    assert merged.schedules == (schedule("PC7"),)
    assert (merged.services, merged.policies) == (PREVIOUS.services, PREVIOUS.policies)


def test_the_snapshot_round_trips_through_json() -> None:
    urgent = service(
        "PS4",
        "PE1",
        auto_resolve_timeout=None,
        urgency_rule={
            "type": "use_support_hours",
            "during_support_hours": "high",
            "outside_support_hours": "low",
        },
    )
    full = ObservedServices(
        services=(*PREVIOUS.services, urgent),
        policies=(
            PagerDutyEscalationPolicy.from_api(
                {
                    "id": "PE3",
                    "name": "Rules",
                    "num_loops": 2,
                    "escalation_rules": [
                        {"escalation_delay_in_minutes": 5, "targets": [{"id": "PU1", "type": "user"}]},
                        {"escalation_delay_in_minutes": 10, "targets": [{"id": "PC1", "type": "schedule"}]},
                    ],
                    "teams": [{"id": "PT1"}],
                    "services": [{"id": "PS4"}],
                }
            ),
        ),
        schedules=PREVIOUS.schedules,
    )
    assert ObservedServices.from_json(full.to_json()) == full


# ---- which account ---------------------------------------------------------------------------------------


def test_the_stored_snapshot_is_trusted_only_for_the_account_its_objects_named() -> None:
    stored = ServicesAccount("https://api.pagerduty.com", "acme")
    assert ServicesAccount.from_json(stored.to_json()) == stored
    assert ServicesAccount.from_json({"api_url": 7}) is None
    assert ServicesAccount.from_json(None) is None
    assert subdomains_of(PREVIOUS.services) == {"acme"}
    assert services_account_mismatch(stored, "https://API.pagerduty.com/", {"acme"}) is None
    assert services_account_mismatch(stored, "https://api.pagerduty.com", {"other"}) == (
        "the stored snapshot is from another account (acme.pagerduty.com); the token now reads "
        "other.pagerduty.com"
    )
    assert services_account_mismatch(stored, "https://api.eu.pagerduty.com", {"acme"}) == (
        "the stored snapshot was read from another API URL (https://api.pagerduty.com), not "
        "https://api.eu.pagerduty.com"
    )
    assert "name no account" in (services_account_mismatch(stored, stored.api_url, set()) or "")
    assert "names no account" in (services_account_mismatch(None, stored.api_url, {"acme"}) or "")
    assert services_total_mismatch(3, PREVIOUS) is None
    assert services_total_mismatch(4, PREVIOUS) == (
        "the listing total does not add up: PagerDuty lists 4 services, the snapshot brought up to date "
        "from the audit records holds 3"
    )


# ---- against the sandbox's own records -------------------------------------------------------------------


def observed(org: SandboxOrg) -> ObservedServices:
    """What a full read of the org gives, through PagerDuty's answers."""
    pagerduty = org.pagerduty
    render = Renderer(pagerduty, "http://sandbox")
    return ObservedServices(
        services=tuple(PagerDutyService.from_api(render.service(s)) for s in pagerduty.services_by_name),
        policies=tuple(
            PagerDutyEscalationPolicy.from_api(render.policy(p)) for p in pagerduty.policies_by_name
        ),
        schedules=tuple(
            PagerDutySchedule.from_api(render.schedule(s, layers=False)) for s in pagerduty.schedules_by_name
        ),
    )


def read_again(org: SandboxOrg, previous: ObservedServices, read: ServicesRead) -> ServicesAnswers:
    """What the client reads for `read` and the rounds of `dependent_reads` after it, from the org now."""
    now = observed(org)
    by_id = {kind: {obj.id: obj for obj in kind.of(now)} for kind in ObjectKind}
    got = ServicesAnswers(listed={kind: kind.of(now) for kind in ObjectKind if read.of(kind).relist})
    wanted = {kind: read.of(kind).reads for kind in ObjectKind if not read.of(kind).relist}
    while wanted:
        for kind, ids in wanted.items():
            got.add(kind, {object_id: by_id[kind].get(object_id) for object_id in ids})
        wanted = dependent_reads(previous, read, got)
    return got


def starting_org(seed: int) -> SandboxOrg:
    org = SandboxOrg(seed)
    pagerduty = org.pagerduty
    users = [pagerduty.add_user(f"Person {n}", f"person{n}@example.com").id for n in range(4)]
    teams = [pagerduty.add_team(f"Team {n}").id for n in range(3)]
    for n, team in enumerate(teams):
        policy = pagerduty.add_escalation_policy(f"Policy {n}", [team], [users[n]])
        pagerduty.add_service(f"Service {n}", policy.id)
        pagerduty.add_service(f"Service {n}b", policy.id)
    pagerduty.add_schedule("Rota", "Etc/UTC", [LayerSpec(tuple(users[:2]))], team_ids=[teams[0]])
    return org


CHANGES = ["timeout", "timeout", "repoint", "rename_service", "describe", "add_service"]
CHANGES += ["loops", "rules", "policy_team", "add_policy", "add_schedule"]
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(CHANGES),
        st.integers(0, 7),
        st.integers(0, 7),
        st.booleans(),  # made with our token (else in the web UI)
        st.sampled_from([0, 1, 250]),  # milliseconds since the previous change
    ),
    max_size=20,
)


def apply_change(org: SandboxOrg, operation: tuple[Any, ...], serial: int) -> None:
    change, a, b, ours, _ = operation
    pagerduty = org.pagerduty
    origin = AuditOrigin.api_token(OURS, request_id=uuid.uuid4().hex) if ours else None
    services, policies = sorted(pagerduty.services), sorted(pagerduty.escalation_policies)
    teams, users = sorted(pagerduty.teams), sorted(pagerduty.users)
    service_id, policy_id = services[a % len(services)], policies[b % len(policies)]
    if change == "timeout":
        pagerduty.update_service(service_id, acknowledgement_timeout=60 * (serial + 1), origin=origin)
    elif change == "repoint":
        pagerduty.update_service(service_id, escalation_policy_id=policy_id, origin=origin)
    elif change == "rename_service":
        pagerduty.update_service(service_id, name=f"Renamed {serial}", origin=origin)
    elif change == "describe":
        pagerduty.update_service(service_id, description=f"about {serial}", origin=origin)
    elif change == "add_service":
        pagerduty.add_service(f"New service {serial}", policy_id, origin=origin)
    elif change == "loops":
        pagerduty.update_escalation_policy(policy_id, num_loops=serial % 4 + 1, origin=origin)
    elif change == "rules":
        targets = (EscalationTarget(USER_TARGET, users[a % len(users)]),)
        pagerduty.update_escalation_policy(policy_id, rules=[RuleSpec(targets, 5 + serial)], origin=origin)
    elif change == "policy_team":
        pagerduty.update_escalation_policy(policy_id, team_ids=[teams[a % len(teams)]], origin=origin)
    elif change == "add_policy":
        pagerduty.add_escalation_policy(f"New policy {serial}", [], [users[a % len(users)]], origin=origin)
    elif change == "add_schedule":
        pagerduty.add_schedule(f"New rota {serial}", "Etc/UTC", [LayerSpec((users[0],))], origin=origin)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    operations=OPERATIONS,
    seed=st.integers(0, 3),
    max_reads=st.sampled_from([0, 2, 50]),
    rng=st.randoms(use_true_random=False),
)
def test_merging_the_records_of_random_changes_equals_reading_everything_again(
    operations: list[tuple[Any, ...]], seed: int, max_reads: int, rng: random.Random
) -> None:
    org = starting_org(seed)
    before = observed(org)
    since, listed = replay(org, operations, apply_change, rng)
    read = plan_services_read(listed, own_token_suffixes=[OURS[-4:]], since=since, max_reads=max_reads)
    assert merge_services(before, read, read_again(org, before, read)) == observed(org)
    assert read.record_count == len(listed)
    ours = {r.id for r in listed if r.method.type == "api_token"}
    assert read.own_record_ids == ours - read.ignored_record_ids
