"""Which PagerDuty team a definition writes to is never guessed: look-alike names, pins naming another team,
two definitions on one team, and an address that may have been renamed. Pure functions of desired and
observed state."""

from __future__ import annotations

import pytest

from nthlayer_pipelines.assets.pagerduty.teams.compare import TeamIdentityConflict
from nthlayer_pipelines.core.model import ChangeKind, DesiredState, FindingKind, Plan, team_name_key
from nthlayer_pipelines.core.plan import plan_to_json, render_plan_text
from nthlayer_pipelines.core.policy import ApprovalPolicy, pre_approved_changes
from nthlayer_pipelines.desired.merge import merge_sources
from tests.reliability import Reliability
from tests.unit.test_reconcile import USERS, observed, plan_of, team

EVERYTHING = ApprovalPolicy(frozenset(ChangeKind))  # as wide as NTHLAYER_PRE_APPROVED_KINDS can be


def planned_for(plan: Plan, slug: str) -> list:
    return [c for c in plan.changes if c.team == slug]


@pytest.mark.parametrize(
    "twin",
    [
        "payments",  # case
        " Payments ",  # whitespace
        "Pay\u200bments",  # a zero-width space
        "\uff30\uff41\uff59\uff4d\uff45\uff4e\uff54\uff53",  # full-width letters
    ],
)
def test_several_teams_named_like_an_unpinned_team_block_that_team_alone(
    twin: str, reliability: Reliability
) -> None:
    desired = DesiredState(
        teams=(
            team("payments", {"alice@x.io": "manager", "carol@x.io": "responder"}, display="Payments"),
            team("search", {"bob@x.io": "manager"}, display="Search"),
        )
    )
    obs = observed(USERS, {"Payments": {"alice@x.io": "manager", "mallory@x.io": "responder"}, twin: {}})
    plan = plan_of(desired, obs)
    reliability.count(
        "identity", identity_scenarios=1, changes_to_unsettled_teams=len(planned_for(plan, "payments"))
    )

    assert planned_for(plan, "payments") == []  # no member, no creation
    assert [(c.kind, c.team) for c in plan.changes] == [
        (ChangeKind.CREATE_TEAM, "search"),
        (ChangeKind.ADD_MEMBER, "search"),
    ]
    (blocking,) = plan.blocking_findings
    assert (blocking.kind, blocking.team, blocking.blocking) == (FindingKind.AMBIGUOUS_TEAM, "payments", True)
    assert blocking.detail == (
        f"2 PagerDuty teams are named like 'Payments': 'Payments' (T0), {twin!r} (T1); nothing is planned "
        "for this team until it is pinned (spec.pagerduty.teamId) or the PagerDuty teams are renamed apart"
    )
    # The teams it names are claimed by that finding, not reported again as unmanaged.
    assert [f.kind for f in plan.findings] == [FindingKind.AMBIGUOUS_TEAM]


def test_a_pin_settles_which_of_look_alike_teams_is_meant() -> None:
    """Even the higher id: the old matcher took the lowest of look-alikes without a word."""
    obs = observed(USERS, {"Payments": {"alice@x.io": "manager"}, "payments ": {"mallory@x.io": "manager"}})
    pinned = team("payments", {"alice@x.io": "manager"}, display="Payments", pagerduty_team_id="T1")
    plan = plan_of(DesiredState(teams=(pinned,)), obs)
    assert plan.blocking_findings == ()
    assert [(c.kind, c.team_id, c.email) for c in plan.changes] == [
        (ChangeKind.ADD_MEMBER, "T1", "alice@x.io"),
        (ChangeKind.REMOVE_MEMBER, "T1", "mallory@x.io"),
    ]


def test_a_blocked_team_is_rendered_first_and_distinctly() -> None:
    desired = DesiredState(teams=(team("payments", {"alice@x.io": "manager"}, display="Payments"),))
    obs = observed(USERS, {"Payments": {}, "PAYMENTS ": {}})
    plan = plan_of(desired, obs)
    text = render_plan_text(plan)
    assert text.splitlines()[:3] == [
        f"Plan {plan.id}: no changes. 1 team(s) blocked (below).",
        "",
        "Blocked (1): nothing is planned for these teams until a person settles them:",
    ]
    assert text.splitlines()[3].startswith("  !! ambiguous_team  payments: 2 PagerDuty teams are named like")
    assert "PagerDuty matches the desired state" not in text
    assert plan_to_json(plan)["findings"][0]["blocking"] is True


def test_a_pinned_team_named_otherwise_in_pagerduty_is_said_and_its_removals_wait(
    reliability: Reliability,
) -> None:
    desired = DesiredState(
        teams=(
            team(
                "payments",
                {"alice@x.io": "manager", "carol@x.io": "responder"},
                display="Payments",
                pagerduty_team_id="T0",
            ),
        )
    )
    obs = observed(USERS, {"Payments Legacy": {"alice@x.io": "manager", "mallory@x.io": "responder"}})
    plan = plan_of(desired, obs)
    (finding,) = plan.findings
    assert (finding.kind, finding.team, finding.email) == (
        FindingKind.PINNED_TEAM_NAME_MISMATCH,
        "payments",
        None,
    )
    assert finding.detail == (
        "pinned PagerDuty team T0 is named 'Payments Legacy' in PagerDuty, not 'Payments': "
        "its removals wait for a person"
    )
    approved = pre_approved_changes(plan, EVERYTHING)
    reliability.count(
        "identity",
        identity_scenarios=1,
        held_removals_pre_approved=sum(c.kind is ChangeKind.REMOVE_MEMBER for c in approved),
    )
    assert [(c.kind, c.email) for c in approved] == [(ChangeKind.ADD_MEMBER, "carol@x.io")]
    assert [c.team_name for c in plan.changes] == ["Payments Legacy", "Payments Legacy"]


