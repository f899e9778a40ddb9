"""Cortex's teams: each with a tag, members and their roles, looked up by tag or id."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class CortexRole:
    tag: str
    name: str


@dataclass(slots=True)
class CortexMember:
    name: str
    email: str
    roles: list[CortexRole] = field(default_factory=list)
    notifications_enabled: bool = True


@dataclass(slots=True)
class CortexTeam:
    id: str
    tag: str
    name: str
    description: str = ""
    summary: str = ""
    archived: bool = False
    members: list[CortexMember] = field(default_factory=list)
    slack_channels: list[str] = field(default_factory=list)
    links: list[dict[str, str]] = field(default_factory=list)


class CortexOrg:
    """Cortex teams, looked up by tag or id."""

    def __init__(self, seed: int, lock: threading.RLock) -> None:
        self._seed = seed
        self._counter = 0
        self.lock = lock
        self.teams: dict[str, CortexTeam] = {}
        self._by_tag: dict[str, CortexTeam] = {}

    def add_team(
        self,
        tag: str,
        name: str,
        *,
        description: str = "",
        summary: str = "",
        archived: bool = False,
        members: Iterable[CortexMember] = (),
        slack_channels: Iterable[str] = (),
        id: str | None = None,
    ) -> CortexTeam:
        with self.lock:
            if tag in self._by_tag:
                raise ValueError(f"a Cortex team tagged {tag!r} already exists")
            team_id = id or self._next_id()
            if team_id in self.teams:
                raise ValueError(f"a Cortex team with id {team_id!r} already exists")
            team = CortexTeam(
                team_id, tag, name, description, summary, archived, list(members), list(slack_channels)
            )
            self.teams[team_id] = team
            self._by_tag[tag] = team
            return team

    def find(self, tag_or_id: str) -> CortexTeam | None:
        return self._by_tag.get(tag_or_id) or self.teams.get(tag_or_id)

    def _next_id(self) -> str:
        while True:
            self._counter += 1
            digest = hashlib.blake2b(f"{self._seed}:{self._counter}".encode(), digest_size=7).hexdigest()
            candidate = "en" + digest
            if candidate not in self.teams:
                return candidate

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "teams": [
                    {
                        "id": t.id,
                        "tag": t.tag,
                        "name": t.name,
                        "description": t.description,
                        "archived": t.archived,
                        "members": [
                            {"name": m.name, "email": m.email, "roles": [r.tag for r in m.roles]}
                            for m in t.members
                        ],
                    }
                    for t in self.teams.values()
                ]
            }
