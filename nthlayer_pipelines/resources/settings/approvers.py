"""Who may approve, reject or retry a plan: NTHLAYER_APPROVERS, read as the other settings are."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from nthlayer_pipelines.resources.settings.kinds import SettingsError

APPROVERS_ENV_VAR = "NTHLAYER_APPROVERS"
POLICY_APPROVER = "policy"  # the name the pre-approval policy approves under; never a person's


class ApproverRefused(ValueError):
    """The named approver may not approve, reject or retry a plan."""


@dataclass(frozen=True)
class Approvers:
    """Who may approve, reject or retry a plan: `NTHLAYER_APPROVERS`, names or emails, compared ignoring
    case. `allowed` is None when the variable is unset: any name is accepted, with a warning."""

    allowed: frozenset[str] | None = None

    @classmethod
    def from_text(cls, text: str | None) -> Approvers:
        """Parse `NTHLAYER_APPROVERS`. None (unset) accepts anyone; "" (set but empty) accepts nobody."""
        if text is None:
            return cls(None)
        names = frozenset(part.strip().casefold() for part in text.split(",") if part.strip())
        if POLICY_APPROVER in names:
            raise SettingsError(
                f"{APPROVERS_ENV_VAR}={text!r}: {POLICY_APPROVER!r} names the pre-approval policy, "
                "not a person; list the people who may approve"
            )
        return cls(names)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Approvers:
        """`NTHLAYER_APPROVERS` alone, as the deployment's settings read it."""
        from nthlayer_pipelines.resources.settings.deployment import DeploymentSettings

        return DeploymentSettings.read_one("approvers", environ)

    @property
    def warning(self) -> str:
        """What an approval should say about the check; empty when the list is configured."""
        if self.allowed is None:
            return (
                f"{APPROVERS_ENV_VAR} is not set, so any name is accepted as an approver: "
                "set it to the people who may approve"
            )
        return ""

    def check(self, approver: str) -> str:
        """The approver, trimmed, when they may decide on a plan; `ApproverRefused` saying why otherwise."""
        name = (approver or "").strip()
        if not name:
            raise ApproverRefused("approver is empty: say who decides (a name or an email)")
        if name.casefold() == POLICY_APPROVER:
            raise ApproverRefused(
                f"{name!r} is the pre-approval policy's name, not a person's: approve under your own name"
            )
        if self.allowed is None or name.casefold() in self.allowed:
            return name
        if not self.allowed:
            raise ApproverRefused(
                f"{name} may not approve: {APPROVERS_ENV_VAR} is set but empty, so no person may approve "
                "(only the pre-approval policy does)"
            )
        listed = ", ".join(sorted(self.allowed))
        raise ApproverRefused(f"{name} may not approve: {APPROVERS_ENV_VAR} lists {listed}")
