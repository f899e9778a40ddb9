"""The organisation the sandbox serves: one account at each emulated provider, under one lock.

Each provider's state lives in its own folder (pagerduty/org.py, cortex/org.py, slack/org.py) as plain
data and in-memory indexes. The server thread and test code may both touch an org, so every read or
write of more than one field happens under `SandboxOrg.lock`, which the providers' orgs share.
"""

from __future__ import annotations

import threading
from typing import Any

from nthlayer_pipelines.sandbox.cortex.org import CortexOrg
from nthlayer_pipelines.sandbox.pagerduty.org import IdAllocator, PagerDutyOrg
from nthlayer_pipelines.sandbox.slack.org import SlackOrg


class SandboxOrg:
    """One organisation across the emulated providers.

    `subdomain` is the PagerDuty account's (see `new_subdomain`): None gives this org one of its own, so
    two orgs built from one seed are two accounts unless the seed pins it."""

    def __init__(self, seed: int = 0, *, subdomain: str | None = None) -> None:
        self.seed = seed
        self.lock = threading.RLock()
        self.pagerduty = PagerDutyOrg(IdAllocator(seed), self.lock, subdomain)
        self.cortex = CortexOrg(seed, self.lock)
        self.slack = SlackOrg(seed, self.lock)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "pagerduty": self.pagerduty.to_dict(),
                "cortex": self.cortex.to_dict(),
                "slack": self.slack.to_dict(),
            }
