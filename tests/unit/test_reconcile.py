"""The diff and the plan: pure functions of desired and observed state."""

from __future__ import annotations

import hashlib
import re

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nthlayer_pipelines.assets.pagerduty.teams.compare import compute_divergences
from nthlayer_pipelines.core.model import (
    Change,
    ChangeKind,
    DesiredState,
    FindingKind,
    Member,
    Plan,
    Role,
    SourceError,
    Team,
    normalize_email,
)
from nthlayer_pipelines.core.plan import build_plan, describe_change, plan_to_json, render_plan_text
from nthlayer_pipelines.desired.merge import merge_sources, parse_precedence
from nthlayer_pipelines.resources.pagerduty.observed import (
    ObservedState,
    memberships_frame,
    teams_frame,
    users_frame,
)


def team(name: str, members: dict[str, str], *, prune: bool = True, display: str | None = None, **kw) -> Team:
    return Team(
        name=name,
        display_name=display or name.title(),
        prune=prune,
        members=tuple(Member(email=e, role=Role(r)) for e, r in sorted(members.items())),
        **kw,
    )


def observed(users: list[str], teams: dict[str, dict[str, str]]) -> ObservedState:
    """Users are emails (id U<index>); teams map a PagerDuty name to {email: role}, id T<index>."""
    user_ids = {email: f"U{i}" for i, email in enumerate(users)}
    return ObservedState(
        users=users_frame([{"user_id": uid, "email": e, "name": e} for e, uid in user_ids.items()]),
        teams=teams_frame(
            [{"team_id": f"T{i}", "name": name, "description": ""} for i, name in enumerate(teams)]
        ),
        memberships=memberships_frame(
            [
                {"team_id": f"T{i}", "user_id": user_ids[email], "role": role}
                for i, members in enumerate(teams.values())
                for email, role in members.items()
            ]
        ),
    )


def plan_of(desired: DesiredState, obs: ObservedState, **kw):
    return build_plan(compute_divergences(desired, obs, **kw), desired)


USERS = ["alice@x.io", "bob@x.io", "carol@x.io", "mallory@x.io"]


def test_plan_names_adds_role_changes_and_removals_in_order() -> None:
    desired = DesiredState(
        teams=(
            team("payments", {"alice@x.io": "manager", "bob@x.io": "responder", "carol@x.io": "observer"}),
            team("search", {"bob@x.io": "manager"}),
        )
    )
    obs = observed(
        USERS, {"Payments": {"alice@x.io": "manager", "bob@x.io": "observer", "mallory@x.io": "responder"}}
    )
    plan = plan_of(desired, obs)
    assert [(c.kind, c.team, c.email, c.role, c.from_role) for c in plan.changes] == [
        (ChangeKind.CREATE_TEAM, "search", None, None, None),
        (ChangeKind.ADD_MEMBER, "payments", "carol@x.io", Role.OBSERVER, None),
        (ChangeKind.ADD_MEMBER, "search", "bob@x.io", Role.MANAGER, None),
        (ChangeKind.SET_ROLE, "payments", "bob@x.io", Role.RESPONDER, Role.OBSERVER),
        (ChangeKind.REMOVE_MEMBER, "payments", "mallory@x.io", None, Role.RESPONDER),
    ]
    assert plan.changes[1].team_id == "T0" and plan.changes[1].user_id == "U2"
    assert plan.changes[2].team_id is None  # the team is created by the plan's first change


def test_role_is_part_of_the_diff_not_just_membership() -> None:
    desired = DesiredState(teams=(team("ops", {"alice@x.io": "manager"}),))
    obs = observed(USERS, {"Ops": {"alice@x.io": "observer"}})
    (change,) = plan_of(desired, obs).changes
    assert (change.kind, change.role, change.from_role) == (ChangeKind.SET_ROLE, Role.MANAGER, Role.OBSERVER)


def test_without_prune_extra_members_are_left_alone() -> None:
    desired = DesiredState(teams=(team("ops", {"alice@x.io": "manager"}, prune=False),))
    obs = observed(USERS, {"Ops": {"alice@x.io": "manager", "mallory@x.io": "responder"}})
    assert plan_of(desired, obs).changes == ()


