"""PagerDuty as a Dagster resource: the deployment's settings for the client, and the client it builds."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from pydantic import Field

from nthlayer_pipelines.resources.http.ratelimit import (
    DEFAULT_LIMIT,
    DEFAULT_WINDOW_SECONDS,
    TokenBucket,
    shared_bucket,
)
from nthlayer_pipelines.resources.pagerduty.client import DEFAULT_API_URL, PagerDutyClient
from nthlayer_pipelines.resources.pagerduty.incremental import (
    DEFAULT_FULL_REFRESH_EVERY,
    DEFAULT_MAX_CURSOR_AGE,
    RefreshPolicy,
)


class PagerDutyResource(dg.ConfigurableResource):
    """PagerDuty's REST API. Bind `api_token` with `dg.EnvVar("PAGERDUTY_API_TOKEN")`."""

    api_url: str = Field(default=DEFAULT_API_URL, description="EU accounts: https://api.eu.pagerduty.com")
    api_token: str = Field(
        repr=False, description="A REST API key; from the PAGERDUTY_API_TOKEN environment variable."
    )
    timeout_seconds: float = Field(default=30.0, description="Per request, before a retry.")
    max_attempts: int = Field(default=6, description="Attempts per request, the first included.")
    from_email: str = Field(
        default="", description="Sent as `From` on writes, for PagerDuty's change tracking."
    )
    max_concurrency: int = Field(
        default=16,
        ge=1,
        description=(
            "Requests in flight at once: a listing's pages, many teams' members, the apply's teams."
        ),
    )
    rate_limit: int = Field(
        default=DEFAULT_LIMIT, ge=1, description="Requests a window per API key (PagerDuty: 960 a minute)."
    )
    rate_window_seconds: float = Field(
        default=DEFAULT_WINDOW_SECONDS, gt=0, description="The rate limit's window, in seconds."
    )
    rate_burst: int = Field(
        default=0, ge=0, description="Requests sent without pacing after a pause; 0: one second's worth."
    )
    read_only: bool = Field(
        default=False, description="Refuse every write before it is sent (`nthlayer plan`)."
    )
    full_refresh_every_hours: float = Field(
        default=DEFAULT_FULL_REFRESH_EVERY / timedelta(hours=1),
        gt=0,
        description="A refresh reads every team again at least this often; between, only what audit "
        "records name. The nightly audit always reads everything.",
    )
    max_cursor_age_hours: float = Field(
        default=DEFAULT_MAX_CURSOR_AGE / timedelta(hours=1),
        gt=0,
        description="An incremental refresh replays at most this much audit history, else reads everything.",
    )

    def refresh_policy(self) -> RefreshPolicy:
        return RefreshPolicy(
            max_cursor_age=timedelta(hours=self.max_cursor_age_hours),
            full_refresh_every=timedelta(hours=self.full_refresh_every_hours),
        )

    def rate_limiter(self) -> TokenBucket:
        """The process's bucket for this API URL and token, shared by every client, asset and op."""
        return shared_bucket(
            self.api_url,
            self.api_token,
            limit=self.rate_limit,
            window_seconds=self.rate_window_seconds,
            burst=self.rate_burst or None,
        )

    def client(self) -> PagerDutyClient:
        """A new client; use it as a context manager so its connections are closed."""
        return PagerDutyClient(
            self.api_url,
            self.api_token,
            timeout=self.timeout_seconds,
            max_attempts=self.max_attempts,
            from_email=self.from_email or None,
            max_concurrency=self.max_concurrency,
            rate_limiter=self.rate_limiter(),
            read_only=self.read_only,
        )
