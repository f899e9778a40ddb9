"""PagerDuty's kinds' writers, for the apply engine: one per resource kind a PagerDuty plan holds."""

from __future__ import annotations

from nthlayer_pipelines.assets.pagerduty.services.writer import StandardsWriter
from nthlayer_pipelines.assets.pagerduty.teams.writer import MembershipWriter
from nthlayer_pipelines.core.kind import KindWriter, RunLog
from nthlayer_pipelines.resources.pagerduty.client import PagerDutyClient


def pagerduty_writers(client: PagerDutyClient, log: RunLog) -> dict[str, KindWriter]:
    writers: list[KindWriter] = [MembershipWriter(client, log), StandardsWriter(client, log)]
    return {writer.resource: writer for writer in writers}