def test_emails_join_case_insensitively() -> None:
    desired = DesiredState(teams=(team("ops", {"Alice@X.io": "manager"}),))
    obs = observed(["ALICE@x.io"], {"ops": {"ALICE@x.io": "manager"}})
    assert plan_of(desired, obs).changes == ()


def test_unresolved_user_is_a_finding_never_a_change() -> None:
    desired = DesiredState(teams=(team("ops", {"alice@x.io": "manager", "nobody@x.io": "responder"}),))
    obs = observed(USERS, {"Ops": {"alice@x.io": "manager"}})
    plan = plan_of(desired, obs)
    assert plan.changes == ()
    assert [(f.kind, f.team, f.email) for f in plan.findings] == [
        (FindingKind.UNRESOLVED_USER, "ops", "nobody@x.io")
    ]


def test_unmanaged_team_is_a_finding_and_ignored_when_scoped() -> None:
    desired = DesiredState(teams=(team("ops", {"alice@x.io": "manager"}),))
    obs = observed(USERS, {"Ops": {"alice@x.io": "manager"}, "Legacy": {"bob@x.io": "manager"}})
    assert [(f.kind, f.team) for f in plan_of(desired, obs).findings] == [
        (FindingKind.UNMANAGED_TEAM, "Legacy")
    ]
    assert plan_of(desired, obs, scope={"ops"}).findings == ()


def test_scope_limits_changes_to_the_named_teams() -> None:
    desired = DesiredState(
        teams=(team("ops", {"alice@x.io": "manager"}), team("web", {"bob@x.io": "manager"}))
    )
    obs = observed(USERS, {"Ops": {}, "Web": {}})
    assert [c.team for c in plan_of(desired, obs, scope={"web"}).changes] == ["web"]


def test_pinned_team_id_wins_over_name_and_a_missing_pin_is_not_created() -> None:
    desired = DesiredState(
        teams=(
            team("ops", {"alice@x.io": "manager"}, display="Renamed", pagerduty_team_id="T0"),
            team("gone", {"bob@x.io": "manager"}, pagerduty_team_id="PGONE01"),
        )
    )
    obs = observed(USERS, {"Operations": {"alice@x.io": "manager"}})
    plan = plan_of(desired, obs)
    assert plan.changes == ()
    assert [(f.kind, f.team) for f in plan.findings] == [
        (FindingKind.MISSING_PINNED_TEAM, "gone"),
        (FindingKind.PINNED_TEAM_NAME_MISMATCH, "ops"),  # the pin wins, and the other name is said
    ]


def test_change_ids_are_stable_across_runs_and_plan_id_follows_changes() -> None:
    desired = DesiredState(teams=(team("ops", {"alice@x.io": "manager", "bob@x.io": "responder"}),))
    obs = observed(USERS, {"Ops": {"alice@x.io": "manager"}})
    first, second = plan_of(desired, obs), plan_of(desired, obs)
    assert first == second
    assert first.changes[0].id.startswith("chg-") and first.id.startswith("plan-")
    other = plan_of(desired, observed(USERS, {"Ops": {"bob@x.io": "responder"}}))
    assert other.id != first.id


