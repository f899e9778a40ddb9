"""The snapshot checks name what failed, one reason a line, in their description and their metadata."""

from __future__ import annotations

import pandas as pd

from nthlayer_pipelines.assets.pagerduty.snapshot_checks import (
    pagerduty_memberships_name_known_users,
    pagerduty_users_have_unique_emails,
)
from nthlayer_pipelines.assets.verdicts import MAX_REASONS
from nthlayer_pipelines.resources.pagerduty.observed import USERS_TEAM_MEMBERS, mark_users_read


def users(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "email"])


def test_duplicate_emails_are_named_with_the_users_that_share_them() -> None:
    result = pagerduty_users_have_unique_emails(users(("P1", "a@x.io"), ("P2", "a@x.io"), ("P3", "b@x.io")))
    assert not result.passed
    assert result.description == "a@x.io is the email of 2 PagerDuty users: P1, P2"
    assert result.metadata["reasons"].value == "- a@x.io is the email of 2 PagerDuty users: P1, P2"
    passed = pagerduty_users_have_unique_emails(users(("P1", "a@x.io")))
    assert passed.passed and passed.description == "every PagerDuty user has an email of their own"


def test_a_member_missing_from_the_users_snapshot_is_named_with_its_teams() -> None:
    memberships = pd.DataFrame(
        [("T1", "P9", "manager"), ("T2", "P9", "responder"), ("T1", "P1", "responder")],
        columns=["team_id", "user_id", "role"],
    )
    result = pagerduty_memberships_name_known_users(memberships, users(("P1", "a@x.io")))
    assert not result.passed
    assert result.description == "user P9 is a member of T1, T2 but not in the users snapshot"


def test_many_reasons_are_cut_short_and_say_how_many_more() -> None:
    rows = [(f"P{n}{side}", f"u{n}@x.io") for n in range(MAX_REASONS + 5) for side in "ab"]
    lines = pagerduty_users_have_unique_emails(users(*rows)).description.splitlines()
    assert len(lines) == MAX_REASONS + 1 and lines[-1] == "... and 5 more"


def test_a_users_snapshot_read_through_the_teams_says_whom_it_could_not_check() -> None:
    partial = mark_users_read(users(("P1", "a@x.io"), ("P2", "b@x.io")), USERS_TEAM_MEMBERS, 20_000)
    result = pagerduty_users_have_unique_emails(partial)
    assert result.passed
    assert result.description == (
        "the 2 users on some team each have an email of their own; the account's other 19998 users, on no "
        "team, were not read, so a duplicate among them is not seen here (a desired email none of these has "
        "is looked up, and refused if two users have it)"
    )
    assert result.metadata["users_read"].value == "team members"
    assert result.metadata["users_checked"].value == 2
    assert result.metadata["account_users"].value == 20_000
