"""Membership's checks: a snapshot that would resolve too few people is not planned from."""

from typing import TYPE_CHECKING

import dagster as dg

from nthlayer_pipelines.assets.tables import Table
from nthlayer_pipelines.assets.verdicts import MAX_REASONS, verdict
from nthlayer_pipelines.core.lazy import lazy_import
from nthlayer_pipelines.core.model import DivergenceKind
from nthlayer_pipelines.resources.pagerduty.observed import USERS_LISTING, USERS_READ
from nthlayer_pipelines.resources.settings import ReconcileSettings

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_import("pandas")


@dg.asset_check(
    asset="divergences",
    blocking=True,
    description="Few desired emails lack a PagerDuty account: many at once means a broken users snapshot.",
)
def unresolved_users_below_threshold(reconcile: ReconcileSettings, divergences: Table) -> dg.AssetCheckResult:
    unresolved = divergences[divergences["kind"] == DivergenceKind.UNRESOLVED_USER.value]
    emails = sorted(unresolved["email"].dropna().unique())
    count, threshold = len(emails), reconcile.max_unresolved_users
    over = count > threshold
    users_read = str(divergences.attrs.get(USERS_READ, USERS_LISTING))
    return verdict(
        [
            f"{count} desired emails have no PagerDuty user, more than NTHLAYER_MAX_UNRESOLVED_USERS "
            f"({threshold}): {', '.join(emails[:MAX_REASONS])}{' ...' if count > MAX_REASONS else ''}"
        ]
        if over
        else [],
        f"{count} desired emails without a PagerDuty user, at most {threshold}"
        + ("" if users_read == USERS_LISTING else f" (users read: {users_read}: each unseen one looked up)"),
        unresolved_user_count=count,
        users_read=users_read,
        threshold=threshold,
        emails=", ".join(emails[:MAX_REASONS]),
    )
