"""Generated orgs: the same arguments give the same org, every team has every role."""

import hashlib
import re

import pytest

from nthlayer_pipelines.sandbox import generate_org


def test_same_arguments_give_the_same_org() -> None:
    assert generate_org(40, 6, seed=7).to_dict() == generate_org(40, 6, seed=7).to_dict()


def test_another_seed_gives_another_org() -> None:
    first, second = generate_org(40, 6, seed=7).to_dict(), generate_org(40, 6, seed=8).to_dict()
    assert first["pagerduty"]["memberships"] != second["pagerduty"]["memberships"]
    assert {t["id"] for t in first["pagerduty"]["teams"]}.isdisjoint(
        {t["id"] for t in second["pagerduty"]["teams"]}
    )


def test_every_team_has_a_manager_a_responder_and_an_observer() -> None:
    org = generate_org(60, 10, seed=1)
    for team_id, members in org.pagerduty.memberships.items():
        assert len(members) == 10, team_id
        assert set(members.values()) == {"manager", "responder", "observer"}, team_id


def test_each_team_has_a_policy_targeting_one_of_its_managers() -> None:
    pagerduty = generate_org(25, 5, seed=2).pagerduty
    assert len(pagerduty.escalation_policies) == 25
    for team_id, members in pagerduty.memberships.items():
        (policy_id,) = pagerduty.policies_of_team(team_id)
        (target,) = pagerduty.escalation_policies[policy_id].target_user_ids
        assert members[target] == "manager"


def test_user_count_defaults_to_four_per_team_capped_at_20000() -> None:
    assert len(generate_org(10, 3).pagerduty.users) == 40
    assert len(generate_org(1, 12).pagerduty.users) == 12
    assert len(generate_org(3, 5, users=500).pagerduty.users) == 500


def test_ids_look_like_pagerdutys_and_are_all_distinct() -> None:
    pagerduty = generate_org(200, 3, seed=5).pagerduty
    ids = [*pagerduty.users, *pagerduty.teams, *pagerduty.escalation_policies]
    assert all(re.fullmatch(r"P[0-9A-Z]{6}", i) for i in ids)
    assert len(set(ids)) == len(ids) == 800 + 200 + 200


def test_generated_org_has_the_notification_channel() -> None:
    assert generate_org(1, 3).slack.resolve("#ops-changes") is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"teams": -1}, "teams must be >= 0"),
        ({"teams": 2, "members_per_team": 0}, "members_per_team must be >= 1"),
        ({"teams": 2, "members_per_team": 5, "users": 4}, "users (4) must be at least members_per_team (5)"),
    ],
)
def test_impossible_sizes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_org(**kwargs)


def test_each_team_has_a_schedule_a_two_level_policy_and_a_service_on_it() -> None:
    pagerduty = generate_org(12, 5, seed=4).pagerduty
    assert len(pagerduty.schedules) == len(pagerduty.services) == 12
    for team in pagerduty.teams_by_name:
        schedule = pagerduty.schedule_by_name(f"{team.name} Primary")
        policy = pagerduty.policy_by_name(f"{team.name} On-Call")
        service = pagerduty.service_by_name(f"{team.name} API")
        assert schedule is not None and policy is not None and service is not None
        members = list(pagerduty.memberships[team.id])
        assert schedule.user_ids == members[:3]
        assert schedule.team_ids == [team.id]
        first, second = policy.rules
        assert first.target_user_ids == [members[0]]
        assert second.target_schedule_ids == [schedule.id]
        assert service.escalation_policy_id == policy.id
        assert pagerduty.service_team_ids(service) == [team.id]
    tiers = [pagerduty.services[s].tier for s in pagerduty.services]
    assert sorted(set(tiers)) == ["critical", "high", "standard"]


def test_some_critical_services_drift_from_the_critical_acknowledgement_timeout() -> None:
    services = generate_org(24, 3, seed=4).pagerduty.services_by_name
    critical = [s.acknowledgement_timeout for s in services if s.tier == "critical"]
    assert sorted(set(critical)) == [600, 1800]
    assert critical.count(1800) == 2  # every fourth of the 8 critical services


def test_schedules_and_services_leave_the_ids_of_users_teams_and_policies_as_they_were() -> None:
    # The fingerprint of the ids this generator handed out before it made schedules and services:
    # tests and benchmarks written against those ids still hold.
    pagerduty = generate_org(50, 5, seed=3).pagerduty
    ids = " ".join([*pagerduty.users, *pagerduty.teams, *pagerduty.escalation_policies])
    assert hashlib.sha256(ids.encode()).hexdigest()[:16] == "44d5867181ed029b"


def test_an_org_past_the_listing_limit_has_most_of_its_users_on_teams() -> None:
    # 500 teams of 60 seats for 12,000 users: the generator's way to a large account that teams mostly cover.
    pagerduty = generate_org(500, 60, users=12_000, seed=6).pagerduty
    on_teams = {u for members in pagerduty.memberships.values() for u in members}
    assert len(pagerduty.users) == 12_000 > 10_000
    assert len(on_teams) > 0.9 * len(pagerduty.users)
