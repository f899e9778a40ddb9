"""Slack announcements through dagster-slack's resource, pointed at any Web API base URL.

slack_sdk does its own HTTP, so the shared layer's `ApiClient` cannot redact its answers; `RedactedWebClient`
applies the same `Redactor` at slack_sdk's one door for answers, and to slack_sdk's log lines.
"""

from __future__ import annotations

import logging
from typing import Any

from dagster_slack import SlackResource
from pydantic import Field
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from nthlayer_pipelines.resources.http.client import RedactingLogger, Redactor

logger = logging.getLogger("nthlayer_pipelines.slack")

SLACK_PUBLIC_API = "https://slack.com/api/"
DEFAULT_TIMEOUT_SECONDS = 30  # slack_sdk's own default


class RedactedWebClient(WebClient):
    """slack_sdk's client with the bot token redacted from every answer before slack_sdk reads it.

    Everything slack_sdk says about an answer comes from its body: the `error` field, the message for a
    body that is not JSON (which it cuts at 100 characters, possibly through the middle of a token, where
    no redactor could find it afterwards), the text of `SlackApiError`. Its log lines, the debug line that
    quotes a whole body included, go through the same redactor.
    """

    def __init__(self, token: str, *, base_url: str, timeout: int = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.redactor = Redactor([token])
        sdk_logger = logging.getLogger("slack_sdk.web.base_client")
        super().__init__(
            token,
            base_url=base_url,
            timeout=timeout,
            logger=RedactingLogger(sdk_logger, self.redactor),  # type: ignore[arg-type]
        )

    # slack_sdk 3.x (pinned in uv.lock): every answer, error statuses included, comes back through here.
    def _perform_urllib_http_request(self, *, url: str, args: dict[str, dict[str, Any]]) -> dict[str, Any]:
        answer = super()._perform_urllib_http_request(url=url, args=args)
        body = answer.get("body")
        if isinstance(body, str):
            answer["body"] = self.redactor(body)
        elif isinstance(body, bytes):
            answer["body"] = self.redactor.content(body)
        return answer


class SlackNotifier(SlackResource):
    """dagster-slack's SlackResource with a configurable base URL and a channel; empty token: Slack is off."""

    base_url: str = Field(default=SLACK_PUBLIC_API, description="Slack Web API base URL, ending in /api/.")
    channel: str = Field(
        default="", description="Channel for apply summaries and failures, e.g. #ops-changes."
    )
    dagster_url: str = Field(
        default="http://127.0.0.1:3000", description="The Dagster UI, for links to runs."
    )

    @property
    def enabled(self) -> bool:
        return bool(self.token and self.channel)

    def run_link(self, run_id: str) -> str:
        return f"{self.dagster_url.rstrip('/')}/runs/{run_id}"

    def get_client(self) -> WebClient:
        return RedactedWebClient(self.token, base_url=self.base_url)

    def post(self, *, text: str, blocks: list[dict[str, Any]] | None = None) -> str | None:
        """Post to the channel; returns an error description instead of raising.

        An announcement is a courtesy: a Slack outage must never fail the apply it reports on.
        slack_sdk raises on `ok: false`, so that path is covered by the same handler.
        """
        if not self.enabled:
            return "Slack is off (no SLACK_BOT_TOKEN or NTHLAYER_SLACK_CHANNEL)"
        try:
            self.get_client().chat_postMessage(channel=self.channel, text=text, blocks=blocks)
        except SlackApiError as error:
            data = error.response.data if error.response is not None else None
            reason = data.get("error") if isinstance(data, dict) else None
            reason = str(reason or "unknown error")
            logger.warning("Slack refused the message: %s", reason)
            return f"Slack refused the message: {reason}"
        except (SlackClientError, OSError) as error:
            logger.warning("Slack is unreachable: %s", type(error).__name__)
            return f"Slack is unreachable: {type(error).__name__}"
        except Exception as error:  # slack_sdk's own reading of an odd answer (a JSON list, not UTF-8) fails
            logger.warning("Slack's answer cannot be read: %s", type(error).__name__)
            return f"Slack's answer cannot be read: {type(error).__name__}"
        return None
