"""Asset checks that catch a broken snapshot before it becomes a plan.

They are blocking: a failed check skips everything downstream in the same run, so a plan is never
computed from a snapshot that cannot be trusted.
"""

import dagster as dg
import pandas as pd

from nthlayer_pipelines.model import DesiredState, DivergenceKind, Plan, Role
from nthlayer_pipelines.reconcile.safety import assess_blast_radius, rosters_from_memberships
from nthlayer_pipelines.resources.settings import ReconcileSettings


@dg.asset_check(asset="pagerduty_users", blocking=True, description="No two PagerDuty users share an email.")
def pagerduty_users_have_unique_emails(pagerduty_users: pd.DataFrame) -> dg.AssetCheckResult:
    duplicated = pagerduty_users[pagerduty_users["email"].duplicated(keep=False)]
    emails = sorted(set(duplicated["email"].dropna()))
    return dg.AssetCheckResult(
        passed=not emails,
        metadata={"duplicate_email_count": len(emails), "duplicates": ", ".join(emails[:20])},
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
    unknown = sorted(set(pagerduty_memberships["user_id"]) - set(pagerduty_users["user_id"]))
    return dg.AssetCheckResult(
        passed=not unknown,
        metadata={"unknown_user_count": len(unknown), "unknown_users": ", ".join(unknown[:20])},
    )


@dg.asset_check(
    asset="desired_state",
    blocking=True,
    description="Every desired team has at least one manager: a team without one is almost always a mistake.",
)
def desired_teams_have_a_manager(desired_state: DesiredState) -> dg.AssetCheckResult:
    without = [
        t.name for t in desired_state.teams if t.members and all(m.role != Role.MANAGER for m in t.members)
    ]
    return dg.AssetCheckResult(
        passed=not without,
        metadata={"teams_without_manager_count": len(without), "teams": ", ".join(without[:50])},
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
    count = int(unresolved["email"].nunique())
    return dg.AssetCheckResult(
        passed=count <= reconcile.max_unresolved_users,
        metadata={
            "unresolved_user_count": count,
            "threshold": reconcile.max_unresolved_users,
            "emails": ", ".join(sorted(unresolved["email"].dropna().unique())[:20]),
        },
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
    return dg.AssetCheckResult(
        passed=not verdict.exceeded,
        metadata={
            "plan_id": change_plan.id,
            "removals": verdict.removals,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in verdict.reasons) or "within limits"),
        },
    )


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
    return dg.AssetCheckResult(
        passed=not blocked,
        metadata={
            "plan_id": change_plan.id,
            "blocked_team_count": len(blocked),
            "teams": ", ".join(f.team or "" for f in blocked[:50]),
            "blocked": dg.MetadataValue.md(
                "\n".join(f"- **{f.team}**: {f.detail}" for f in blocked[:50]) or "every team identified"
            ),
        },
    )


ALL_CHECKS = [
    pagerduty_users_have_unique_emails,
    pagerduty_memberships_name_known_users,
    desired_teams_have_a_manager,
    unresolved_users_below_threshold,
    change_plan_within_blast_radius,
    change_plan_identifies_every_team,
]