def test_plan_json_contract() -> None:
    desired = DesiredState(teams=(team("ops", {"alice@x.io": "manager"}),))
    obs = observed(USERS, {"Ops": {"alice@x.io": "responder", "bob@x.io": "observer"}, "Spare": {}})
    payload = plan_to_json(plan_of(desired, obs))
    assert set(payload) == {"schema_version", "plan_id", "changes", "findings"}
    assert payload["schema_version"] == 2
    # Version 1's fields, unchanged, so a reader of version 1 reads version 2; the envelope's fields after.
    version_1 = {"kind", "team", "team_name", "team_id", "email", "role", "from_role"}
    assert [{k: v for k, v in c.items() if k in version_1} for c in payload["changes"]] == [
        {
            "kind": "set_role",
            "team": "ops",
            "team_name": "Ops",
            "team_id": "T0",
            "email": "alice@x.io",
            "role": "manager",
            "from_role": "responder",
        },
        {
            "kind": "remove_member",
            "team": "ops",
            "team_name": "Ops",
            "team_id": "T0",
            "email": "bob@x.io",
            "role": None,
            "from_role": "observer",
        },
    ]
    envelope = [
        {k: c[k] for k in ("provider", "resource", "action", "subject", "risk", "fields")}
        for c in payload["changes"]
    ]
    assert envelope == [
        {
            "provider": "pagerduty",
            "resource": "team_membership",
            "action": "update",
            "subject": "ops/alice@x.io",
            "risk": "privileged",
            "fields": [],
        },
        {
            "provider": "pagerduty",
            "resource": "team_membership",
            "action": "delete",
            "subject": "ops/bob@x.io",
            "risk": "destructive",
            "fields": [],
        },
    ]
    assert payload["findings"] == [
        {
            "kind": "unmanaged_team",
            "team": "Spare",
            "email": None,
            "subject": None,
            "detail": "no definition claims this team",
            "blocking": False,
        }
    ]


def test_rendered_plan_reads_like_terraform() -> None:
    desired = DesiredState(teams=(team("ops", {"alice@x.io": "manager", "carol@x.io": "observer"}),))
    obs = observed(USERS, {"Ops": {"alice@x.io": "responder", "bob@x.io": "observer"}})
    text = render_plan_text(plan_of(desired, obs))
    assert "0 to create, 1 to add, 1 to change, 1 to remove." in text
    assert "  + ops (Ops, T0): carol@x.io as observer" in text
    assert "  ~ ops (Ops, T0): alice@x.io responder -> manager" in text
    assert "  - ops (Ops, T0): bob@x.io (was observer)" in text


def test_every_change_names_the_pagerduty_team_it_writes_to() -> None:
    """By its name in PagerDuty and its id; a team the plan creates has no id yet, and says so."""
    desired = DesiredState(
        teams=(
            team("ops", {"alice@x.io": "manager"}, display="Operations", pagerduty_team_id="T0"),
            team("search", {"bob@x.io": "manager"}, display="Search"),
        )
    )
    obs = observed(USERS, {"Ops Legacy": {"alice@x.io": "responder"}})
    assert [describe_change(c) for c in plan_of(desired, obs).changes] == [
        "+ search (Search, no id yet): create the team",
        "+ search (Search, no id yet): bob@x.io as manager",
        "~ ops (Ops Legacy, T0): alice@x.io responder -> manager",  # PagerDuty's name, not displayName
    ]


# Change ids ---------------------------------------------------------------------------------------------

IDENTITY = {
    "team": "payments",
    "team_id": "PABC123",
    "team_name": "Payments",
    "email": "bob@example.com",
    "user_id": "PBOB001",
    "role": Role.RESPONDER,
}


@pytest.mark.parametrize(
    ("field", "edited"),
    [
        ("team", "billing"),
        ("team_id", "PXYZ999"),
        ("team_id", None),
        ("email", "robert@example.com"),
        ("user_id", "PMAL001"),
        ("role", Role.MANAGER),
    ],
)
def test_a_change_that_would_write_anything_else_has_another_id(field: str, edited: object) -> None:
    """An edited ledger row pointing the same change at another user or team cannot keep its id."""
    original = Change.make_id("pagerduty", ChangeKind.ADD_MEMBER, **IDENTITY)
    assert Change.make_id("pagerduty", ChangeKind.ADD_MEMBER, **{**IDENTITY, field: edited}) != original
    assert Change.make_id("pagerduty", ChangeKind.SET_ROLE, **IDENTITY) != original
    assert re.fullmatch(r"chg-[0-9a-f]{12}", original)


def test_the_team_name_counts_in_the_id_only_while_the_team_is_found_by_it() -> None:
    renamed = {**IDENTITY, "team_name": "Payments EU"}
    kind = ChangeKind.ADD_MEMBER
    # With an id the apply writes to the id: a renamed team is the same change.
    assert Change.make_id("pagerduty", kind, **renamed) == Change.make_id("pagerduty", kind, **IDENTITY)
    # Without one (a team the plan creates, and its members) the apply finds the team by name.
    unborn, unborn_renamed = {**IDENTITY, "team_id": None}, {**renamed, "team_id": None}
    assert Change.make_id("pagerduty", kind, **unborn) != Change.make_id("pagerduty", kind, **unborn_renamed)


