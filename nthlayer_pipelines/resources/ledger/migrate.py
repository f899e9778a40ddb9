"""The ledger's schema revisions: Alembic migrations under `migrations/`, with a version table of their own.

A new, empty database is created at the head revision when a `Ledger` first opens it. A ledger at an older
revision is upgraded only when someone says so (`nthlayer db upgrade`): every process that opens it refuses
until then, naming the command, so a half-deployed release never writes rows an older schema cannot hold.
A ledger written by release 20173e0 (tables, no version table) counts as revision `BASELINE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

# Not `alembic_version`: Dagster keeps its own under that name, and a deployment may share the database.
VERSION_TABLE = "nthlayer_alembic_version"
BASELINE = "0001"  # release 20173e0's schema, which had no version table
_MIGRATIONS = Path(__file__).with_name("migrations")
_BASELINE_TABLE = "nthlayer_plans"  # present in every ledger since the first release


@dataclass(frozen=True)
class Revision:
    """Where a ledger's schema stands: `current` is None for a database without a ledger in it."""

    current: str | None
    head: str

    @property
    def empty(self) -> bool:
        return self.current is None

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None  # the migrations folder ships with the package
    return head


def revision(connection: Connection) -> Revision:
    """The ledger's revision, read in the caller's transaction."""
    current = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()
    if current is None and sa.inspect(connection).has_table(_BASELINE_TABLE):
        current = BASELINE
    return Revision(current=current, head=head_revision())


def upgrade(connection: Connection, target: str = "head") -> Revision:
    """Migrate the ledger to `target` in the caller's transaction; returns where it stood before."""
    before = revision(connection)
    config = _config(connection)
    if before.current == BASELINE and not _versioned(connection):
        command.stamp(config, BASELINE)
    command.upgrade(config, target)
    return before


def _versioned(connection: Connection) -> bool:
    return sa.inspect(connection).has_table(VERSION_TABLE)


def is_known(revision_id: str) -> bool:
    """Whether this version's migrations know the revision (else a newer release wrote the ledger)."""
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision_id) is not None
    except Exception:  # alembic raises its own errors for an unknown or malformed id
        return False
