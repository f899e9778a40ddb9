"""Merging sources keeps what only Git declares: services and the standards of their tiers."""

from __future__ import annotations

from pathlib import Path

from nthlayer_pipelines.core.model import Member, Role, Team, Tier
from nthlayer_pipelines.desired.git import load_definitions
from nthlayer_pipelines.desired.merge import merge_sources

GOOD = Path(__file__).parents[1] / "data" / "good_definitions"


def test_the_merged_state_carries_gits_services_and_standards_beside_cortexs_teams() -> None:
    git = load_definitions(GOOD)
    cortex = [
        Team(
            name="data",
            display_name="Data",
            members=(Member(email="zoe@example.com", role=Role.MANAGER),),
            source="cortex",
        )
    ]

    merged = merge_sources(
        {"git": git.teams, "cortex": cortex}, services=git.services, standards=git.standards
    ).desired

    assert [team.name for team in merged.teams] == ["data", "legacy-search", "payments", "platform"]
    assert merged.services == git.services
    assert merged.standards == git.standards
    assert merged.standard(Tier.CRITICAL) == git.standard(Tier.CRITICAL)
    assert merged.team("payments") == git.team("payments")  # its schedules with it
