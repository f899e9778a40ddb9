"""The Dagster UI on the production configuration: the asset graph, a scoped run from the launchpad, and a
plan read whole at 1280 px and approved from its preview."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.ui_links import approval_config_yaml
from tests.e2e.deployment import LOCATION, DagsterUi
from tests.support import ARTIFACTS, EXPECTED_EXAMPLE_CHANGES_WITH_STANDARDS, plan_rows

pytestmark = pytest.mark.browser

PIPELINE_ASSETS = {
    "git_definitions",
    "cortex_teams",
    "desired_state",
    "pagerduty_users",
    "pagerduty_teams",
    "pagerduty_memberships",
    "divergences",
    "pagerduty_services",
    "service_standards",
    "change_plan",
}
RUN_TIMEOUT_SECONDS = 90
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
RUN_ID_IN_URL = re.compile(r"/runs/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def defined_lineage() -> dict[str, tuple[str, list[str]]]:
    """Each asset the definitions declare: its group and the assets it reads."""
    graph = build_definitions({}).resolve_asset_graph()
    return {
        key.to_user_string(): (
            graph.get(key).group_name,
            sorted(parent.to_user_string() for parent in graph.get(key).parent_keys),
        )
        for key in graph.get_all_asset_keys()
    }


def test_asset_graph_shows_every_asset_and_its_lineage(dagster_ui: DagsterUi, page: Page) -> None:
    expected = defined_lineage()
    assert set(expected) >= PIPELINE_ASSETS
    assert expected["divergences"][1] == [
        "desired_state",
        "pagerduty_memberships",
        "pagerduty_teams",
        "pagerduty_users",
    ]
    # What the UI draws comes from this query: every asset, its group and the edges into it.
    nodes = dagster_ui.graphql("{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }")
    shown = {
        "/".join(n["assetKey"]["path"]): (
            n["groupName"],
            sorted("/".join(d["path"]) for d in n["dependencyKeys"]),
        )
        for n in nodes["assetNodes"]
    }
    assert shown == expected

    page.goto(f"{dagster_ui.url}/asset-groups")
    for group in sorted({group for group, _ in expected.values()}):
        expect(page.get_by_text(group, exact=True).first).to_be_visible(timeout=30_000)
    # With several groups the graph starts collapsed to one box per group: expand them from its menu.
    page.get_by_role("button", name="settings", exact=True).click()
    page.get_by_role("menuitem", name="Expand all groups").click()
    for asset in sorted(expected):
        expect(page.get_by_text(asset, exact=True).first).to_be_visible(timeout=15_000)
    page.screenshot(path=ARTIFACTS / "e2e" / "asset-graph.png")


def test_schedules_are_running_and_the_daemon_is_healthy(dagster_ui: DagsterUi) -> None:
    query = """query($selector: ScheduleSelector!) { scheduleOrError(scheduleSelector: $selector) {
        __typename ... on Schedule { scheduleState { status } } } }"""
    for name in ("refresh_schedule", "nightly_audit_schedule"):
        selector = {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "scheduleName": name,
        }
        schedule = dagster_ui.graphql(query, selector=selector)["scheduleOrError"]
        assert schedule["scheduleState"]["status"] == "RUNNING", name

    health = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
    deadline = time.monotonic() + 30
    while True:
        statuses = dagster_ui.graphql(health)["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {s["daemonType"] for s in statuses if s["healthy"]}
        if {"SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= healthy or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {"SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= healthy


def wait_for_run(dagster_ui: DagsterUi, run_id: str) -> str:
    query = "query($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }"
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        status = dagster_ui.graphql(query, runId=run_id)["runOrError"]["status"]
        if status in FINISHED or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def run_materializations(dagster_ui: DagsterUi, run_id: str) -> dict[str, dict[str, object]]:
    """Each asset the run materialized, with its text and integer metadata."""
    query = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run { assetMaterializations {
        assetKey { path }
        metadataEntries { label ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue } }
    } } } }"""
    events = dagster_ui.graphql(query, runId=run_id)["runOrError"]["assetMaterializations"]
    return {
        "/".join(e["assetKey"]["path"]): {
            m["label"]: m.get("text", m.get("intValue"))
            for m in e["metadataEntries"]
            if "text" in m or "intValue" in m
        }
        for e in events
    }


def test_launchpad_runs_a_refresh_scoped_to_one_team(dagster_ui: DagsterUi, page: Page) -> None:
    page.goto(f"{dagster_ui.url}/locations/{LOCATION}/jobs/refresh/playground")
    editor = page.locator(".CodeMirror")
    expect(editor).to_contain_text("reconcile:", timeout=30_000)  # the scaffold of the bound config
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text("resources: {reconcile: {config: {teams: [payments]}}}")  # as a paste does
    expect(page.get_by_text("No errors")).to_be_visible()
    page.get_by_role("button", name="Launch Run").click()

    page.wait_for_url(RUN_ID_IN_URL, timeout=30_000)
    run_id = RUN_ID_IN_URL.search(page.url).group(1)
    assert wait_for_run(dagster_ui, run_id) == "SUCCESS"

    # It waited in the queue of deploy/dagster.yaml until the daemon (nothing else dequeues) launched it.
    logs = """query($runId: ID!) {
        logsForRun(runId: $runId) { ... on EventConnection { events { __typename } } } }"""
    event_types = [e["__typename"] for e in dagster_ui.graphql(logs, runId=run_id)["logsForRun"]["events"]]
    lifecycle = [t for t in event_types if t in {"RunEnqueuedEvent", "RunStartingEvent", "RunSuccessEvent"}]
    assert lifecycle == ["RunEnqueuedEvent", "RunStartingEvent", "RunSuccessEvent"]

    materialized = run_materializations(dagster_ui, run_id)
    assert set(materialized) == PIPELINE_ASSETS
    assert materialized["divergences"]["scope"] == "payments"
    plan = materialized["change_plan"]
    # payments: carol to add, bob's role to change, mallory to remove; its critical policy to create, its two
    # services to re-point at it and to update; nothing of any other team (Checkout Web is left out).
    assert (plan["changes_total"], plan["teams_to_create"], plan["members_to_add"]) == (8, 0, 1)
    assert (plan["roles_to_change"], plan["members_to_remove"]) == (1, 1)
    assert (plan["policies_to_create"], plan["policies_to_update"]) == (1, 0)
    assert (plan["services_to_repoint"], plan["services_to_update"]) == (2, 2)

    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=30_000)
    page.screenshot(path=ARTIFACTS / "e2e" / "refresh-run.png")


