"""Slack: the channels the bot can post to, and every message it posted."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class SlackMessage:
    channel: str
    ts: str
    text: str
    blocks: Any = None
    thread_ts: str | None = None


class SlackOrg:
    """Channels the bot can post to, and every message it posted."""

    BOT_USER_ID = "U0SANDBOX1"
    BOT_ID = "B0SANDBOX1"
    TEAM_ID = "T0SANDBOX1"

    def __init__(self, seed: int, lock: threading.RLock) -> None:
        self._seed = seed
        self.lock = lock
        self.channels: dict[str, str] = {}  # channel id -> name
        self._ids_by_name: dict[str, str] = {}
        self.messages: list[SlackMessage] = []
        self._last_micros = 0

    def add_channel(self, name: str, *, id: str | None = None) -> str:
        name = name.removeprefix("#")
        with self.lock:
            if name in self._ids_by_name:
                raise ValueError(f"a Slack channel named {name!r} already exists")
            channel_id = (
                id or "C" + hashlib.blake2b(f"{self._seed}:{name}".encode(), digest_size=5).hexdigest()
            )
            channel_id = channel_id.upper()
            self.channels[channel_id] = name
            self._ids_by_name[name] = channel_id
            return channel_id

    def resolve(self, channel: str) -> str | None:
        """A channel id from an id, a name or a #name."""
        if channel in self.channels:
            return channel
        return self._ids_by_name.get(channel.removeprefix("#"))

    def post(
        self, channel_id: str, text: str, blocks: Any = None, thread_ts: str | None = None
    ) -> SlackMessage:
        with self.lock:
            # Slack's ts is a unique, increasing "seconds.micros" string.
            micros = max(time.time_ns() // 1000, self._last_micros + 1)
            self._last_micros = micros
            ts = f"{micros // 1_000_000}.{micros % 1_000_000:06d}"
            message = SlackMessage(channel_id, ts, text, blocks, thread_ts)
            self.messages.append(message)
            return message

    def messages_in(self, channel: str) -> Iterator[SlackMessage]:
        channel_id = self.resolve(channel)
        return (m for m in list(self.messages) if m.channel == channel_id)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "channels": [{"id": cid, "name": name} for cid, name in self.channels.items()],
                "messages": [
                    {
                        "channel": m.channel,
                        "ts": m.ts,
                        "text": m.text,
                        "blocks": m.blocks,
                        "thread_ts": m.thread_ts,
                    }
                    for m in self.messages
                ],
            }
