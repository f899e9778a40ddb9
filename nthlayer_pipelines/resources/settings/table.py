"""The README's table of variables, rendered from the model's fields: the variable, its meaning and its
default. `make settings-table` rewrites the table between the README's markers; a unit test keeps the two
equal."""

from __future__ import annotations

from pathlib import Path

from pydantic.fields import FieldInfo

from nthlayer_pipelines.resources.settings.deployment import DeploymentSettings, variable_of
from nthlayer_pipelines.resources.settings.kinds import shown

START = "<!-- settings-table:start (rendered from resources/settings/deployment.py: make settings-table) -->"
END = "<!-- settings-table:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def default_cell(field: FieldInfo) -> str:
    """What the README says for the default: the field's own words (`required`, `off`), else the value,
    text in backticks, numbers as they are, nothing for an empty text."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "shown_default" in extra:
        return str(extra["shown_default"])
    value = field.get_default(call_default_factory=True)
    text = shown(value)
    if not text or (isinstance(value, int | float) and not isinstance(value, bool)):
        return text
    return f"`{text}`"


def render_table(model: type[DeploymentSettings] = DeploymentSettings) -> str:
    rows = [
        f"| `{variable_of(field)}` | {_cell(field.description or '')} | {_cell(default_cell(field))} |"
        for field in model.model_fields.values()
    ]
    return "\n".join(["| variable | meaning | default |", "|---|---|---|", *rows]) + "\n"


def _bounds(text: str) -> tuple[int, int]:
    """Where the table starts and ends in `text`: right after the start marker's line, at the end marker."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"the README needs one {START!r} line and one {END!r} line around the table")
    start = text.index(START) + len(START) + 1
    end = text.index(END)
    if end < start:
        raise ValueError(f"{END!r} comes before {START!r}")
    return start, end


def table_in(readme: str) -> str:
    """The table between the markers, as the README has it."""
    start, end = _bounds(readme)
    return readme[start:end]


def with_table(readme: str, table: str) -> str:
    start, end = _bounds(readme)
    return readme[:start] + table + readme[end:]


def write_table(path: Path) -> bool:
    """Rewrite the README's table from the model; whether anything changed."""
    before = path.read_text()
    after = with_table(before, render_table())
    if after != before:
        path.write_text(after)
    return after != before