def test_change_and_plan_ids_are_pinned() -> None:
    """These ids are what approvals, the intent log and CI readers hold on to: a change to how they are
    made must be deliberate, so it fails here first."""
    desired = DesiredState(
        teams=(
            team("payments", {"alice@x.io": "manager", "carol@x.io": "responder"}, display="Payments"),
            team("search", {"bob@x.io": "manager"}, display="Search"),
        )
    )
    obs = observed(USERS, {"Payments": {"alice@x.io": "observer", "mallory@x.io": "responder"}})
    plan = plan_of(desired, obs)
    assert [(c.id, c.kind.value, c.team, c.team_id, c.email) for c in plan.changes] == [
        ("chg-29e24479f307", "create_team", "search", None, None),
        ("chg-ff9bace5183d", "add_member", "payments", "T0", "carol@x.io"),
        ("chg-47b79b7a769b", "add_member", "search", None, "bob@x.io"),
        ("chg-1ce8b7a8e84d", "set_role", "payments", "T0", "alice@x.io"),
        ("chg-49c8821f3ba2", "remove_member", "payments", "T0", "mallory@x.io"),
    ]
    # The plan's content id covers the change ids and the role each change found (its observed state).
    assert plan.id == "plan-d62c9db17f22"
    assert plan.id == Plan.make_id(plan.changes) == plan.content_id
    assert Plan.instance_id(plan.id, 1) == plan.id
    assert Plan.instance_id(plan.id, 2) == "plan-" + hashlib.sha256(f"{plan.id}#2".encode()).hexdigest()[:12]


# Emails -------------------------------------------------------------------------------------------------


def test_internationalised_domains_join_in_one_form() -> None:
    """`user@bücher.example` and `user@xn--bcher-kva.example` are one person, whichever side writes which."""
    desired = DesiredState(
        teams=(team("ops", {"Alice@BÜCHER.example": "manager", "bob@xn--bcher-kva.example": "responder"}),)
    )
    obs = observed(
        ["alice@xn--bcher-kva.example", "BOB@Bücher.Example"],
        {"Ops": {"alice@xn--bcher-kva.example": "manager", "BOB@Bücher.Example": "responder"}},
    )
    plan = plan_of(desired, obs)
    assert plan.changes == () and plan.findings == ()
    assert Member(email="user@XN--BCHER-KVA.example", role=Role.OBSERVER).email == "user@bücher.example"
    assert list(obs.users["email"]) == ["alice@bücher.example", "bob@bücher.example"]


def test_a_domain_that_is_not_valid_idna_is_only_lowercased() -> None:
    # Refusing it is the definitions loader's job, which says where (tests/unit/test_bad_definitions.py).
    assert normalize_email(" A@Exa_mple.COM ") == "a@exa_mple.com"
    assert normalize_email("a@XN--ABC.com") == "a@xn--abc.com"
    assert list(users_frame([{"user_id": "U1", "email": "A@xn--abc.com", "name": "A"}])["email"]) == [
        "a@xn--abc.com"
    ]


def test_merge_takes_a_team_from_the_first_source_in_precedence() -> None:
    git = [team("payments", {"alice@x.io": "manager"}, source="git")]
    cortex = [
        team("payments", {"mallory@x.io": "manager"}, source="cortex"),
        team("data", {"bob@x.io": "manager"}, source="cortex"),
    ]
    result = merge_sources({"git": git, "cortex": cortex})
    assert [(t.name, t.source) for t in result.desired.teams] == [("data", "cortex"), ("payments", "git")]
    assert result.overridden == ("cortex:payments overridden by git:payments",)
    flipped = merge_sources({"git": git, "cortex": cortex}, precedence=parse_precedence("cortex,git"))
    assert flipped.desired.team("payments").source == "cortex"


