"""The apply's lanes, pure: which changes run one after another, and in what order; and the per-thread
request tally a change's cost is read from while other lanes send on the same client."""

from __future__ import annotations

import logging
import threading

from nthlayer_pipelines.apply import group_lanes
from nthlayer_pipelines.assets.pagerduty.writers import pagerduty_writers
from nthlayer_pipelines.core.model import Change, ChangeKind, Role
from nthlayer_pipelines.core.plan import ordered_plan
from nthlayer_pipelines.resources.http.client import RequestStats
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient


def member(kind: ChangeKind, team: str, email: str, role: Role | None = Role.RESPONDER) -> Change:
    return Change(
        id=f"{kind.value}-{team}-{email}",
        kind=kind,
        team=team,
        team_name=team.title(),
        team_id=None if kind is ChangeKind.CREATE_TEAM else f"P{team}",
        email=email or None,
        user_id=f"U{email}" if email else None,
        role=None if kind in (ChangeKind.CREATE_TEAM, ChangeKind.REMOVE_MEMBER) else role,
    )


def standard(kind: ChangeKind, team: str, target: str) -> Change:
    return Change(
        id=f"{kind.value}-{team}-{target}", kind=kind, team=team, team_name=team, target_name=target
    )


def test_lanes_keep_the_order_given_and_come_in_the_order_of_their_first_item() -> None:
    items = ["b1", "a1", "b2", "c1", "a2", "b3"]
    assert group_lanes(items, lambda item: item[0]) == [["b1", "b2", "b3"], ["a1", "a2"], ["c1"]]
    assert group_lanes([], lambda item: item) == []


def test_a_teams_changes_of_every_kind_share_a_lane_in_plan_order() -> None:
    changes = [
        member(ChangeKind.REMOVE_MEMBER, "payments", "old@x"),
        member(ChangeKind.ADD_MEMBER, "search", "sam@x"),
        standard(ChangeKind.SET_SERVICE_POLICY, "payments", "Payment API"),
        member(ChangeKind.ADD_MEMBER, "payments", "pat@x"),
        member(ChangeKind.CREATE_TEAM, "payments", ""),
        standard(ChangeKind.CREATE_ESCALATION_POLICY, "payments", "Payments (critical)"),
        member(ChangeKind.SET_ROLE, "payments", "ann@x", Role.MANAGER),
        member(ChangeKind.REMOVE_MEMBER, "search", "gone@x"),
    ]
    plan = ordered_plan(changes, [])
    with PagerDutyClient("http://127.0.0.1:9", "token") as client:
        writers = pagerduty_writers(client, logging.getLogger("test"))
        lanes = group_lanes(plan.changes, lambda c: writers[c.resource].lane(c))

    by_team = {lane[0].team: [c.kind for c in lane] for lane in lanes}
    assert by_team == {
        "payments": [
            ChangeKind.CREATE_TEAM,
            ChangeKind.CREATE_ESCALATION_POLICY,
            ChangeKind.ADD_MEMBER,
            ChangeKind.SET_ROLE,
            ChangeKind.SET_SERVICE_POLICY,
            ChangeKind.REMOVE_MEMBER,
        ],
        "search": [ChangeKind.ADD_MEMBER, ChangeKind.REMOVE_MEMBER],
    }
    assert sorted(c.id for lane in lanes for c in lane) == sorted(c.id for c in changes)  # each once


def test_a_tally_counts_its_own_threads_requests_alone() -> None:
    stats = RequestStats()
    start = threading.Barrier(4)
    tallies: dict[int, tuple[int, int]] = {}

    def work(n: int) -> None:
        with stats.tally() as tally:
            start.wait()  # every thread counts at the same time
            for _ in range(n * 100):
                stats.count(api_calls=1)
            stats.count(retries=n)
        tallies[n] = (tally.api_calls, tally.retries)

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tallies == {1: (100, 1), 2: (200, 2), 3: (300, 3), 4: (400, 4)}
    assert (stats.api_calls, stats.retries) == (1000, 10)


def test_a_helper_thread_handed_the_tallies_counts_into_them() -> None:
    stats = RequestStats()
    with stats.tally() as outer:
        handed = stats.tallies()

        def helper() -> None:
            with stats.counting_into(handed):
                stats.count(api_calls=2)

        thread = threading.Thread(target=helper)
        thread.start()
        thread.join()
        with stats.tally() as inner:
            stats.count(api_calls=1)
    stats.count(api_calls=5)  # outside any tally
    assert (outer.api_calls, inner.api_calls, stats.api_calls) == (3, 1, 8)
