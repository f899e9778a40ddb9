"""Read a sandbox org from a YAML seed file, refusing a bad one with the file, field and reason.

Each provider reads its own section (pagerduty/seed.py, cortex/seed.py, slack/seed.py); the format is
in the package docstring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nthlayer_pipelines.sandbox.cortex import seed as cortex_seed
from nthlayer_pipelines.sandbox.org import SandboxOrg
from nthlayer_pipelines.sandbox.pagerduty import seed as pagerduty_seed
from nthlayer_pipelines.sandbox.seed_reader import SeedError, SeedReader, or_empty
from nthlayer_pipelines.sandbox.slack import seed as slack_seed

__all__ = ["SeedError", "load_seed", "org_from_seed"]


def load_seed(path: str | Path, *, seed: int = 0) -> SandboxOrg:
    """Build an org from a YAML seed file (see the package docstring for the format)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SeedError(source, "", f"cannot read the file: {error.strerror or error}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SeedError(source, where, f"not valid YAML: {getattr(error, 'problem', error)}") from error
    return org_from_seed({} if data is None else data, source=source, seed=seed)


def org_from_seed(data: Any, *, source: str = "<seed>", seed: int = 0) -> SandboxOrg:
    """Build an org from an already parsed seed document."""
    reader = SeedReader(source)
    root = reader.mapping(data, "", {"pagerduty", "cortex", "slack"})
    pagerduty = reader.mapping(or_empty(root.get("pagerduty")), "pagerduty", pagerduty_seed.SECTION_KEYS)
    cortex = reader.mapping(or_empty(root.get("cortex")), "cortex", cortex_seed.SECTION_KEYS)
    slack = reader.mapping(or_empty(root.get("slack")), "slack", slack_seed.SECTION_KEYS)
    org = SandboxOrg(seed, subdomain=pagerduty_seed.seed_subdomain(reader, pagerduty))
    pagerduty_seed.PagerDutySeedReader(source, org.pagerduty).read(pagerduty)
    cortex_seed.CortexSeedReader(source, org.cortex).read(cortex)
    slack_seed.SlackSeedReader(source, org.slack).read(slack)
    return org
