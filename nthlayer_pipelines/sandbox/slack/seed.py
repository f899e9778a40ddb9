"""The `slack` part of a seed file: the channels the bot may post to, by name or `{name, id}`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nthlayer_pipelines.sandbox.seed_reader import SectionReader, join
from nthlayer_pipelines.sandbox.slack.org import SlackOrg

SECTION_KEYS = {"channels"}


class SlackSeedReader(SectionReader[SlackOrg]):
    def read(self, section: Mapping[str, Any]) -> None:
        self.each(section, "slack", "channels", self.channel)

    def channel(self, item: Any, field: str) -> None:
        if isinstance(item, str):
            name, channel_id = self.text(item, field), None
        else:
            item = self.mapping(item, field, {"name", "id"}, ("name",))
            name = self.text(item["name"], join(field, "name"))
            channel_id = item.get("id")
            if channel_id is not None:
                channel_id = self.text(channel_id, join(field, "id"))
                if not re.fullmatch(r"[CG][0-9A-Z]{6,}", channel_id):
                    raise self.fail(join(field, "id"), f"{channel_id!r} is not a Slack channel id (C...)")
        if self.org.resolve(name) is not None:
            raise self.fail(field, f"channel {name!r} is already declared")
        self.org.add_channel(name, id=channel_id)
