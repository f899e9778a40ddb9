"""Where assets' outputs live between runs when every run is a pod of its own: the ledger's database.

Dagster's default IO manager pickles each output to a file under DAGSTER_HOME. On one machine that is
enough; under the K8s run launcher each run (and a re-execution of one step) is a new pod whose disk starts
empty and goes with it, so a run that materializes `change_plan` alone could not read the `divergences` an
earlier run stored. The ledger's database is already shared by every pod of the deployment, so outputs go
there: one row per asset and partition, replaced in one transaction (`Ledger.save_output`).

Values are pickled, as the default IO manager does, because the assets hand over models and lists as well as
DataFrames. Unpickling runs code: the rows are written by this deployment's runs alone, into the ledger,
which whoever could write could also approve a plan.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from nthlayer_pipelines.resources.ledger import Ledger, default_ledger_url, display_url
from nthlayer_pipelines.resources.settings import DeploymentSettings


class OutputMissing(LookupError):
    """An input whose upstream output was never stored in the ledger."""


class LedgerIOManager(dg.ConfigurableIOManager):
    """Assets' outputs pickled into the ledger's database, shared by every run's pod."""

    url: str = Field(
        default="", description="The ledger's SQLAlchemy URL; empty: a SQLite file under DAGSTER_HOME."
    )

    _ledger: Ledger | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # One connection pool for the run's steps; opening it also migrates a new, empty ledger.
        self._ledger = Ledger(self.url or default_ledger_url())

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._ledger is not None:
            self._ledger.dispose()
            self._ledger = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:  # used outside a run (a test's `build_output_context`)
            self._ledger = Ledger(self.url or default_ledger_url())
        return self._ledger

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        key, partition = _output_key(context)
        value = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        python_type = f"{type(obj).__module__}.{type(obj).__qualname__}"[:200]
        self.ledger.save_output(key, partition, value, run_id=context.run_id, python_type=python_type)
        context.add_output_metadata(
            {"stored_in": f"ledger {display_url(self.ledger.url)}", "stored_bytes": len(value)}
        )

    def load_input(self, context: dg.InputContext) -> Any:
        if not context.has_asset_key:
            return self._load(_op_output_key(context.upstream_output), "")
        key = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            return self._load(key, "")
        partitions = context.asset_partition_keys
        if len(partitions) == 1:
            return self._load(key, partitions[0])
        return {partition: self._load(key, partition) for partition in partitions}

    def _load(self, key: str, partition: str) -> Any:
        value = self.ledger.load_output(key, partition)
        if value is None:
            which = f"{key} (partition {partition})" if partition else key
            raise OutputMissing(
                f"no output of {which} is stored in the ledger at {display_url(self.ledger.url)}: "
                "materialize it first"
            )
        return pickle.loads(value)


def _output_key(context: dg.OutputContext) -> tuple[str, str]:
    """(asset key, partition key or ""): an asset's latest output replaces the one before."""
    if not context.has_asset_key:
        return _op_output_key(context), ""
    partition = context.asset_partition_key if context.has_asset_partitions else ""
    return context.asset_key.to_user_string(), partition


def _op_output_key(context: dg.OutputContext | None) -> str:
    """An op's output belongs to its run: run id, step key and output name."""
    if context is None:
        raise OutputMissing("an input with neither an asset key nor an upstream output to load")
    return "/".join(context.get_identifier())


def io_managers_from_env(environ: Mapping[str, str]) -> dict[str, LedgerIOManager]:
    return io_managers(DeploymentSettings.from_env(environ))


def io_managers(settings: DeploymentSettings) -> dict[str, LedgerIOManager]:
    """The deployment's IO manager as `NTHLAYER_IO_MANAGER` names it: `ledger` stores outputs where
    `NTHLAYER_LEDGER_URL` points; unset or `filesystem`, nothing here, and Dagster's default applies."""
    if settings.io_manager == "filesystem":
        return {}
    # An EnvVar keeps the URL's password out of the run config, as the ledger resource does.
    return {"io_manager": LedgerIOManager(url=settings.bound("ledger_url"))}
