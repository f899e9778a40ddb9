"""The README's table of environment variables is the one the settings model renders."""

from __future__ import annotations

import pytest

from nthlayer_pipelines.resources.settings import DeploymentSettings
from nthlayer_pipelines.resources.settings.table import END, START, render_table, table_in, with_table
from tests.support import REPO


def test_the_readmes_table_is_the_one_the_model_renders() -> None:
    assert table_in((REPO / "README.md").read_text()) == render_table(), (
        "the README's settings table differs from the model: run `make settings-table`"
    )


def test_the_table_has_a_row_for_every_variable_with_its_meaning_and_default() -> None:
    rows = render_table().splitlines()[2:]
    assert len(rows) == len(DeploymentSettings.model_fields)
    by_variable = {row.split(" | ")[0].strip("| `"): row for row in rows}
    assert by_variable["NTHLAYER_MAX_TEAM_REMOVAL_SHARE"].endswith("| 0.2 |")
    assert by_variable["NTHLAYER_DEFINITIONS"].endswith("| `examples/org` |")
    assert by_variable["PAGERDUTY_API_TOKEN"].endswith("| required |")
    assert all(row.count(" | ") == 2 for row in rows)  # no cell holds an unescaped |


def test_rewriting_replaces_only_what_is_between_the_markers() -> None:
    readme = f"# Title\n\nBefore.\n\n{START}\n| stale |\n{END}\n\nAfter.\n"
    rewritten = with_table(readme, render_table())
    assert rewritten.startswith(f"# Title\n\nBefore.\n\n{START}\n| variable | meaning | default |\n")
    assert rewritten.endswith(f"{END}\n\nAfter.\n")
    assert with_table(rewritten, render_table()) == rewritten
    with pytest.raises(ValueError, match="needs one"):
        table_in("no markers here")
