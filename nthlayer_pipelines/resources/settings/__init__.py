"""The deployment's settings: every environment variable, read and checked in one place (`deployment`), and
the resources that hold the run-time settings that are not a provider's (`reconcile`, `approvers`)."""

from nthlayer_pipelines.resources.settings.approvers import (
    APPROVERS_ENV_VAR,
    POLICY_APPROVER,
    ApproverRefused,
    Approvers,
)
from nthlayer_pipelines.resources.settings.deployment import (
    DEFAULT_AUDIT_CRON,
    DEFAULT_REFRESH_CRON,
    DEFAULT_SENSOR_INTERVAL_SECONDS,
    IO_MANAGER_CHOICES,
    DeploymentSettings,
    misspelt,
)
from nthlayer_pipelines.resources.settings.kinds import SettingsError
from nthlayer_pipelines.resources.settings.reconcile import (
    DEFAULT_DEFINITIONS,
    DefinitionsRepository,
    ReconcileSettings,
)

__all__ = [
    "APPROVERS_ENV_VAR",
    "DEFAULT_AUDIT_CRON",
    "DEFAULT_DEFINITIONS",
    "DEFAULT_REFRESH_CRON",
    "DEFAULT_SENSOR_INTERVAL_SECONDS",
    "IO_MANAGER_CHOICES",
    "POLICY_APPROVER",
    "ApproverRefused",
    "Approvers",
    "DefinitionsRepository",
    "DeploymentSettings",
    "ReconcileSettings",
    "SettingsError",
    "misspelt",
]