# Everything that reads as whole in a window: nothing wider or taller than its box where the box hides the
# rest.
CUT_OFF = """(root) => [root, ...root.querySelectorAll('*')].filter((e) => {
    const style = getComputedStyle(e);
    return (e.scrollWidth > e.clientWidth + 1 && style.overflowX !== 'visible')
        || (e.scrollHeight > e.clientHeight + 1 && style.overflowY !== 'visible');
}).map((e) => `${e.tagName}.${e.className}: ${e.scrollWidth}x${e.scrollHeight}px in `
    + `${e.clientWidth}x${e.clientHeight}px`)"""
# An element's top in the window with what scrolls it (its nearest scrolling ancestor, else the page) at its
# start, and its bottom with that scrolled to its end.
SCROLLED_THROUGH = """(element) => {
    let scroller = element.parentElement;
    while (scroller && !['auto', 'scroll'].includes(getComputedStyle(scroller).overflowY)) {
        scroller = scroller.parentElement;
    }
    scroller = scroller || document.scrollingElement;
    scroller.scrollTop = 0;
    const top = element.getBoundingClientRect().top;
    scroller.scrollTop = scroller.scrollHeight;
    const bottom = element.getBoundingClientRect().bottom;
    scroller.scrollTop = 0;
    return [top, bottom];
}"""


def test_the_plan_preview_is_whole_at_1280px_and_approves_from_it(
    dagster_ui: DagsterUi, laptop_page: Page, postgres_url: str
) -> None:
    page = laptop_page
    refreshed = dagster_ui.launch_run("refresh")
    assert wait_for_run(dagster_ui, refreshed) == "SUCCESS"
    plan_id = str(dagster_ui.materializations(refreshed)["change_plan"]["plan_id"])
    with Ledger(postgres_url) as ledger:
        plan = ledger.get_plan(plan_id)
    assert plan is not None and plan_rows(plan) == EXPECTED_EXAMPLE_CHANGES_WITH_STANDARDS

    page.goto(f"{dagster_ui.url}/assets/change_plan")
    expect(page.get_by_text(plan_id, exact=True).first).to_be_visible(timeout=30_000)
    plan_row = page.locator("tr").filter(has=page.get_by_text("plan", exact=True))
    plan_row.get_by_text("[Show Markdown]").click()
    preview = page.get_by_role("dialog")
    for change in plan.changes:
        expect(preview.get_by_text(change.id, exact=True)).to_be_visible()
    expect(preview.get_by_text("mallory@example.com (was responder)")).to_be_visible()
    expect(preview.get_by_text("acknowledgement_timeout: 1800 → 600")).to_be_visible()
    box = preview.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1280, box
    assert preview.evaluate(CUT_OFF) == []
    # 15 changes, the services' with their fields, make it taller than the window: the overlay holding it
    # scrolls, from the preview's top in the window to its bottom in the window.
    top, bottom = preview.evaluate(SCROLLED_THROUGH)
    assert top >= 0 and bottom <= 1000, (top, bottom, box)
    page.screenshot(path=ARTIFACTS / "e2e" / "plan-preview-1280.png")

    # From the preview to the launchpad holding this plan's approval: the approver adds a name, no id.
    preview.get_by_role("link", name="Approve in the launchpad").click()
    page.wait_for_url(re.compile(r"/jobs/approve_plan/playground$"), timeout=30_000)
    editor = page.locator(".CodeMirror")
    expect(editor).to_contain_text(plan_id, timeout=30_000)
    shown = editor.evaluate("(element) => element.CodeMirror.getValue()")
    assert shown == approval_config_yaml(plan)
    editor.locator(".CodeMirror-line", has_text='approver: ""').click()
    page.keyboard.press("End")
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.keyboard.type("alice@example.com")
    expect(page.get_by_text("No errors")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "e2e" / "plan-approval-launchpad-1280.png")
    page.get_by_role("button", name="Launch Run").click()

    page.wait_for_url(RUN_ID_IN_URL, timeout=30_000)
    approved = RUN_ID_IN_URL.search(page.url).group(1)
    assert wait_for_run(dagster_ui, approved) == "SUCCESS"
    assert dagster_ui.run(approved).job == "approve_plan"
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=30_000)
    page.screenshot(path=ARTIFACTS / "e2e" / "plan-approved-1280.png")
    with Ledger(postgres_url) as ledger:
        approval = ledger.latest_approval(plan_id)
    assert approval is not None
    assert (approval.approver, approval.source) == ("alice@example.com", "person")
    assert approval.decision == "approved"
    assert approval.change_ids == tuple(change.id for change in plan.changes)
