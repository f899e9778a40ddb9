"""The ledger: plans, approvals, the intent log and the refresh cursor, in SQL, with its own migrations."""

from nthlayer_pipelines.resources.ledger.migrate import Revision, head_revision
from nthlayer_pipelines.resources.ledger.schema import metadata
from nthlayer_pipelines.resources.ledger.store import (
    AFTER_REJECTION,
    APPLY_LOCK_KEY,
    DEFAULT_PROVIDER,
    WRITE_LOCK_KEY,
    Approval,
    BlastRadiusRefused,
    ChangeOutcome,
    Ledger,
    LedgerError,
    LedgerOutdatedError,
    LedgerResource,
    Outcome,
    StoredServices,
    StoredSnapshot,
    default_ledger_url,
    display_url,
    upgrade_ledger,
)

__all__ = [
    "AFTER_REJECTION",
    "APPLY_LOCK_KEY",
    "DEFAULT_PROVIDER",
    "WRITE_LOCK_KEY",
    "Approval",
    "BlastRadiusRefused",
    "ChangeOutcome",
    "Ledger",
    "LedgerError",
    "LedgerOutdatedError",
    "LedgerResource",
    "Outcome",
    "Revision",
    "StoredServices",
    "StoredSnapshot",
    "default_ledger_url",
    "display_url",
    "head_revision",
    "metadata",
    "upgrade_ledger",
]
