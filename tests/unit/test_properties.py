"""Properties of planning over random orgs: several teams, random roles, prune on and off, emails in any
case, people without a PagerDuty account, teams pinned by id (present or gone, named alike or not), teams no
definition claims, and PagerDuty teams whose names look like another's (case, whitespace, full-width letters,
zero-width spaces).

A reference interpreter carries a plan out over the observed tables, checking each change against the state
it meets, so "applying the plan converges" is proved without the apply engine. tests/unit/test_reconcile.py
holds the simpler versions over one-case emails and name-matched teams.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nthlayer_pipelines.assets.pagerduty.teams.compare import compute_divergences
from nthlayer_pipelines.core.model import (
    ChangeKind,
    DesiredState,
    FindingKind,
    Member,
    Plan,
    Role,
    SourceError,
    Team,
    team_name_key,
)
from nthlayer_pipelines.core.plan import build_plan
from nthlayer_pipelines.core.policy import ApprovalPolicy, pre_approved_changes
from nthlayer_pipelines.desired.merge import merge_sources
from nthlayer_pipelines.resources.pagerduty.observed import (
    ObservedState,
    memberships_frame,
    teams_frame,
    users_frame,
)
from tests.reliability import Reliability

SLUGS = ("alpha", "bravo", "charlie", "delta")
PEOPLE = tuple(f"p{i}@x.io" for i in range(8))  # each has a PagerDuty account, user id U<i>
GHOSTS = ("ghost0@x.io", "ghost1@x.io")  # declared, but without a PagerDuty account
UNMANAGED = ("Legacy Ops", "Old Search")  # PagerDuty teams no definition claims
FULL_WIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})
LOOK_ALIKES = (  # another PagerDuty team's name that reads as the same name
    lambda name: f"  {name} ",
    lambda name: name.translate(FULL_WIDTH),
    lambda name: name.replace(" ", " \u200b"),
)
ROLES = tuple(Role)
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Roster = dict[str, str]  # user id -> role


def display_name(slug: str) -> str:
    return f"Team {slug.title()}"


@st.composite
def any_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


@st.composite
def rosters(draw: st.DrawFn, people: tuple[str, ...]) -> dict[str, Role]:
    chosen = draw(st.lists(st.sampled_from(people), unique=True, max_size=len(people)))
    return {email: draw(st.sampled_from(ROLES)) for email in chosen}


@dataclass(frozen=True)
class Org:
    """One random scenario: what PagerDuty holds and what the definitions declare."""

    observed: ObservedState
    desired: DesiredState
    team_ids: dict[str, str]  # PagerDuty name -> team id, as observed
    rosters: dict[str, Roster]  # team id -> roster, as observed
    pins: dict[str, str | None]  # desired slug -> pinned id (possibly one PagerDuty lacks)
    twins: dict[str, str]  # slug -> id of a second PagerDuty team named like the slug's


@st.composite
def orgs(draw: st.DrawFn) -> Org:
    # PagerDuty: every person's account (emails in any case), some of the slugs' teams, unmanaged teams.
    users = [
        {"user_id": f"U{i}", "email": draw(any_case(email)), "name": f"Person {i}"}
        for i, email in enumerate(PEOPLE)
    ]
    present = draw(st.lists(st.sampled_from(SLUGS), unique=True))
    unmanaged = draw(st.lists(st.sampled_from(UNMANAGED), unique=True))
    twinned = draw(st.lists(st.sampled_from(present), unique=True)) if present else []
    twin_names = {slug: draw(st.sampled_from(LOOK_ALIKES))(display_name(slug)) for slug in twinned}
    pd_names = (
        [draw(any_case(display_name(slug))) for slug in present] + unmanaged + list(twin_names.values())
    )
    team_ids = {name: f"PT{index:05d}" for index, name in enumerate(pd_names)}
    observed_rosters = {
        team_id: {f"U{PEOPLE.index(e)}": r.value for e, r in draw(rosters(PEOPLE)).items()}
        for team_id in team_ids.values()
    }
    observed = ObservedState(
        users=users_frame(users),
        teams=teams_frame([{"team_id": i, "name": n, "description": ""} for n, i in team_ids.items()]),
        memberships=memberships_frame(
            [
                {"team_id": team_id, "user_id": user_id, "role": role}
                for team_id, roster in observed_rosters.items()
                for user_id, role in roster.items()
            ]
        ),
    )

    # Definitions: some slugs, members with and without accounts, prune per team, some pinned by id.
    declared = draw(st.lists(st.sampled_from(SLUGS), unique=True, min_size=1))
    teams, pins = [], {}
    for slug in declared:
        own_id = next((i for n, i in team_ids.items() if n.casefold() == display_name(slug).casefold()), None)
        pin_choices: list[str | None] = [None, f"PGONE{SLUGS.index(slug)}00"]
        if own_id is not None:
            pin_choices.append(own_id)
        pin = draw(st.sampled_from(pin_choices))
        # A team pinned by id may carry another name: the pin wins over the name.
        name = f"Renamed {slug}" if pin is not None and draw(st.booleans()) else display_name(slug)
        members = draw(rosters(PEOPLE + GHOSTS))
        teams.append(
            Team(
                name=slug,
                display_name=name,
                members=tuple(
                    Member(email=draw(any_case(email)), role=role) for email, role in sorted(members.items())
                ),
                prune=draw(st.booleans()),
                pagerduty_team_id=pin,
            )
        )
        pins[slug] = pin
    desired = DesiredState(teams=tuple(sorted(teams, key=lambda t: t.name)), sources=("git",))
    twins = {slug: team_ids[name] for slug, name in twin_names.items()}
    return Org(observed, desired, team_ids, observed_rosters, pins, twins)


def plan_of(desired: DesiredState, observed: ObservedState) -> Plan:
    return build_plan(compute_divergences(desired, observed), desired)


# ---- the reference interpreter -----------------------------------------------------------------------


@dataclass
class PagerDutyTables:
    """The observed tables as plain dicts, to carry a plan out on."""

    names: dict[str, str]  # team id -> name
    rosters: dict[str, Roster]  # team id -> {user id: role}
    emails: dict[str, str]  # user id -> email, lowercased

    @classmethod
    def of(cls, observed: ObservedState) -> PagerDutyTables:
        rosters: dict[str, Roster] = {str(t): {} for t in observed.teams["team_id"]}
        for row in observed.memberships.itertuples():
            rosters[row.team_id][row.user_id] = row.role
        return cls(
            names=dict(zip(observed.teams["team_id"], observed.teams["name"], strict=True)),
            rosters=rosters,
            emails=dict(zip(observed.users["user_id"], observed.users["email"], strict=True)),
        )

    def observed(self, like: ObservedState) -> ObservedState:
        return ObservedState(
            users=like.users,
            teams=teams_frame([{"team_id": i, "name": n, "description": ""} for i, n in self.names.items()]),
            memberships=memberships_frame(
                [
                    {"team_id": team_id, "user_id": user_id, "role": role}
                    for team_id, roster in self.rosters.items()
                    for user_id, role in roster.items()
                ]
            ),
        )


def carry_out(plan: Plan, observed: ObservedState) -> PagerDutyTables:
    """Apply the plan in order, asserting each change meets the state it was planned against."""
    tables = PagerDutyTables.of(observed)
    created: dict[str, str] = {}  # desired slug -> id of the team the plan created
    for change in plan.changes:
        if change.kind is ChangeKind.CREATE_TEAM:
            assert change.team_id is None and change.team not in created
            assert team_name_key(change.team_name) not in {team_name_key(n) for n in tables.names.values()}
            created[change.team] = team_id = f"NEW-{change.team}"
            tables.names[team_id] = change.team_name
            tables.rosters[team_id] = {}
            continue
        team_id = change.team_id or created[change.team]
        roster = tables.rosters[team_id]
        assert change.user_id is not None and tables.emails[change.user_id] == change.email
        current = roster.get(change.user_id)
        if change.kind is ChangeKind.ADD_MEMBER:
            assert current is None and change.from_role is None and change.role is not None
            roster[change.user_id] = change.role.value
        elif change.kind is ChangeKind.SET_ROLE:
            assert current == change.from_role.value and change.role is not None
            assert change.role.value != current
            roster[change.user_id] = change.role.value
        else:
            assert current == change.from_role.value and change.role is None
            del roster[change.user_id]
    return tables


def resolved_roster(team: Team, emails: dict[str, str]) -> Roster:
    """The team's declared members that have a PagerDuty account, by user id."""
    user_ids = {email: user_id for user_id, email in emails.items()}
    return {user_ids[m.email]: m.role.value for m in team.members if m.email in user_ids}


