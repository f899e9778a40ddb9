"""PagerDuty's error answers: `{"error": {"message", "code", "errors"}}`, with the codes and texts the API
uses. The fault injector answers with some of them too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from starlette.responses import Response

from nthlayer_pipelines.sandbox.core import json_response

INVALID_INPUT = (2001, "Invalid Input Provided")
ARGUMENTS_ERROR = (2002, "Arguments Caused Error")
OFFSET_TOO_LARGE = (
    "Offset+limit exceeds maximum allowed value of 10000. Please try to refine your search to reduce "
    "the returned set of records below this number, like adding a date range."
)
EP_BLOCKS_REMOVAL = "User cannot be removed as they belong to an escalation policy on this team"
MISSING_ABILITY = (2014, "Missing Account Ability")
ACCESS_DENIED = (2010, "Access Denied")


class PagerDutyError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, list(errors)

    def response(self) -> Response:
        body = {"error": {"message": self.message, "code": self.code, "errors": self.errors}}
        return json_response(body, self.status)


def invalid_input(*errors: str) -> PagerDutyError:
    return PagerDutyError(400, INVALID_INPUT[0], INVALID_INPUT[1], errors)


def not_found(what: str) -> PagerDutyError:
    return PagerDutyError(404, 2100, "Not Found", [f"{what} not found"])


T = TypeVar("T")


def found(objects: Mapping[str, T], object_id: str, what: str) -> T:
    """The object with that id, or PagerDuty's 404 naming what was asked for ("Team not found")."""
    found_object = objects.get(object_id)
    if found_object is None:
        raise not_found(what)
    return found_object
