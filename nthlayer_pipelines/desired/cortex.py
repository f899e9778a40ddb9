"""Cortex teams as desired `Team`s: pure mapping, no I/O.

A team tag that is not a lowercase slug is refused rather than slugified: slugifying could fold two
Cortex teams onto one key, or silently rename a team that Git already declares under its slug.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from nthlayer_pipelines.core.model import Member, Role, SourceError, Team, normalize_email
from nthlayer_pipelines.resources.cortex.client import CortexMember, CortexTeam

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def teams_from_cortex(
    teams: Sequence[CortexTeam],
    *,
    role_map: Mapping[str, Role],
    default_role: Role,
    prune: bool,
) -> list[Team]:
    """Active Cortex teams as `Team`s, sorted by name, members sorted by email.

    Archived teams are not desired state. Members join by email (lowercased; a person listed twice is one
    member). A member's role is the most privileged of its mapped role tags (a role synced from an IdP has
    no tag and is matched by its name), else `default_role`. Every problem found is raised at once as one
    `SourceError`; a member without an email is never dropped silently.
    """
    lookup = {tag.strip().lower(): Role(role) for tag, role in role_map.items()}
    problems: list[str] = []
    mapped: list[Team] = []
    seen: dict[str, str] = {}
    for team in teams:
        if team.is_archived:
            continue
        tag = team.team_tag
        where = f"cortex team {tag!r}"
        if not SLUG.match(tag):
            suggestion = re.sub(r"[^a-z0-9_-]+", "-", tag.strip().lower()).strip("-_")
            problems.append(
                f"{where}: teamTag is not a lowercase slug (letters, digits, '-', '_'); rename it, "
                f"e.g. {suggestion!r}"
            )
            continue
        if tag in seen:
            problems.append(f"{where}: teamTag is listed twice (ids {seen[tag]} and {team.id})")
            continue
        seen[tag] = str(team.id)
        display_name = team.metadata.name.strip()
        if not display_name:
            problems.append(f"{where}: metadata.name is empty")
        roles_by_email: dict[str, Role] = {}
        for index, member in enumerate(team.members):
            email = normalize_email(member.email or "")
            if not email or not EMAIL.match(email):
                who = f"member {index} ({member.name})" if member.name else f"member {index}"
                reason = "has no email" if not email else f"has an invalid email {member.email!r}"
                problems.append(f"{where}: {who} {reason}; members join PagerDuty by email")
                continue
            role = member_role(member, lookup, default_role)
            previous = roles_by_email.get(email)
            if previous is None or role.rank > previous.rank:
                roles_by_email[email] = role
        mapped.append(
            Team(
                name=tag,
                display_name=display_name,
                members=tuple(Member(email=e, role=r) for e, r in sorted(roles_by_email.items())),
                prune=prune,
                source="cortex",
                origin=f"cortex:{tag}",
            )
        )
    if problems:
        raise SourceError(f"Cortex teams refused ({len(problems)} problem(s)):\n" + "\n".join(problems))
    return sorted(mapped, key=lambda t: t.name)


def member_role(member: CortexMember, lookup: Mapping[str, Role], default_role: Role) -> Role:
    """The most privileged role among the member's mapped role tags (keys of `lookup` lowercased)."""
    found = [
        lookup[key]
        for role in member.all_roles
        if (key := (role.tag or role.name or "").strip().lower()) in lookup
    ]
    return max(found, key=lambda r: r.rank) if found else default_role
