"""The plan as the UI shows it: a table that wraps, each change with its id, its approval ready to launch."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import dagster as dg
import yaml

from nthlayer_pipelines.core.model import DesiredState
from nthlayer_pipelines.core.plan import render_plan_markdown
from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.orchestration.jobs import approve_plan_job
from nthlayer_pipelines.ui_links import (
    ASSET_GROUPS,
    LINEAGE_EXPANDED_PATH,
    approval_config_yaml,
    approval_markdown,
    launchpad_link,
)
from tests.unit.test_reconcile import USERS, observed, plan_of, team

# The widest line the UI's metadata column shows whole at 1280 px, in its monospace font.
METADATA_COLUMN_CHARACTERS = 38


def example_plan():
    desired = DesiredState(
        teams=(
            team("ops", {"alice@x.io": "manager", "carol@x.io": "observer", "first_last@x.io": "responder"}),
            team("search", {"bob@x.io": "manager"}, display="Search | Discovery"),
        )
    )
    obs = observed([*USERS, "first_last@x.io"], {"Ops": {"alice@x.io": "responder", "bob@x.io": "observer"}})
    return plan_of(desired, obs)


def test_the_ui_plan_is_a_table_naming_each_change_id_pagerduty_team_and_member() -> None:
    plan = example_plan()
    text = render_plan_markdown(plan)

    rows = [line for line in text.splitlines() if line.startswith("| `chg-")]
    assert [row.split(" | ")[0].strip("| `") for row in rows] == [c.id for c in plan.changes]
    assert "| `+` add | ops (Ops, `T0`) | carol@x.io as observer |" in text
    assert "| `~` set role | ops (Ops, `T0`) | alice@x.io: responder → manager |" in text
    assert "| `-` remove | ops (Ops, `T0`) | bob@x.io (was observer) |" in text
    # What markdown would read as markup is escaped: a `|` would split the cell, `_` make italics.
    assert "search (Search \\| Discovery, no id yet)" in text
    assert "first\\_last@x.io as responder" in text
    assert "```" not in text, "no code block: it would not wrap, and a narrow window would cut it"


def test_the_approval_config_is_the_approve_plan_launchpads_config_for_this_plan() -> None:
    plan = example_plan()
    text = approval_config_yaml(plan)

    config = yaml.safe_load(text)
    assert config == {
        "ops": {
            "approve": {
                "config": {
                    "plan_id": plan.id,
                    "approver": "",
                    "comment": "",
                    "change_ids": [],
                    "allow_blast_radius": False,
                }
            }
        }
    }
    assert dg.validate_run_config(approve_plan_job, config)
    assert max(len(line) for line in text.splitlines()) <= METADATA_COLUMN_CHARACTERS
    over = approval_config_yaml(plan, blast_radius_exceeded=True)
    assert yaml.safe_load(over) == config, "the override is the approver's to set"
    assert max(len(line) for line in over.splitlines()) <= METADATA_COLUMN_CHARACTERS


def test_the_launchpad_link_opens_approve_plan_holding_the_config() -> None:
    config = approval_config_yaml(example_plan())
    link = urlsplit(launchpad_link(config, location="oncall"))

    assert link.path == "/locations/oncall/jobs/approve_plan/playground/setup"
    assert parse_qs(link.query) == {"config": [config]}
    shown = render_plan_markdown(example_plan(), approval=approval_markdown(config, launchpad_link(config)))
    assert f"[Approve in the launchpad]({launchpad_link(config)})" in shown
    assert shown.endswith(f"```yaml\n{config}```")


def test_the_lineage_link_opens_every_group_the_definitions_have() -> None:
    graph = build_definitions({}).resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}

    assert groups == set(ASSET_GROUPS)
    assert LINEAGE_EXPANDED_PATH == (
        "/asset-groups?expanded=global@global:desired,global@global:observed,global@global:reconcile"
    )
