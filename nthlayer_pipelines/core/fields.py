"""The apply-time decision for a change that sets attributes, whatever the kind: pure.

Each attribute is judged alone against what the provider holds now: already the value the change writes
(converged), still the value the plan found (to write), or something else (moved under the plan). A change
with any attribute moved is stale and written nowhere, as a membership change whose role moved is; one whose
every attribute converged is skipped; otherwise only the attributes still to write are written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import JsonValue

from nthlayer_pipelines.core.kind import Action, Decision
from nthlayer_pipelines.core.model import Change, FieldChange

Comparable = Callable[[str, JsonValue], JsonValue]  # (field name, value) -> what equality is judged on


def _same(_name: str, value: JsonValue) -> JsonValue:
    return value


@dataclass(frozen=True)
class FieldsDecision:
    decision: Decision
    to_write: tuple[FieldChange, ...] = ()


def decide_fields(
    change: Change, current: Mapping[str, JsonValue], comparable: Comparable = _same
) -> FieldsDecision:
    """The decision for `change` given the provider's values now (`current`, by field name)."""
    to_write: list[FieldChange] = []
    moved: list[str] = []
    for field in change.fields:
        now = comparable(field.name, current.get(field.name))
        if now == comparable(field.name, field.after):
            continue
        if now == comparable(field.name, field.before):
            to_write.append(field)
        else:
            moved.append(field.name)
    if moved:
        detail = f"{', '.join(moved)} changed since the plan was made; left for a new plan"
        return FieldsDecision(Decision(Action.STALE, detail))
    if not to_write:
        return FieldsDecision(Decision(Action.SKIP, "already as the standard wants"))
    return FieldsDecision(
        Decision(Action.WRITE, "set " + ", ".join(f.name for f in to_write)), tuple(to_write)
    )


def fields_converged(
    change: Change, current: Mapping[str, JsonValue], comparable: Comparable = _same
) -> bool:
    """Whether the provider now holds every value the change writes: the check after apply."""
    return all(comparable(f.name, current.get(f.name)) == comparable(f.name, f.after) for f in change.fields)
