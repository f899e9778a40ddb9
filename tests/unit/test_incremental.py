"""Incremental refresh, pure: when to read everything, what audit records ask for, how answers merge."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nthlayer_pipelines.core.model import ChangeKind, ChangeStatus, Role
from nthlayer_pipelines.resources.pagerduty.incremental import (
    IncrementalRead,
    IncrementalReadError,
    MembershipChange,
    OwnWrite,
    RefreshCursor,
    RefreshMode,
    RefreshPolicy,
    choose_refresh,
    cursor_after_full,
    cursor_after_incremental,
    merge_snapshot,
    own_writes_from_outcomes,
    plan_incremental_read,
    token_suffix,
)
from nthlayer_pipelines.resources.pagerduty.models import AuditRecord
from nthlayer_pipelines.resources.pagerduty.observed import (
    ObservedState,
    memberships_frame,
    teams_frame,
    users_frame,
)
from nthlayer_pipelines.sandbox import SandboxOrg
from nthlayer_pipelines.sandbox.pagerduty.audit import AuditOrigin, render_record

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(hours=1)
OURS = "nthlayer-key-7c2e"

# ---- choosing full or incremental ----------------------------------------------------------------------


def cursor(age: timedelta, full_age: timedelta = timedelta(hours=2)) -> RefreshCursor:
    return RefreshCursor("pagerduty", NOW - age, NOW - full_age)


@pytest.mark.parametrize(
    ("state", "options", "mode", "reason"),
    [
        (None, {}, "full", "no refresh cursor yet: the first refresh reads everything"),
        (cursor(timedelta(hours=1)), {"nightly": True}, "full", "the nightly audit always reads everything"),
        (
            cursor(timedelta(hours=1)),
            {"audit_refused": 402},
            "full",
            "PagerDuty answered 402: the account's plan lacks Audit Trail",
        ),
        (
            cursor(timedelta(hours=1)),
            {"audit_refused": 403},
            "full",
            "PagerDuty answered 403: only an admin's or a global API token may list audit records",
        ),
        (
            cursor(timedelta(days=8), timedelta(hours=1)),
            {},
            "full",
            "the cursor is 8 days old, more than the 7 days allowed",
        ),
        (
            cursor(timedelta(hours=1), timedelta(hours=25)),
            {},
            "full",
            "the last full refresh was 25 h ago; one is due every 24 h",
        ),
        (
            cursor(timedelta(hours=1), timedelta(hours=7)),
            {"policy": RefreshPolicy(full_refresh_every=timedelta(hours=6))},
            "full",
            "the last full refresh was 7 h ago; one is due every 6 h",
        ),
        (
            cursor(-timedelta(minutes=3)),
            {},
            "full",
            "the cursor (2026-03-10T12:03:00+00:00) is in the future: the clock moved",
        ),
        (
            cursor(timedelta(minutes=65)),
            {},
            "incremental",
            "audit records since 2026-03-10T10:55:00+00:00",
        ),
    ],
)
def test_choose_refresh_says_full_or_incremental_and_why(
    state: RefreshCursor | None, options: dict[str, Any], mode: str, reason: str
) -> None:
    decision = choose_refresh(state, now=NOW, **options)
    assert (decision.mode, decision.reason) == (RefreshMode(mode), reason)
    assert decision.full is (mode == "full")
    assert decision.since == (state.cursor_time if mode == "incremental" and state else None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_cursor_age": timedelta(days=400)}, "at most 365 days (PagerDuty's audit retention)"),
        ({"max_cursor_age": timedelta(0)}, "max_cursor_age must be above 0"),
        ({"full_refresh_every": timedelta(0)}, "full_refresh_every must be above 0"),
        ({"settle": timedelta(minutes=-1)}, "settle must be at least 0 and below max_cursor_age"),
        ({"max_user_reads": -1}, "max_user_reads must not be negative"),
    ],
)
def test_a_policy_out_of_bounds_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RefreshPolicy(**options)


# ---- records as PagerDuty writes them -------------------------------------------------------------------

_ids = itertools.count(1)


def ref(kind: str, object_id: str) -> dict[str, str]:
    return {"id": object_id, "type": f"{kind}_reference", "summary": object_id.title()}


def record(
    root: tuple[str, str],
    *,
    action: str = "update",
    resource: tuple[str, str] | None = None,
    fields: list[dict[str, str]] | None = None,
    references: list[dict[str, Any]] | None = None,
    at: datetime = NOW - timedelta(minutes=30),
    request: str | None = None,
    method: dict[str, str] | None = None,
    record_id: str | None = None,
) -> AuditRecord:
    details: dict[str, Any] = {"resource": ref(*(resource or root))}
    if fields is not None:
        details["fields"] = fields
    if references is not None:
        details["references"] = references
    return AuditRecord.from_api(
        {
            "id": record_id or f"R{next(_ids):05d}",
            "execution_time": at.isoformat().replace("+00:00", "Z"),
            "execution_context": {"request_id": request or uuid.uuid4().hex},
            "method": method or {"type": "api_token", "truncated_token": OURS[-4:]},
            "root_resource": ref(*root),
            "action": action,
            "details": details,
        }
    )


def added(team: str, user: str, role: str | None, **options: Any) -> list[AuditRecord]:
    """A member added: the `members` reference on the team, and the role on the user, one request."""
    request = options.pop("request", None) or uuid.uuid4().hex
    members = record(
        ("team", team),
        references=[{"name": "members", "added": [ref("user", user)]}],
        request=request,
        **options,
    )
    if role is None:
        return [members]
    return [members, role_set(team, user, role, request=request, **options)]


def role_set(
    team: str, user: str, role: str | None, *, field: str = "team_role", **options: Any
) -> AuditRecord:
    value = {"name": field} | ({"value": role} if role is not None else {})
    return record(("team", team), resource=("user", user), fields=[value], **options)


def removed(team: str, user: str, **options: Any) -> AuditRecord:
    return record(("team", team), references=[{"name": "members", "removed": [ref("user", user)]}], **options)


def plan(records: list[AuditRecord], **options: Any) -> IncrementalRead:
    return plan_incremental_read(records, own_token_suffixes=[token_suffix(OURS)], since=SINCE, **options)


def test_the_records_of_an_added_member_a_role_change_and_a_removal_are_patched_without_reads() -> None:
    early, late = NOW - timedelta(minutes=40), NOW - timedelta(minutes=20)
    records = [
        *added("PTEAM01", "PUSER01", "manager", at=early),
        role_set("PTEAM01", "PUSER02", "observer", at=early + timedelta(seconds=1)),
        removed("PTEAM02", "PUSER03", at=late),
        role_set("PTEAM02", "PUSER04", "responder", field="members.role", at=late),
    ]
    read = plan(list(reversed(records)))  # PagerDuty lists newest first; order does not matter

    assert [(c.team_id, c.user_id, c.role) for c in read.membership_changes] == [
        ("PTEAM01", "PUSER01", Role.MANAGER),
        ("PTEAM01", "PUSER02", Role.OBSERVER),
        ("PTEAM02", "PUSER03", None),
        ("PTEAM02", "PUSER04", Role.RESPONDER),
    ]
    assert (read.relist_teams, read.relist_users, read.team_member_reads, read.user_reads) == (
        False,
        False,
        frozenset(),
        frozenset(),
    )
    assert read.own_record_ids == {r.id for r in records}
    assert read.foreign_record_ids == frozenset()
    assert read.newest_record_id == records[-1].id or read.newest_record_id == records[-2].id


def test_a_record_that_leaves_the_outcome_open_sends_the_team_to_be_read_again() -> None:
    records = [
        *added("PTEAM01", "PUSER01", None),  # added, role not said
        role_set("PTEAM02", "PUSER02", None),  # a role field without its value
        role_set("PTEAM03", "PUSER03", "owner"),  # not a team role
        record(
            ("team", "PTEAM04"), references=[{"name": "escalation_policies", "added": [ref("ep", "PEP")]}]
        ),
        record(("team", "PTEAM05"), resource=("user", "PUSER05"), fields=[{"name": "notes", "value": "x"}]),
    ]
    read = plan(records)
    assert read.team_member_reads == {"PTEAM01", "PTEAM02", "PTEAM03", "PTEAM04", "PTEAM05"}
    assert read.membership_changes == ()
    assert read.relist_teams is True, "an unknown change to a team may have been to the team itself"


def test_two_requests_changing_one_member_in_the_same_millisecond_send_the_team_to_be_read() -> None:
    moment = NOW - timedelta(minutes=5)
    read = plan(
        [
            role_set("PTEAM01", "PUSER01", "observer", at=moment),
            role_set("PTEAM01", "PUSER01", "manager", at=moment),
            role_set("PTEAM01", "PUSER02", "manager", at=moment),
            role_set("PTEAM02", "PUSER01", "manager", at=moment),
        ]
    )
    assert read.team_member_reads == {"PTEAM01"}
    assert [(c.team_id, c.user_id, c.role) for c in read.membership_changes] == [
        ("PTEAM02", "PUSER01", Role.MANAGER)
    ]


def test_team_changes_list_the_teams_again_and_a_new_teams_members_are_read() -> None:
    read = plan(
        [
            record(("team", "PNEW001"), action="create", fields=[{"name": "name", "value": "New"}]),
            record(("team", "PTEAM01"), fields=[{"name": "name", "before_value": "Old", "value": "Renamed"}]),
            record(("team", "PGONE01"), action="delete", fields=[{"name": "name", "before_value": "Gone"}]),
            *added("PGONE01", "PUSER01", "manager", at=NOW - timedelta(minutes=50)),
        ]
    )
    assert read.relist_teams is True
    assert read.team_member_reads == {"PNEW001"}
    assert read.deleted_team_ids == {"PGONE01"}
    assert read.membership_changes == (), "a deleted team's changes need no patching"


def test_user_changes_read_that_user_or_drop_them() -> None:
    user = ("user", "PUSER01")
    read = plan(
        [
            record(("user", "PNEWBIE"), action="create", fields=[{"name": "name", "value": "Newbie"}]),
            record(
                user, fields=[{"name": "email", "before_value": "a@example.com", "value": "b@example.com"}]
            ),
            record(("user", "PUSER02"), fields=[{"name": "time_zone", "value": "Europe/Paris"}]),
            record(
                ("user", "PUSER03"), resource=("notification_rule", "PRULE01"), fields=[{"name": "urgency"}]
            ),
            record(("user", "PTEMP01"), action="create", at=NOW - timedelta(minutes=50)),
            record(("user", "PTEMP01"), action="delete", at=NOW - timedelta(minutes=40)),
            record(("service", "PSVC001"), fields=[{"name": "name", "value": "api"}]),
        ]
    )
    assert read.user_reads == {"PNEWBIE", "PUSER01"}
    assert read.deleted_user_ids == {"PTEMP01"}
    assert read.relist_users is False
    assert len(read.ignored_record_ids) == 3
    assert read.record_count == 7


def test_more_users_than_the_policy_reads_one_by_one_lists_them_all() -> None:
    records = [record(("user", f"PUSER{n:02d}"), action="create") for n in range(4)]
    read = plan(records, policy=RefreshPolicy(max_user_reads=3))
    assert (read.relist_users, read.user_reads) == (True, frozenset())
    assert plan(records, policy=RefreshPolicy(max_user_reads=4)).user_reads == {
        f"PUSER{n:02d}" for n in range(4)
    }


def test_without_patching_every_touched_team_is_read_again() -> None:
    records = [*added("PTEAM01", "PUSER01", "manager"), removed("PTEAM02", "PUSER02")]
    read = plan(records, policy=RefreshPolicy(patch_memberships=False))
    assert (read.team_member_reads, read.membership_changes) == ({"PTEAM01", "PTEAM02"}, ())


def test_records_before_since_or_already_applied_are_left_out_and_repeats_count_once() -> None:
    old = removed("PTEAM01", "PUSER01", at=SINCE - timedelta(seconds=1))
    seen = removed("PTEAM01", "PUSER02", at=SINCE)
    fresh = removed("PTEAM01", "PUSER03", at=SINCE)
    read = plan([old, seen, fresh, fresh], already_applied=[seen.id])
    assert [(c.user_id, c.record_id) for c in read.membership_changes] == [("PUSER03", fresh.id)]
    assert read.record_count == 1


def test_changes_made_in_the_ui_or_with_another_token_are_drift_and_ours_are_not() -> None:
    browser = {"type": "browser"}
    someone = {"type": "api_token", "truncated_token": "zz99"}
    ui = added("PTEAM01", "PUSER01", "observer", method=browser)
    script = removed("PTEAM02", "PUSER02", method=someone)
    ours = removed("PTEAM03", "PUSER03")
    read = plan([*ui, script, ours])
    assert read.foreign_record_ids == {r.id for r in ui} | {script.id}
    assert read.own_record_ids == {ours.id}
    assert read.foreign_team_ids == {"PTEAM01", "PTEAM02"}
    assert len(read.membership_changes) == 3, "own writes change the snapshot too"
    assert plan_incremental_read([ours], since=SINCE).own_record_ids == frozenset()


def test_the_ledgers_applied_changes_tell_our_writes_apart_without_the_token() -> None:
    browser = {"type": "browser"}
    at = NOW - timedelta(minutes=30)
    ours = added("PTEAM01", "PUSER01", "responder", method=browser, at=at)
    role = role_set("PTEAM01", "PUSER02", "manager", method=browser, at=at)
    gone = removed("PTEAM01", "PUSER03", method=browser, at=at)
    created = record(("team", "PNEW001"), action="create", method=browser, at=at)
    late = removed("PTEAM01", "PUSER04", method=browser, at=at + timedelta(hours=1))
    outcomes = [
        SimpleNamespace(
            kind=k, status=s, team_id=t, team_name=n, user_id=u, updated_at=at + timedelta(seconds=2)
        )
        for k, s, t, n, u in [
            (ChangeKind.ADD_MEMBER, ChangeStatus.APPLIED, "PTEAM01", "Payments", "PUSER01"),
            (ChangeKind.SET_ROLE, ChangeStatus.APPLIED, "PTEAM01", "Payments", "PUSER02"),
            (ChangeKind.REMOVE_MEMBER, ChangeStatus.APPLIED, "PTEAM01", "Payments", "PUSER03"),
            (ChangeKind.CREATE_TEAM, ChangeStatus.APPLIED, None, "Pnew001", None),
            (ChangeKind.REMOVE_MEMBER, ChangeStatus.APPLIED, "PTEAM01", "Payments", "PUSER04"),
            (ChangeKind.ADD_MEMBER, ChangeStatus.SKIPPED, "PTEAM09", "Search", "PUSER09"),
        ]
    ]
    own_writes = own_writes_from_outcomes(outcomes)
    assert len(own_writes) == 5
    read = plan_incremental_read([*ours, role, gone, created, late], since=SINCE, own_writes=own_writes)
    assert read.own_record_ids == {r.id for r in (*ours, role, gone, created)}
    assert read.foreign_record_ids == {late.id}, "an hour after the ledger's write is someone else's"
    assert OwnWrite(ChangeKind.SET_ROLE, "PTEAM01", "Payments", "PUSER02", at).matches(role) is True
    assert OwnWrite(ChangeKind.SET_ROLE, "PTEAM02", "Payments", "PUSER02", at).matches(role) is False
    by_name = OwnWrite(ChangeKind.ADD_MEMBER, None, "pteam01", "PUSER01", at)  # a team created by the apply
    assert [by_name.matches(r) for r in ours] == [True, True]
    assert OwnWrite(ChangeKind.ADD_MEMBER, None, "Search", "PUSER01", at).matches(ours[0]) is False


# ---- cursors --------------------------------------------------------------------------------------------


def test_the_cursor_after_a_full_snapshot_starts_a_settle_before_it() -> None:
    start = NOW - timedelta(minutes=2)
    assert cursor_after_full("pagerduty", start) == RefreshCursor(
        "pagerduty", start - timedelta(minutes=5), start, updated_at=start
    )


def test_the_cursor_after_an_incremental_read_remembers_what_it_applied_near_its_end() -> None:
    previous = RefreshCursor("pagerduty", NOW - timedelta(hours=1), NOW - timedelta(hours=3), "R-old")
    early = removed("PTEAM01", "PUSER01", at=NOW - timedelta(minutes=30))
    near_end = removed("PTEAM01", "PUSER02", at=NOW - timedelta(minutes=2))
    at_end = removed("PTEAM01", "PUSER03", at=NOW - timedelta(minutes=1))

    following = cursor_after_incremental(previous, [early, near_end, at_end], NOW)
    assert following.cursor_time == NOW - timedelta(minutes=5)
    assert following.seen_record_ids == tuple(sorted([near_end.id, at_end.id]))
    assert following.last_record_id == at_end.id
    assert following.last_full_refresh_at == previous.last_full_refresh_at
    assert following.updated_at == NOW

    later = cursor_after_incremental(following, [near_end, at_end], NOW + timedelta(minutes=1))
    assert later.cursor_time == NOW - timedelta(minutes=4)
    assert later.seen_record_ids == following.seen_record_ids

    soon = cursor_after_incremental(later, [], later.cursor_time + timedelta(minutes=2))
    assert (soon.cursor_time, soon.last_record_id) == (later.cursor_time, at_end.id), (
        "a read sooner than the settle after the cursor leaves it where it was"
    )


# ---- merging --------------------------------------------------------------------------------------------


def state(
    users: list[tuple[str, str]], teams: list[str], members: list[tuple[str, str, str]]
) -> ObservedState:
    return ObservedState(
        users=users_frame([{"user_id": u, "email": e, "name": u.title()} for u, e in users]),
        teams=teams_frame([{"team_id": t, "name": t.title(), "description": ""} for t in teams]),
        memberships=memberships_frame([{"team_id": t, "user_id": u, "role": r} for t, u, r in members]),
    )


def canonical(observed: ObservedState) -> tuple[pd.DataFrame, ...]:
    return (
        observed.users.sort_values("user_id").reset_index(drop=True),
        observed.teams.sort_values("team_id").reset_index(drop=True),
        observed.memberships.sort_values(["team_id", "user_id"]).reset_index(drop=True),
    )


def assert_same(actual: ObservedState, expected: ObservedState) -> None:
    for got, want in zip(canonical(actual), canonical(expected), strict=True):
        pd.testing.assert_frame_equal(got, want)


def test_merge_folds_reads_and_patches_into_the_previous_snapshot() -> None:
    previous = state(
        [("PU1", "a@x.io"), ("PU2", "b@x.io"), ("PU3", "c@x.io")],
        ["PT1", "PT2", "PT3"],
        [
            ("PT1", "PU1", "manager"),
            ("PT1", "PU2", "observer"),
            ("PT2", "PU2", "manager"),
            ("PT3", "PU3", "manager"),
        ],
    )
    change = MembershipChange
    read = IncrementalRead(
        since=SINCE,
        relist_teams=True,
        team_member_reads=frozenset({"PT2", "PT4"}),
        user_reads=frozenset({"PU1", "PU3", "PU4"}),
        membership_changes=(
            change("PT1", "PU2", Role.RESPONDER, NOW, "R1"),
            change("PT1", "PU4", Role.OBSERVER, NOW, "R2"),
            change("PT1", "PU1", None, NOW, "R3"),
            change("PT1", "PU1", Role.MANAGER, NOW, "R4"),
        ),
    )
    reread = state(
        [("PU1", "A@X.io"), ("PU4", "d@x.io")],  # PU3 is gone
        ["PT1", "PT2", "PT4"],  # PT3 is gone
        [("PT2", "PU1", "responder"), ("PT4", "PU4", "manager")],
    )
    expected = state(
        [("PU1", "a@x.io"), ("PU2", "b@x.io"), ("PU4", "d@x.io")],
        ["PT1", "PT2", "PT4"],
        [
            ("PT1", "PU1", "manager"),
            ("PT1", "PU2", "responder"),
            ("PT1", "PU4", "observer"),
            ("PT2", "PU1", "responder"),
            ("PT4", "PU4", "manager"),
        ],
    )
    merged = merge_snapshot(previous, reread, read)
    assert_same(merged, expected)
    assert list(merged.memberships.dtypes) == ["string"] * 3


def test_a_plan_that_changes_nothing_leaves_the_snapshot_as_it_was() -> None:
    previous = state([("PU1", "a@x.io")], ["PT1"], [("PT1", "PU1", "manager")])
    read = plan([])
    assert read.changes_nothing is True
    assert_same(merge_snapshot(previous, ObservedState.empty(), read), previous)


@pytest.mark.parametrize(
    ("read", "reread", "message"),
    [
        (
            IncrementalRead(since=SINCE, relist_teams=True),
            state([], ["PT1", "PT9"], []),
            "teams PT9 appeared without a record of their creation",
        ),
        (
            IncrementalRead(since=SINCE),
            state([], ["PT1"], []),
            "teams were read again although the plan did not ask for it",
        ),
        (
            IncrementalRead(since=SINCE, team_member_reads=frozenset({"PT1"})),
            state([], [], [("PT2", "PU1", "manager")]),
            "members of teams the plan did not ask for were read: PT2",
        ),
        (
            IncrementalRead(since=SINCE),
            state([("PU7", "g@x.io")], [], []),
            "users the plan did not ask for were read: PU7",
        ),
    ],
)
def test_answers_that_do_not_fit_the_plan_are_refused(
    read: IncrementalRead, reread: ObservedState, message: str
) -> None:
    previous = state([("PU1", "a@x.io")], ["PT1"], [("PT1", "PU1", "manager")])
    with pytest.raises(IncrementalReadError, match=message):
        merge_snapshot(previous, reread, read)


# ---- the property: records of random changes, merged, equal a full read -----------------------------


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def observed(org: SandboxOrg) -> ObservedState:
    pagerduty = org.pagerduty
    return ObservedState(
        users=users_frame(
            [{"user_id": u.id, "email": u.email, "name": u.name} for u in pagerduty.users_by_name]
        ),
        teams=teams_frame(
            [{"team_id": t.id, "name": t.name, "description": t.description} for t in pagerduty.teams_by_name]
        ),
        memberships=memberships_frame(
            [
                {"team_id": team_id, "user_id": user_id, "role": role}
                for team_id, members in pagerduty.memberships.items()
                for user_id, role in members.items()
            ]
        ),
    )


def reread(org: SandboxOrg, read: IncrementalRead) -> ObservedState:
    """What the client would read for `read`, from the org as it is now."""
    full = observed(org)
    users = full.users if read.relist_users else full.users[full.users["user_id"].isin(read.user_reads)]
    teams = full.teams if read.relist_teams else full.teams.iloc[0:0]
    members = full.memberships[full.memberships["team_id"].isin(read.team_member_reads)]
    return ObservedState(users, teams, members)


KINDS = ["set_role"] * 3 + ["remove"] * 2 + ["add_team", "rename_team", "remove_team"]
KINDS += ["add_user", "rename_user", "email_user", "remove_user"]
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, 7),
        st.integers(0, 7),
        st.sampled_from(["observer", "responder", "manager"]),
        st.booleans(),  # made with our token (else in the web UI)
        st.sampled_from([0, 0, 1, 250]),  # milliseconds since the previous change: 0 shares one
    ),
    max_size=25,
)


def apply_operation(org: SandboxOrg, operation: tuple[Any, ...], serial: int) -> None:
    kind, a, b, role, ours, _ = operation
    pagerduty = org.pagerduty
    origin = AuditOrigin.api_token(OURS, request_id=uuid.uuid4().hex) if ours else None
    teams, users = sorted(pagerduty.teams), sorted(pagerduty.users)
    team = teams[a % len(teams)] if teams else None
    user = users[b % len(users)] if users else None
    if kind == "set_role" and team and user:
        pagerduty.set_membership(team, user, role, origin=origin)
    elif kind == "remove" and team and pagerduty.memberships[team]:
        member = sorted(pagerduty.memberships[team])[b % len(pagerduty.memberships[team])]
        pagerduty.remove_membership(team, member, origin=origin)
    elif kind == "add_team":
        pagerduty.add_team(f"Team {serial}", origin=origin)
    elif kind == "rename_team" and team:
        pagerduty.update_team(team, name=f"Team {serial}", description=f"renamed {serial}", origin=origin)
    elif kind == "remove_team" and team:
        pagerduty.remove_team(team, origin=origin)
    elif kind == "add_user":
        pagerduty.add_user(f"User {serial}", f"user{serial}@example.com", origin=origin)
    elif kind == "rename_user" and user:
        pagerduty.update_user(user, name=f"User {serial}", origin=origin)
    elif kind == "email_user" and user:
        pagerduty.update_user(user, email=f"moved{serial}@example.com", origin=origin)
    elif kind == "remove_user" and user:
        pagerduty.remove_user(user, origin=origin)


def starting_org(seed: int) -> SandboxOrg:
    org = SandboxOrg(seed)
    pagerduty = org.pagerduty
    users = [pagerduty.add_user(f"Person {n}", f"person{n}@example.com").id for n in range(6)]
    for t in range(3):
        team = pagerduty.add_team(f"Start {t}")
        for n, user in enumerate(users[t : t + 3]):
            pagerduty.set_membership(team.id, user, ("manager", "responder", "observer")[n])
    return org


def replay(
    org: SandboxOrg,
    operations: list[tuple[Any, ...]],
    apply: Callable[[SandboxOrg, tuple[Any, ...], int], None],
    rng: random.Random,
) -> tuple[datetime, list[AuditRecord]]:
    """Apply the operations to the org on a manual clock, each its last element's milliseconds after the
    one before, and list the records they left as PagerDuty does: newest first. Returns when recording
    began, and the records."""
    clock = ManualClock(NOW - timedelta(minutes=30))
    trail = org.pagerduty.audit
    trail.clock = clock
    trail.start()
    since = clock.now
    for serial, operation in enumerate(operations):
        clock.now += timedelta(milliseconds=operation[-1])
        apply(org, operation, serial)

    # PagerDuty's record ids say nothing of order: only the time does, to the millisecond.
    shuffled = list(range(len(trail)))
    rng.shuffle(shuffled)
    opaque = {r.id: f"R{n:06d}" for r, n in zip(trail.records(), shuffled, strict=True)}
    listed = [
        AuditRecord.from_api(
            render_record("http://sandbox", r, html_base="https://acme.pagerduty.com") | {"id": opaque[r.id]}
        )
        for r in reversed(trail.records())
    ]
    return since, listed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    operations=OPERATIONS, seed=st.integers(0, 3), patch=st.booleans(), rng=st.randoms(use_true_random=False)
)
def test_merging_the_records_of_random_changes_equals_reading_everything_again(
    operations: list[tuple[Any, ...]], seed: int, patch: bool, rng: random.Random
) -> None:
    org = starting_org(seed)
    before = observed(org)
    since, listed = replay(org, operations, apply_operation, rng)
    read = plan_incremental_read(
        listed, own_token_suffixes=[OURS[-4:]], since=since, policy=RefreshPolicy(patch_memberships=patch)
    )
    assert_same(merge_snapshot(before, reread(org, read), read), observed(org))
    assert read.record_count == len(listed)
    ours = {r.id for r in listed if r.method.type == "api_token"}
    assert read.own_record_ids == ours