def test_a_pin_whose_name_differs_only_in_case_or_width_is_no_mismatch() -> None:
    desired = DesiredState(
        teams=(team("payments", {"alice@x.io": "manager"}, display="Payments", pagerduty_team_id="T0"),)
    )
    obs = observed(USERS, {" PAYMENTS": {"alice@x.io": "manager"}})
    assert plan_of(desired, obs).findings == ()


def test_two_definitions_on_one_pagerduty_team_plan_nothing(reliability: Reliability) -> None:
    """Git's payments is pinned to the team Cortex's payments-team finds by name: whichever were planned,
    the other's members would be removed on the next refresh, and back again."""
    git = team(
        "payments",
        {"alice@x.io": "manager"},
        display="Card Payments",
        pagerduty_team_id="T0",
        source="git",
        origin="teams/payments.yaml",
    )
    cortex = team(
        "payments-team",
        {"bob@x.io": "manager"},
        display="Payments",
        source="cortex",
        origin="cortex:payments-team",
    )
    other = team("search", {"carol@x.io": "manager"}, display="Search")
    desired = merge_sources({"git": [git, other], "cortex": [cortex]}).desired
    obs = observed(USERS, {"Payments": {"alice@x.io": "manager"}})
    planned = 0
    for scope in ((), ("search",), ("payments-team",)):
        with pytest.raises(TeamIdentityConflict) as raised:
            planned += len(plan_of(desired, obs, scope=scope).changes)
        assert str(raised.value) == (
            "PagerDuty team 'Payments' (T0) is claimed by 2 definitions: "
            "payments (git, teams/payments.yaml, pinned to T0); "
            "payments-team (cortex, cortex:payments-team, named 'Payments')\n"
            "one PagerDuty team follows one definition: pin each definition to its own team "
            "(spec.pagerduty.teamId) or rename one; nothing is planned until then"
        )
    reliability.count("identity", identity_scenarios=1, changes_to_unsettled_teams=planned)


def test_two_unpinned_definitions_whose_names_look_alike_are_one_team_to_the_merge() -> None:
    """Git's 'Payments' and Cortex's full-width one would both find (or both create) one PagerDuty team:
    the merge keeps the first source's, as it does for the same slug."""
    git = team("payments", {"alice@x.io": "manager"}, display="Payments", source="git")
    cortex = team("pay", {"bob@x.io": "manager"}, display="\uff30\uff41\uff59\uff4d\uff45\uff4e\uff54\uff53")
    merged = merge_sources({"git": [git], "cortex": [cortex.model_copy(update={"source": "cortex"})]})
    assert [t.name for t in merged.desired.teams] == ["payments"]
    assert merged.overridden == ("cortex:pay overridden by git:payments",)


def test_a_removal_beside_an_unresolved_address_is_paired_and_waits(reliability: Reliability) -> None:
    desired = DesiredState(
        teams=(
            team(
                "payments", {"alice@x.io": "manager", "bob@new.example.com": "responder"}, display="Payments"
            ),
            team("search", {"carol@x.io": "manager"}, display="Search"),
        )
    )
    obs = observed(
        [*USERS, "bob@old.example.com"],
        {
            "Payments": {"alice@x.io": "manager", "bob@old.example.com": "responder"},
            "Search": {"carol@x.io": "manager", "mallory@x.io": "observer"},
        },
    )
    plan = plan_of(desired, obs)
    renames = [f for f in plan.findings if f.kind is FindingKind.POSSIBLE_EMAIL_RENAME]
    assert [(f.team, f.email, f.detail) for f in renames] == [
        (
            "payments",
            "bob@old.example.com",
            "bob@old.example.com is removed while bob@new.example.com has no PagerDuty account: "
            "if the address was renamed in PagerDuty, this removes the person",
        )
    ]
    approved = pre_approved_changes(plan, EVERYTHING)
    reliability.count(
        "identity",
        identity_scenarios=1,
        held_removals_pre_approved=sum(c.email == "bob@old.example.com" for c in approved),
    )
    # Search's removal has no unresolved address beside it: the policy may approve it.
    assert [(c.team, c.email) for c in approved] == [("search", "mallory@x.io")]


def test_team_names_compare_in_one_form() -> None:
    assert {team_name_key(n) for n in ("Payments", " PAYMENTS ", "pay\u00adments", "Pay\u200bments")} == {
        "payments"
    }
    assert team_name_key("Data  Platform") == team_name_key("data platform")
    assert team_name_key("Payments") != team_name_key("Payments EU")
