"""The observed state of a provider as three tables, the shape snapshots are stored and diffed in.

Tables rather than object graphs because a 5,000-team account holds ~50,000 memberships: a vectorised
merge diffs that in milliseconds where per-row Python loops take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import normalize_email

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")

USER_COLUMNS = ["user_id", "email", "name"]
TEAM_COLUMNS = ["team_id", "name", "description"]
MEMBERSHIP_COLUMNS = ["team_id", "user_id", "role"]


def _frame(rows: list[dict[str, object]] | None, columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows or [], columns=columns)
    return frame.astype({c: "string" for c in columns})


def users_frame(rows: list[dict[str, object]] | None = None) -> pd.DataFrame:
    """Users with their emails in the one form definitions use (`normalize_email`), so they join."""
    frame = _frame(rows, USER_COLUMNS)
    frame["email"] = frame["email"].map(normalize_email, na_action="ignore").astype("string")
    return frame


def teams_frame(rows: list[dict[str, object]] | None = None) -> pd.DataFrame:
    return _frame(rows, TEAM_COLUMNS)


def memberships_frame(rows: list[dict[str, object]] | None = None) -> pd.DataFrame:
    return _frame(rows, MEMBERSHIP_COLUMNS)


# How a users snapshot was read, kept on the frame (`DataFrame.attrs`, which pickles with it) so that
# whatever reads the table downstream knows whether an email it lacks has no account at all.
USERS_READ = "users_read"
ACCOUNT_USERS = "account_users"  # the users listing's total, beside a snapshot that holds fewer
USERS_LISTING = "listing"  # every user of the account
USERS_TEAM_MEMBERS = "team members"  # the users on at least one team, read with the teams' members


def mark_users_read(users: pd.DataFrame, users_read: str, account_users: int | None) -> pd.DataFrame:
    """`users`, saying how it was read and how many users the account lists."""
    users.attrs[USERS_READ] = users_read
    users.attrs[ACCOUNT_USERS] = account_users
    return users


def users_read_of(users: pd.DataFrame) -> str:
    """How the users snapshot was read; a frame that does not say is the full listing (as every frame
    was before accounts over the listing limit were read through their teams)."""
    return str(users.attrs.get(USERS_READ, USERS_LISTING))


def account_users_of(users: pd.DataFrame) -> int:
    """The users the account lists: its listing's total when the snapshot holds only some of them."""
    total = users.attrs.get(ACCOUNT_USERS)
    return total if isinstance(total, int) else len(users)


@dataclass(frozen=True)
class ObservedState:
    """One provider's snapshot: users, teams and team memberships with roles."""

    users: pd.DataFrame
    teams: pd.DataFrame
    memberships: pd.DataFrame

    @classmethod
    def empty(cls) -> ObservedState:
        return cls(users_frame(), teams_frame(), memberships_frame())
