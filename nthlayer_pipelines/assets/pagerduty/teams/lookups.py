"""The desired emails a users snapshot read through the teams has not seen, looked up one by one.

An account whose users listing is past PagerDuty's offset limit is snapshotted through its teams' members
(`snapshot.read_full`), so it holds the users on some team. A desired member on no team yet is not in it,
and is not missing for that: `GET /users?query=<email>` finds them. These lookups depend on the desired
state, which the snapshot does not (it is stored for incremental refreshes, and would otherwise change
with every definition), so they happen here, as the compares (`divergences`, `service_standards`) gather
their inputs: each looks up afresh what its own desired state lacks, where an asset of lookups could be
left from an earlier desired state by a run that selects the desired state and the compares but not it.
Each compare's metadata says what it looked up (`users_read`: `team members + N lookups`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg

from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import DesiredState
from nthlayer_pipelines.resources.pagerduty.client import AmbiguousUserError, PagerDutyClient
from nthlayer_pipelines.resources.pagerduty.models import PagerDutyUser
from nthlayer_pipelines.resources.pagerduty.observed import (
    USERS_LISTING,
    account_users_of,
    mark_users_read,
    users_frame,
    users_read_of,
)
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")


@dataclass(frozen=True)
class UserLookups:
    """The users the compare sees: the snapshot's, and those found by email; what finding them cost."""

    users: pd.DataFrame
    looked_up: int  # emails looked up (one `GET /users?query=` each at the least)
    found: int
    api_calls: int

    @property
    def users_read(self) -> str:
        """`listing`, or `team members + N lookups`: what the compare knows of the account's users."""
        return users_read_of(self.users)

    def metadata(self) -> dict[str, Any]:
        """What an asset that compared against these users says of them."""
        return {
            "users_read": self.users_read,
            "user_lookups": self.looked_up,
            "user_lookups_found": self.found,
            "user_lookup_api_calls": self.api_calls,
            # One query an email: an exact address matches few enough users to answer in one page.
            "user_lookup_api_calls_minimum": self.looked_up,
        }


def unseen_emails(desired: DesiredState, users: pd.DataFrame, teams: Collection[str] = ()) -> list[str]:
    """The desired members' emails (of `teams` when given) the users snapshot does not hold, sorted."""
    wanted = {m.email for t in desired.teams if not teams or t.name in teams for m in t.members}
    return sorted(wanted - set(users["email"].dropna()))


def with_looked_up_users(
    open_client: Callable[[], PagerDutyClient],
    desired: DesiredState,
    users: pd.DataFrame,
    teams: Collection[str] = (),
) -> UserLookups:
    """`users`, and when it is not the full listing, the users found for the desired emails it lacks.
    `open_client()` is called only when there is something to look up. Raises
    `AmbiguousUserError` naming both users when two carry one of the emails."""
    if users_read_of(users) == USERS_LISTING:
        return UserLookups(users, 0, 0, 0)
    emails = unseen_emails(desired, users, teams)
    found: dict[str, PagerDutyUser | None] = {}
    calls = 0
    if emails:
        with open_client() as client:
            found = client.find_users_by_email(emails)
            calls = client.api_calls
    rows = [{"user_id": u.id, "email": u.email, "name": u.name} for u in found.values() if u is not None]
    merged = pd.concat([users, users_frame(rows)], ignore_index=True)
    merged = merged.astype(users_frame().dtypes.to_dict())
    mark_users_read(merged, f"{users_read_of(users)} + {len(emails)} lookups", account_users_of(users))
    return UserLookups(merged, len(emails), len(rows), calls)


def looked_up_or_refused(
    pagerduty: PagerDutyResource, desired: DesiredState, users: pd.DataFrame, teams: Collection[str] = ()
) -> UserLookups:
    """`with_looked_up_users` for an asset: an email two users carry fails it, naming both."""
    try:
        return with_looked_up_users(pagerduty.client, desired, users, teams)
    except AmbiguousUserError as refused:
        # Either user could be the one meant: which to add is a person's call, not the reconciler's.
        message = f"desired emails that name more than one PagerDuty user: {refused}"
        raise dg.Failure(description=message) from refused
