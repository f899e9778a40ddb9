"""Cortex as a Dagster resource: the source's settings (off without a URL), its role mapping, its client."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from nthlayer_pipelines.core.model import Role, SourceError
from nthlayer_pipelines.resources.cortex.client import DEFAULT_ROLE_MAP, CortexClient


class CortexResource(dg.ConfigurableResource):
    """Cortex as a desired-state source; an empty `api_url` turns it off. Bind `api_token` with
    `dg.EnvVar("CORTEX_API_TOKEN")`."""

    api_url: str = Field(
        default="", description="e.g. https://api.getcortexapp.com; empty: the source is off."
    )
    api_token: str = Field(
        default="", repr=False, description="From the CORTEX_API_TOKEN environment variable."
    )
    role_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ROLE_MAP),
        description="Cortex role tag -> PagerDuty role (observer, responder, manager).",
    )
    default_role: str = Field(default="responder", description="The role of a member with no mapped tag.")
    prune: bool = Field(default=False, description="Remove PagerDuty members a Cortex team does not list.")
    timeout_seconds: float = Field(default=30.0, description="Per request, before a retry.")
    max_attempts: int = Field(default=6, description="Attempts per request, the first included.")

    @property
    def enabled(self) -> bool:
        return bool(self.api_url.strip())

    def roles(self) -> tuple[dict[str, Role], Role]:
        """`role_map` and `default_role` as PagerDuty roles; ValueError naming the entry that is not one."""
        known = ", ".join(r.value for r in Role)
        mapped: dict[str, Role] = {}
        for tag, role in self.role_map.items():
            if role not in set(Role):
                raise ValueError(
                    f"CortexResource.role_map[{tag!r}]: {role!r} is not a PagerDuty role ({known})"
                )
            mapped[tag] = Role(role)
        if self.default_role not in set(Role):
            raise ValueError(
                f"CortexResource.default_role: {self.default_role!r} is not a PagerDuty role ({known})"
            )
        return mapped, Role(self.default_role)

    def client(self) -> CortexClient:
        """A new client; use it as a context manager so its connections are closed."""
        if not self.enabled:
            raise SourceError("Cortex source is off: no api_url is set")
        return CortexClient(
            self.api_url, self.api_token, timeout=self.timeout_seconds, max_attempts=self.max_attempts
        )
