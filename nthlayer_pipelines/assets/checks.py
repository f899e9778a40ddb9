"""Asset checks that catch a broken snapshot before it becomes a plan.

They are blocking: a failed check skips everything downstream in the same run, so a plan is never
computed from a snapshot that cannot be trusted. A failed check says what failed, one reason a line: in
its description (what `nthlayer plan` prints) and in its `reasons` metadata (what the UI shows).
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd

from nthlayer_pipelines.model import DesiredState, DivergenceKind, Plan, Role
from nthlayer_pipelines.reconcile.safety import assess_blast_radius, rosters_from_memberships
from nthlayer_pipelines.resources.settings import ReconcileSettings

MAX_REASONS = 20  # a broken snapshot can fail on thousands of rows: the first few say what is wrong


def _verdict(reasons: Sequence[str], passed: str, **metadata: Any) -> dg.AssetCheckResult:
    """Passed when there is no reason to fail; `passed` says so in words."""
    shown = list(reasons[:MAX_REASONS])
    if len(reasons) > MAX_REASONS:
        shown.append(f"... and {len(reasons) - MAX_REASONS} more")
    return dg.AssetCheckResult(
        passed=not reasons,
        description="\n".join(shown) or passed,
        metadata={**metadata, "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in shown) or passed)},
    )


@dg.asset_check(asset="pagerduty_users", blocking=True, description="No two PagerDuty users share an email.")
def pagerduty_users_have_unique_emails(pagerduty_users: pd.DataFrame) -> dg.AssetCheckResult:
    duplicated = pagerduty_users[pagerduty_users["email"].duplicated(keep=False)].dropna(subset=["email"])
    users = duplicated.groupby("email")["user_id"].apply(sorted)
    emails = sorted(users.index)
    return _verdict(
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
    pagerduty_memberships: pd.DataFrame, pagerduty_users: pd.DataFrame
) -> dg.AssetCheckResult:
    unknown = pagerduty_memberships[~pagerduty_memberships["user_id"].isin(pagerduty_users["user_id"])]
    teams = unknown.groupby("user_id")["team_id"].apply(lambda ids: sorted(set(ids)))
    return _verdict(
        [
            f"user {user} is a member of {', '.join(teams[user])} but not in the users snapshot"
            for user in sorted(teams.index)
        ],
        "every member is a known user",
        unknown_user_count=len(teams),
        unknown_users=", ".join(sorted(teams.index)[:MAX_REASONS]),
    )


@dg.asset_check(
    asset="desired_state",
    blocking=True,
    description="Every desired team has at least one manager: a team without one is almost always a mistake.",
)
def desired_teams_have_a_manager(desired_state: DesiredState) -> dg.AssetCheckResult:
    without = [t for t in desired_state.teams if t.members and all(m.role != Role.MANAGER for m in t.members)]
    return _verdict(
        [
            f"{t.name} ({t.source}, {t.origin or 'no origin'}): none of its {len(t.members)} members is a "
            "manager; make one a manager"
            for t in without
        ],
        "every desired team has a manager",
        teams_without_manager_count=len(without),
        teams=", ".join(t.name for t in without[:50]),
    )


@dg.asset_check(
    asset="divergences",
    blocking=True,
    description="Few desired emails lack a PagerDuty account: many at once means a broken users snapshot.",
)
def unresolved_users_below_threshold(
    reconcile: ReconcileSettings, divergences: pd.DataFrame
) -> dg.AssetCheckResult:
    unresolved = divergences[divergences["kind"] == DivergenceKind.UNRESOLVED_USER.value]
    emails = sorted(unresolved["email"].dropna().unique())
    count, threshold = len(emails), reconcile.max_unresolved_users
    over = count > threshold
    return _verdict(
        [
            f"{count} desired emails have no PagerDuty user, more than NTHLAYER_MAX_UNRESOLVED_USERS "
            f"({threshold}): {', '.join(emails[:MAX_REASONS])}{' ...' if count > MAX_REASONS else ''}"
        ]
        if over
        else [],
        f"{count} desired emails without a PagerDuty user, at most {threshold}",
        unresolved_user_count=count,
        threshold=threshold,
        emails=", ".join(emails[:MAX_REASONS]),
    )


@dg.asset_check(
    asset="change_plan",
    additional_ins={"pagerduty_memberships": dg.AssetIn("pagerduty_memberships")},
    blocking=True,
    description=(
        "The plan removes no more than the blast-radius limits allow and leaves every team a manager and a "
        "member; a plan over them is never applied unless its approval says allow_blast_radius: true."
    ),
)
def change_plan_within_blast_radius(
    reconcile: ReconcileSettings, change_plan: Plan, pagerduty_memberships: pd.DataFrame
) -> dg.AssetCheckResult:
    verdict = assess_blast_radius(
        change_plan, rosters_from_memberships(pagerduty_memberships), reconcile.blast_radius_limits()
    )
    return _verdict(verdict.reasons, "within limits", plan_id=change_plan.id, removals=verdict.removals)


@dg.asset_check(
    asset="change_plan",
    blocking=True,
    description=(
        "Every team's PagerDuty team is known: a team whose name several PagerDuty teams carry gets no "
        "changes until a person pins it; the other teams' changes are planned as usual."
    ),
)
def change_plan_identifies_every_team(change_plan: Plan) -> dg.AssetCheckResult:
    blocked = change_plan.blocking_findings
    return _verdict(
        [f"{f.team}: {f.detail}" for f in blocked],
        "every team identified",
        plan_id=change_plan.id,
        blocked_team_count=len(blocked),
        teams=", ".join(f.team or "" for f in blocked[:50]),
        blocked=dg.MetadataValue.md(
            "\n".join(f"- **{f.team}**: {f.detail}" for f in blocked[:50]) or "every team identified"
        ),
    )


BLAST_RADIUS_CHECK = "change_plan_within_blast_radius"  # `nthlayer plan` exits 3 when it alone fails

ALL_CHECKS = [
    pagerduty_users_have_unique_emails,
    pagerduty_memberships_name_known_users,
    desired_teams_have_a_manager,
    unresolved_users_below_threshold,
    change_plan_within_blast_radius,
    change_plan_identifies_every_team,
]
