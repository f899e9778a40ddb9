"""Links into the Dagster UI. A plan's approval, ready to launch: the `approve_plan` launchpad's config for
it, and the link that opens the launchpad holding that config, so an approver reads the plan and never types
its id. The global lineage with every group open (it starts with them collapsed, one box each)."""

from __future__ import annotations

import json
from urllib.parse import quote

from nthlayer_pipelines.core.model import Plan

APPROVE_JOB = "approve_plan"
APPROVE_OP = "approve"
DEFAULT_LOCATION = "nthlayer_pipelines"  # workspace.yaml's location_name
ASSET_GROUPS = ("desired", "observed", "reconcile")
# The lineage page reads the groups to open from `expanded` (AssetGraphExplorer in Dagster's UI), each
# named `global@global:<group>` there (unless the UI's per-code-location groups flag is on).
LINEAGE_EXPANDED_PATH = "/asset-groups?expanded=" + ",".join(f"global@global:{g}" for g in ASSET_GROUPS)


def approval_config_yaml(plan: Plan, *, blast_radius_exceeded: bool = False) -> str:
    """The launchpad config approving the whole plan, the comments saying what a person fills in or may
    narrow. Lines are short (under 40 characters) so the YAML shows whole in the UI's metadata column.
    Over the blast radius the override stays false: saying so is the approver's to do."""
    override = "      # true overrides the limits\n" if blast_radius_exceeded else ""
    return (
        f"ops:\n  {APPROVE_OP}:\n    config:\n"
        f"      plan_id: {json.dumps(plan.id)}\n"
        "      # your name or email:\n"
        '      approver: ""\n'
        '      comment: ""\n'
        f"      # [] is all {len(plan.changes)} changes\n"
        "      change_ids: []\n"
        f"{override}"
        "      allow_blast_radius: false\n"
    )


def approval_markdown(config_yaml: str, link: str) -> str:
    """The link that opens the launchpad holding the config, and the config itself to copy."""
    return (
        f"[Approve in the launchpad]({link}): `{APPROVE_JOB}` opens holding this config; "
        f"add your name as `approver` and launch.\n\n```yaml\n{config_yaml}```"
    )


def launchpad_link(config_yaml: str, *, location: str = DEFAULT_LOCATION, job: str = APPROVE_JOB) -> str:
    """The UI path that opens the job's launchpad in a tab of its own holding `config_yaml`: the webserver's
    `/jobs/<job>/playground/setup?config=` route (LaunchpadSetupRoot in Dagster's UI). Relative, so it
    opens on whichever address the reader reached the UI by (a proxy's, a port of their own)."""
    path = f"/locations/{quote(location, safe='')}/jobs/{job}/playground/setup"
    return f"{path}?config={quote(config_yaml, safe='')}"
