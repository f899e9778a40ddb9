"""Checks that catch a broken PagerDuty snapshot before it becomes a plan."""

from typing import TYPE_CHECKING

import dagster as dg

from nthlayer_pipelines.assets.tables import Table
from nthlayer_pipelines.assets.verdicts import MAX_REASONS, verdict
from nthlayer_pipelines.core.lazy import lazy_import

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")


@dg.asset_check(asset="pagerduty_users", blocking=True, description="No two PagerDuty users share an email.")
def pagerduty_users_have_unique_emails(pagerduty_users: Table) -> dg.AssetCheckResult:
    duplicated = pagerduty_users[pagerduty_users["email"].duplicated(keep=False)].dropna(subset=["email"])
    users = duplicated.groupby("email")["user_id"].apply(sorted)
    emails = sorted(users.index)
    return verdict(
        [
            f"{email} is the email of {len(users[email])} PagerDuty users: {', '.join(users[email])}"
            for email in emails
        ],
        "every PagerDuty user has an email of their own",
        duplicate_email_count=len(emails),
        duplicates=", ".join(emails[:MAX_REASONS]),
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
