"""Alembic's entry point for the ledger's migrations. Run through `migrate.upgrade`, which hands over a
connection already inside the ledger's write transaction (and its lock), so a migration is all or nothing
and two processes never migrate at once."""

from alembic import context

from nthlayer_pipelines.resources.ledger.migrate import VERSION_TABLE
from nthlayer_pipelines.resources.ledger.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,  # Dagster's own `alembic_version` may live in the same database
    render_as_batch=True,  # SQLite alters a table by copying it
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
