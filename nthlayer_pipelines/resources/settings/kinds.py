"""What a setting may hold: each kind reads a variable's text, or refuses it with one line naming the
variable, the text and what it must be.

A blank variable is unset for every kind but those where blank says something (`blank_is_unset=False`):
deployment templates often export empty values, but an empty NTHLAYER_PRE_APPROVED_KINDS means "none".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import SecretStr

from nthlayer_pipelines.core.model import Role


class SettingsError(ValueError):
    """A deployment setting (an environment variable) is missing or malformed. The message is one line: the
    variable, what it holds, and what it must be."""


def refused(name: str, text: str, must: str) -> SettingsError:
    return SettingsError(f"{name}={text!r}: must be {must}")


def shown(value: Any) -> str:
    """A default as the messages and the README show it: 30 for 30.0, text as it is."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in value.items())
    return str(value)


class Kind:
    """How one variable's text is read. `read` is given the text stripped and never blank where blank is
    unset; it returns the value or raises `SettingsError`."""

    blank_is_unset: bool = True

    def read(self, name: str, text: str, default: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Kind):
    """Any text: a URL, a path, a channel."""

    blank_is_unset: bool = True

    def read(self, name: str, text: str, default: Any) -> str:
        return text


@dataclass(frozen=True)
class Secret(Kind):
    """A token or a URL with a password: kept as a SecretStr, so no repr or log line shows it."""

    def read(self, name: str, text: str, default: Any) -> SecretStr:
        return SecretStr(text)


def _number(text: str, whole: bool) -> float | None:
    try:
        return int(text) if whole else float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Whole(Kind):
    """A whole number of at least `minimum`."""

    minimum: int

    def read(self, name: str, text: str, default: Any) -> int:
        value = _number(text, whole=True)
        if value is None or value < self.minimum:
            raise refused(name, text, f"a whole number, {self.minimum} or more (unset: {shown(default)})")
        return int(value)


@dataclass(frozen=True)
class Positive(Kind):
    """A number above 0 (seconds, hours)."""

    def read(self, name: str, text: str, default: Any) -> float:
        value = _number(text, whole=False)
        if value is None or not (math.isfinite(value) and value > 0):
            raise refused(name, text, f"a number above 0 (unset: {shown(default)})")
        return value


@dataclass(frozen=True)
class Share(Kind):
    """A share between 0 and 1; a percentage is told the share it meant."""

    def read(self, name: str, text: str, default: Any) -> float:
        value = _number(text, whole=False)
        if value is None or not 0 <= value <= 1:
            meant = (
                f"; for {value:g} % write {value / 100:g}" if value is not None and 1 < value <= 100 else ""
            )
            raise refused(name, text, f"a share between 0 and 1 (0.2 is 20 %){meant}")
        return value


@dataclass(frozen=True)
class Choice(Kind):
    """One of `choices`, compared in lower case."""

    choices: Sequence[str]

    def read(self, name: str, text: str, default: Any) -> str:
        if text.lower() not in self.choices:
            raise refused(name, text, f"one of {', '.join(self.choices)} (unset: {shown(default)})")
        return text.lower()


FLAG_WORDS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


@dataclass(frozen=True)
class Flag(Kind):
    """On or off: true or false (yes/no, on/off and 1/0 too), in any case."""

    def read(self, name: str, text: str, default: Any) -> bool:
        if text.lower() not in FLAG_WORDS:
            raise refused(name, text, f"true or false (unset: {shown(default)})")
        return FLAG_WORDS[text.lower()]


ROLES = tuple(role.value for role in Role)


@dataclass(frozen=True)
class RoleMap(Kind):
    """Tags mapped to PagerDuty roles, written `tag=role,tag=role`: `owner=manager,member=responder`."""

    def read(self, name: str, text: str, default: Any) -> dict[str, str]:
        mapping: dict[str, str] = {}
        for entry in (part.strip() for part in text.split(",")):
            tag, equals, role = (piece.strip() for piece in entry.partition("="))
            if not (tag and equals and role) or tag in mapping:
                problem = f"{tag!r} is mapped twice" if tag in mapping else f"{entry!r} is not tag=role"
                raise SettingsError(f"{name}={text!r}: {problem}; {self.must}")
            if role.lower() not in ROLES:
                raise SettingsError(f"{name}={text!r}: {role!r} is not a PagerDuty role; {self.must}")
            mapping[tag] = role.lower()
        return mapping

    @property
    def must(self) -> str:
        return f"must be comma-separated tag=role pairs, each role one of {', '.join(ROLES)}"


@dataclass(frozen=True)
class Parsed(Kind):
    """Text a parser of its own reads; the parser's ValueError is the whole line (it names the variable).
    `keep_text`: the setting is the text, the parser only checks it."""

    parse: Callable[[str], Any]
    keep_text: bool = False
    blank_is_unset: bool = False

    def read(self, name: str, text: str, default: Any) -> Any:
        try:
            value = self.parse(text)
        except ValueError as error:
            raise SettingsError(str(error)) from None
        return text if self.keep_text else value


@dataclass(frozen=True)
class Schedule(Kind):
    """A cron expression (`what="cron"`), or the timezone the schedules run in (`what="timezone"`), as
    Dagster's ScheduleDefinition accepts it: checked by building one, so the code location never fails on
    it with Dagster's own traceback."""

    what: str

    def read(self, name: str, text: str, default: Any) -> str:
        cron, timezone = (text, None) if self.what == "cron" else ("0 * * * *", text)
        try:
            dg.ScheduleDefinition(
                name="setting_check",
                cron_schedule=cron,
                job_name="setting_check",
                execution_timezone=timezone,
            )
        except dg.DagsterInvalidDefinitionError:
            must = (
                "a cron expression of 5 fields"
                if self.what == "cron"
                else "an IANA timezone like Europe/Berlin"
            )
            raise refused(name, text, f"{must} (unset: {shown(default)})") from None
        return text
