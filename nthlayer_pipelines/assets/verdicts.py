"""How an asset check says what failed: one reason a line, in its description (what `nthlayer plan`
prints) and in its `reasons` metadata (what the UI shows).

Checks are blocking: a failed check skips everything downstream in the same run, so a plan is never
computed from a snapshot that cannot be trusted.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

MAX_REASONS = 20  # a broken snapshot can fail on thousands of rows: the first few say what is wrong


def verdict(reasons: Sequence[str], passed: str, **metadata: Any) -> dg.AssetCheckResult:
    """Passed when there is no reason to fail; `passed` says so in words."""
    shown = list(reasons[:MAX_REASONS])
    if len(reasons) > MAX_REASONS:
        shown.append(f"... and {len(reasons) - MAX_REASONS} more")
    return dg.AssetCheckResult(
        passed=not reasons,
        description="\n".join(shown) or passed,
        metadata={**metadata, "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in shown) or passed)},
    )
