"""The demo's definitions (examples/org) and its sandbox seed tell one story: each declared service is in
PagerDuty under its displayName, of the tier the definitions give it, still paging its team's own on-call
policy rather than one made to its tier's standard; each schedule a team declares is that team's there."""

from __future__ import annotations

from nthlayer_pipelines.core.model import Tier
from nthlayer_pipelines.desired.git import load_definitions
from nthlayer_pipelines.sandbox.seed import load_seed
from tests.support import EXAMPLE_SEED, REPO

DEFINITIONS = REPO / "examples" / "org"


def test_every_declared_service_is_seeded_of_its_tier_on_its_teams_own_policy() -> None:
    desired = load_definitions(DEFINITIONS)
    pagerduty = load_seed(EXAMPLE_SEED).pagerduty

    assert sorted(service.tier for service in desired.services) == [Tier.CRITICAL, Tier.CRITICAL, Tier.HIGH]
    for service in desired.services:
        team = desired.team(service.team)
        seeded = pagerduty.service_by_name(service.display_name)
        assert team is not None and seeded is not None, service.display_name
        assert seeded.tier == service.tier.value
        owner = pagerduty.team_by_name(team.display_name)
        policy = pagerduty.escalation_policies[seeded.escalation_policy_id]
        assert owner is not None and policy.team_ids == [owner.id]
        assert policy.name == f"{team.display_name} On-Call"


def test_the_schedules_a_services_standard_pages_are_declared_and_seeded_as_its_teams() -> None:
    desired = load_definitions(DEFINITIONS)
    pagerduty = load_seed(EXAMPLE_SEED).pagerduty

    for service in desired.services:
        team, standard = desired.team(service.team), desired.standard(service.tier)
        assert team is not None and standard is not None
        paged = {target.schedule for rule in standard.rules for target in rule.targets if target.schedule}
        assert paged <= {schedule.key for schedule in team.schedules}, service.name
        owner = pagerduty.team_by_name(team.display_name)
        for schedule in team.schedules:
            seeded = pagerduty.schedule_by_name(schedule.ref)
            assert owner is not None and seeded is not None, schedule.ref
            assert seeded.team_ids == [owner.id]