def is_ambiguous(org: Org, team: Team) -> bool:
    """An unpinned team whose name a look-alike PagerDuty team also carries."""
    return org.pins[team.name] is None and team.name in org.twins


def pagerduty_team_of(org: Org, team: Team, after: PagerDutyTables) -> str | None:
    """Where the desired team lives once the plan is carried out; None for a pin PagerDuty lacks."""
    pin = org.pins[team.name]
    if pin is not None:
        return pin if pin in org.rosters else None
    return next(i for i, n in after.names.items() if n.casefold() == team.display_name.casefold())


# ---- properties ----------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(org=orgs())
def test_carrying_out_the_plan_yields_the_desired_rosters(org: Org) -> None:
    plan = plan_of(org.desired, org.observed)
    after = carry_out(plan, org.observed)
    claimed: set[str] = set()
    for team in org.desired.teams:
        if is_ambiguous(org, team):
            assert not [c for c in plan.changes if c.team == team.name], "an ambiguous name is never guessed"
            continue
        team_id = pagerduty_team_of(org, team, after)
        if team_id is None:
            assert not [c for c in plan.changes if c.team == team.name]
            assert (FindingKind.MISSING_PINNED_TEAM, team.name) in {(f.kind, f.team) for f in plan.findings}
            continue
        claimed.add(team_id)
        want = resolved_roster(team, after.emails)
        held = after.rosters[team_id]
        before = org.rosters.get(team_id, {})
        if team.prune:
            assert held == want
        else:
            assert held.items() >= want.items()
            # Members nobody declared keep their place and their role.
            assert {u: r for u, r in held.items() if u not in want} == {
                u: r for u, r in before.items() if u not in want
            }
    for team_id, roster in org.rosters.items():
        if team_id not in claimed:
            assert after.rosters[team_id] == roster, "a team no definition claims is never touched"
    creations = {f"NEW-{c.team}" for c in plan.changes if c.kind is ChangeKind.CREATE_TEAM}
    assert set(after.names) - set(org.rosters) == creations


