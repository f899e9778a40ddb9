"""Checks that catch a broken PagerDuty snapshot before it becomes a plan."""

from typing import TYPE_CHECKING

import dagster as dg

from nthlayer_pipelines.assets.tables import Table
from nthlayer_pipelines.assets.verdicts import MAX_REASONS, verdict
from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.resources.pagerduty.observed import USERS_LISTING, account_users_of, users_read_of

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")


@dg.asset_check(asset="pagerduty_users", blocking=True, description="No two PagerDuty users share an email.")
def pagerduty_users_have_unique_emails(pagerduty_users: Table) -> dg.AssetCheckResult:
    duplicated = pagerduty_users[pagerduty_users["email"].duplicated(keep=False)].dropna(subset=["email"])
    users = duplicated.groupby("email")["user_id"].apply(sorted)
    emails = sorted(users.index)
    passed = "every PagerDuty user has an email of their own"
    users_read = users_read_of(pagerduty_users)
    if users_read != USERS_LISTING:
        # Read through the teams, the snapshot lacks the users on no team: say so rather than vouch for them.
        unseen = account_users_of(pagerduty_users) - len(pagerduty_users)
        passed = (
            f"the {len(pagerduty_users)} users on some team each have an email of their own; the account's "
            f"other {unseen} users, on no team, were not read, so a duplicate among them is not seen here "
            "(a desired email none of these has is looked up, and refused if two users have it)"
        )
    return verdict(
        [
            f"{email} is the email of {len(users[email])} PagerDuty users: {', '.join(users[email])}"
            for email in emails
        ],
        passed,
        duplicate_email_count=len(emails),
        duplicates=", ".join(emails[:MAX_REASONS]),
        users_read=users_read,
        users_checked=len(pagerduty_users),
        account_users=account_users_of(pagerduty_users),
    )


@dg.asset_check(
    asset="pagerduty_memberships",
    additional_ins={"pagerduty_users": dg.AssetIn("pagerduty_users")},
    blocking=True,
    description="Every membership names a user of the users snapshot (else the two reads disagree).",
)
def pagerduty_memberships_name_known_users(
    pagerduty_memberships: Table, pagerduty_users: Table
) -> dg.AssetCheckResult:
    unknown = pagerduty_memberships[~pagerduty_memberships["user_id"].isin(pagerduty_users["user_id"])]
    teams = unknown.groupby("user_id")["team_id"].apply(lambda ids: sorted(set(ids)))
    return verdict(
        [
            f"user {user} is a member of {', '.join(teams[user])} but not in the users snapshot"
            for user in sorted(teams.index)
        ],
        "every member is a known user",
        unknown_user_count=len(teams),
        unknown_users=", ".join(sorted(teams.index)[:MAX_REASONS]),
    )
