"""The checks every provider's part of a seed file shares: a bad seed is refused with the file, the field
and the reason."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class SeedError(ValueError):
    """A seed that cannot be loaded: which file, which field, what is wrong."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        super().__init__(f"{source}: {field}: {reason}" if field else f"{source}: {reason}")
        self.source, self.field, self.reason = source, field, reason


class SeedReader:
    """Reads one seed file: each check returns the value or raises a `SeedError` naming the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, reason: str) -> SeedError:
        return SeedError(self.source, field, reason)

    def mapping(self, value: Any, field: str, allowed: set[str], required: tuple[str, ...] = ()) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.fail(field or "(top level)", f"expected a mapping, got {kind(value)}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise self.fail(
                field or "(top level)", f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
            )
        for key in required:
            if value.get(key) in (None, ""):
                raise self.fail(join(field, key), "is required")
        return value

    def each(self, parent: Mapping, field: str, key: str, read_one: Callable[[Any, str], None]) -> None:
        items = parent.get(key)
        if items is None:
            items = []
        where = join(field, key)
        if not isinstance(items, list):
            raise self.fail(where, f"expected a list, got {kind(items)}")
        for index, item in enumerate(items):
            read_one(item, f"{where}[{index}]")

    def text(self, value: Any, field: str, *, default: str | None = None) -> str:
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or (default is None and not value.strip()):
            raise self.fail(field, f"expected a non-empty string, got {kind(value)}")
        return value

    def email(self, value: Any, field: str) -> str:
        email = self.text(value, field)
        if not _EMAIL.match(email):
            raise self.fail(field, f"{email!r} is not an email address")
        return email

    def choice(self, value: Any, field: str, choices: tuple[str, ...], default: str) -> str:
        if value is None:
            return default
        if value not in choices:
            raise self.fail(field, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def count(self, value: Any, field: str, *, default: int = 0) -> int:
        """A non-negative integer (YAML's booleans are not numbers here)."""
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(field, f"expected a non-negative integer, got {value!r}")
        return value


OrgT = TypeVar("OrgT")


class SectionReader(SeedReader, Generic[OrgT]):
    """Reads one provider's section of the seed into that provider's org."""

    def __init__(self, source: str, org: OrgT) -> None:
        super().__init__(source)
        self.org = org

    def read(self, section: Mapping[str, Any]) -> None:
        raise NotImplementedError


def or_empty(value: Any) -> Any:
    return {} if value is None else value


def join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number"}.get(
        type(value), type(value).__name__
    )