@PROPERTY_SETTINGS
@given(org=orgs())
def test_team_identity_is_never_guessed(org: Org, reliability: Reliability) -> None:
    """A name several PagerDuty teams carry plans nothing for its team and says which teams, by name and
    id; a pin whose PagerDuty name is another's is said, and no policy pre-approves a removal from it."""
    plan = plan_of(org.desired, org.observed)
    blocked = {f.team: f for f in plan.blocking_findings}
    ambiguous = [t for t in org.desired.teams if is_ambiguous(org, t)]
    reliability.count(
        "identity",
        identity_scenarios=len(ambiguous),
        changes_to_unsettled_teams=sum(1 for c in plan.changes if c.team in {t.name for t in ambiguous}),
    )
    assert set(blocked) == {t.name for t in ambiguous}
    for team in ambiguous:
        original = next(i for n, i in org.team_ids.items() if n.casefold() == team.display_name.casefold())
        names = {i: n for n, i in org.team_ids.items()}
        for team_id in (original, org.twins[team.name]):
            assert f"{names[team_id]!r} ({team_id})" in blocked[team.name].detail
    mismatched = {
        t.name
        for t in org.desired.teams
        if t.pagerduty_team_id in org.rosters
        and team_name_key(next(n for n, i in org.team_ids.items() if i == t.pagerduty_team_id))
        != team_name_key(t.display_name)
    }
    assert {f.team for f in plan.findings if f.kind is FindingKind.PINNED_TEAM_NAME_MISMATCH} == mismatched
    approved = pre_approved_changes(plan, ApprovalPolicy(frozenset(ChangeKind)))
    assert not [c for c in approved if c.kind is ChangeKind.REMOVE_MEMBER and c.team in mismatched]


@PROPERTY_SETTINGS
@given(org=orgs())
def test_a_plan_carried_out_leaves_nothing_to_plan(org: Org) -> None:
    after = carry_out(plan_of(org.desired, org.observed), org.observed)
    assert plan_of(org.desired, after.observed(org.observed)).changes == ()