def test_merge_refuses_an_enabled_source_with_no_teams_and_no_sources_at_all() -> None:
    with pytest.raises(SourceError, match="returned no teams"):
        merge_sources({"git": [team("a", {"alice@x.io": "manager"})], "cortex": []})
    with pytest.raises(SourceError, match="no desired-state source"):
        merge_sources({"git": None, "cortex": None})


def test_precedence_is_validated() -> None:
    with pytest.raises(ValueError, match="NTHLAYER_SOURCE_PRECEDENCE"):
        parse_precedence("git,ldap")


# Properties over random orgs --------------------------------------------------------------------

EMAILS = [f"u{i}@x.io" for i in range(8)]
ROLES = [r.value for r in Role]
team_members = st.dictionaries(st.sampled_from(EMAILS), st.sampled_from(ROLES), max_size=6)
orgs = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), team_members, min_size=1, max_size=4)


def desired_from(org: dict[str, dict[str, str]], prune: bool) -> DesiredState:
    return DesiredState(
        teams=tuple(team(name, members, prune=prune) for name, members in sorted(org.items()))
    )


def apply_plan(plan, obs: ObservedState) -> dict[str, dict[str, str]]:
    """A reference interpreter of a plan over an observed org, keyed by team display name."""
    emails = dict(zip(obs.users["user_id"], obs.users["email"], strict=True))
    names = dict(zip(obs.teams["team_id"], obs.teams["name"], strict=True))
    state: dict[str, dict[str, str]] = {name: {} for name in names.values()}
    for row in obs.memberships.itertuples():
        state[names[row.team_id]][emails[row.user_id]] = row.role
    for change in plan.changes:
        members = state.setdefault(change.team_name, {})
        if change.kind in (ChangeKind.ADD_MEMBER, ChangeKind.SET_ROLE):
            members[change.email] = change.role.value
        elif change.kind is ChangeKind.REMOVE_MEMBER:
            members.pop(change.email)
    return state


@settings(max_examples=150, deadline=None)
@given(desired=orgs, actual=orgs, prune=st.booleans())
def test_applying_the_plan_converges(desired, actual, prune) -> None:
    want = desired_from(desired, prune)
    obs = observed(EMAILS, {name.title(): members for name, members in actual.items()})
    plan = plan_of(want, obs)
    after = apply_plan(plan, obs)
    for name, members in desired.items():
        held = after[name.title()]
        if prune:
            assert held == members
        else:
            assert held.items() >= members.items()
    assert plan == plan_of(want, obs)  # deterministic


@settings(max_examples=100, deadline=None)
@given(desired=orgs, prune=st.booleans())
def test_plan_of_desired_against_itself_is_empty(desired, prune) -> None:
    want = desired_from(desired, prune)
    obs = observed(EMAILS, {name.title(): members for name, members in desired.items()})
    assert plan_of(want, obs).changes == ()


def test_divergences_of_a_large_org_are_vectorised() -> None:
    """100,000 memberships diff without a per-row Python loop (a smoke check of shape, not of time)."""
    n_teams, per_team = 5000, 20
    emails = [f"u{i}@x.io" for i in range(20000)]
    desired = DesiredState(
        teams=tuple(
            team(f"t{t}", {emails[(t * 7 + k) % 20000]: "responder" for k in range(per_team)})
            for t in range(n_teams)
        )
    )
    obs = ObservedState(
        users=users_frame([{"user_id": f"U{i}", "email": e, "name": e} for i, e in enumerate(emails)]),
        teams=teams_frame([{"team_id": f"T{t}", "name": f"T{t}", "description": ""} for t in range(n_teams)]),
        memberships=memberships_frame(
            [
                {
                    "team_id": f"T{t}",
                    "user_id": f"U{(t * 7 + k) % 20000}",
                    "role": "responder" if k else "manager",
                }
                for t in range(n_teams)
                for k in range(per_team)
            ]
        ),
    )
    frame = compute_divergences(desired, obs)
    assert isinstance(frame, pd.DataFrame)
    assert (frame["kind"] == "role_mismatch").sum() == n_teams