@PROPERTY_SETTINGS
@given(org=orgs(), seed=st.integers(0, 2**32 - 1))
def test_planning_is_deterministic_whatever_the_order_of_rows_and_members(org: Org, seed: int) -> None:
    plan = plan_of(org.desired, org.observed)
    assert plan == plan_of(org.desired, org.observed)

    shuffle = random.Random(seed)

    def shuffled(frame: pd.DataFrame) -> pd.DataFrame:
        order = list(range(len(frame)))
        shuffle.shuffle(order)
        return frame.iloc[order].reset_index(drop=True)

    observed = ObservedState(
        shuffled(org.observed.users), shuffled(org.observed.teams), shuffled(org.observed.memberships)
    )
    reordered = DesiredState(
        teams=tuple(
            team.model_copy(update={"members": tuple(shuffle.sample(team.members, len(team.members)))})
            for team in shuffle.sample(org.desired.teams, len(org.desired.teams))
        ),
        sources=org.desired.sources,
    )
    assert plan_of(reordered, observed) == plan


def image_of(desired: DesiredState, org: Org) -> ObservedState:
    """PagerDuty holding exactly what is declared (pinned teams under their ids, every declared member
    with an account in the declared role), beside the unmanaged teams and every account."""
    tables = PagerDutyTables.of(org.observed)
    names = {i: n for i, n in tables.names.items() if n in UNMANAGED}
    rosters = {i: tables.rosters[i] for i in names}
    for team in desired.teams:
        team_id = team.pagerduty_team_id or f"PX{team.name.upper()}"
        names[team_id] = team.display_name.upper()  # matched ignoring case
        rosters[team_id] = resolved_roster(team, tables.emails)
    return PagerDutyTables(names, rosters, tables.emails).observed(org.observed)


@PROPERTY_SETTINGS
@given(org=orgs())
def test_the_plan_of_the_desired_state_against_itself_is_empty(org: Org) -> None:
    plan = plan_of(org.desired, image_of(org.desired, org))
    assert plan.changes == ()
    assert {f.kind for f in plan.findings} <= {FindingKind.UNRESOLVED_USER, FindingKind.UNMANAGED_TEAM}


@PROPERTY_SETTINGS
@given(org=orgs())
def test_removals_touch_only_declared_pruned_teams_and_only_undeclared_members(org: Org) -> None:
    plan = plan_of(org.desired, org.observed)
    declared = {team.name: team for team in org.desired.teams}
    for change in plan.changes:
        if change.kind is not ChangeKind.REMOVE_MEMBER:
            continue
        team = declared[change.team]
        assert team.prune
        assert change.email not in {m.email for m in team.members}
        assert change.team_id in org.rosters and change.user_id in org.rosters[change.team_id]


@PROPERTY_SETTINGS
@given(
    org=orgs(),
    in_cortex=st.lists(st.booleans(), min_size=len(SLUGS), max_size=len(SLUGS)),
    also_in_cortex=st.lists(st.booleans(), min_size=len(SLUGS), max_size=len(SLUGS)),
)
def test_merged_sources_plan_only_what_the_winning_definitions_say(
    org: Org, in_cortex: list[bool], also_in_cortex: list[bool]
) -> None:
    """Teams split over Git and Cortex; Cortex also lists some of Git's teams as empty and pruned. Git wins
    them under the default precedence, so the plan is the plan of Git's teams and Cortex's own: the empty
    copies remove nobody, and no team outside the merged state is written to."""
    git = [t for t in org.desired.teams if not in_cortex[SLUGS.index(t.name)]]
    cortex = [t.model_copy(update={"source": "cortex"}) for t in org.desired.teams if t not in git]
    decoys = [
        t.model_copy(update={"source": "cortex", "members": (), "prune": True})
        for t in git
        if also_in_cortex[SLUGS.index(t.name)]
    ]
    merged = merge_sources({"git": git or None, "cortex": (cortex + decoys) or None}).desired
    assert [(t.name, t.members, t.prune) for t in merged.teams] == [
        (t.name, t.members, t.prune) for t in org.desired.teams
    ]
    plan = plan_of(merged, org.observed)
    assert plan == plan_of(org.desired, org.observed)
    assert {c.team for c in plan.changes} <= {t.name for t in merged.teams}


@PROPERTY_SETTINGS
@given(org=orgs(), failed=st.sampled_from(["git", "cortex"]))
def test_a_source_that_answers_nothing_leaves_no_plan_to_make(org: Org, failed: str) -> None:
    """An enabled source with no teams is an error, never an empty desired state: no plan exists, so no
    removal from the teams it declared can be planned."""
    teams = list(org.desired.teams)
    answers = {"git": teams, "cortex": [t.model_copy(update={"source": "cortex"}) for t in teams]}
    answers[failed] = []
    with pytest.raises(SourceError, match=f"source '{failed}' returned no teams"):
        merge_sources(answers)
