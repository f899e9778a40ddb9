"""Generate a PagerDuty org of any size, the same for the same arguments."""

from __future__ import annotations

import random

from nthlayer_pipelines.sandbox.org import SandboxOrg
from nthlayer_pipelines.sandbox.pagerduty.models import (
    SCHEDULE_TARGET,
    EscalationPolicy,
    EscalationTarget,
    RuleSpec,
)
from nthlayer_pipelines.sandbox.pagerduty.org import LayerSpec

MAX_DEFAULT_USERS = 20_000
DEFAULT_MEMBERS_PER_TEAM = 10
GENERATED_SLACK_CHANNEL = "ops-changes"

_FIRST_NAMES = (
    "Ada", "Alan", "Barbara", "Brian", "Claude", "Dennis", "Donald", "Edsger", "Frances", "Grace",
    "Hedy", "Ivan", "Jean", "John", "Ken", "Leslie", "Margaret", "Niklaus", "Radia", "Tim",
)  # fmt: skip
_LAST_NAMES = (
    "Allen", "Backus", "Cerf", "Dijkstra", "Engelbart", "Floyd", "Hamilton", "Hopper", "Kahn", "Knuth",
    "Lamport", "Liskov", "Lovelace", "McCarthy", "Perlman", "Ritchie", "Shannon", "Thompson", "Turing",
    "Wirth",
)  # fmt: skip
_TEAM_WORDS = (
    "Payments", "Search", "Checkout", "Identity", "Billing", "Storage", "Messaging", "Platform", "Data",
    "Mobile", "Network", "Ledger", "Catalog", "Pricing", "Shipping", "Fraud", "Growth", "Edge",
)  # fmt: skip
# After the first three members (one of each role), roles are drawn with these weights.
_EXTRA_ROLES = ("responder", "observer", "manager")
_EXTRA_ROLE_WEIGHTS = (6, 3, 1)
_TIERS = ("critical", "high", "standard")


def default_user_count(teams: int, members_per_team: int) -> int:
    return min(MAX_DEFAULT_USERS, max(teams * 4, members_per_team))


def generate_org(
    teams: int,
    members_per_team: int = DEFAULT_MEMBERS_PER_TEAM,
    users: int | None = None,
    seed: int = 0,
    *,
    subdomain: str | None = None,
) -> SandboxOrg:
    """An org of `teams` PagerDuty teams with `members_per_team` members each, drawn from `users` users.

    Each team has a manager, a responder and an observer (when it has three members or more), a schedule
    `<team> Primary` rotating through its first three members, an escalation policy `<team> On-Call`
    (first its manager, then the schedule) and a service `<team> API` on it, of tier critical, high or
    standard in turn; every fourth critical service acknowledges for 1800 s where the others take 600.
    Users default to min(20000, max(teams * 4, members_per_team)). A Slack channel `ops-changes` is
    created too. The same arguments give the same ids and names; the account's subdomain is a new one
    each time unless `subdomain` pins it (see `org.new_subdomain`).
    """
    if teams < 0:
        raise ValueError(f"teams must be >= 0, got {teams}")
    if members_per_team < 1:
        raise ValueError(f"members_per_team must be >= 1, got {members_per_team}")
    user_count = default_user_count(teams, members_per_team) if users is None else users
    if user_count < members_per_team:
        raise ValueError(f"users ({user_count}) must be at least members_per_team ({members_per_team})")

    rng = random.Random(seed)
    org = SandboxOrg(seed, subdomain=subdomain)
    pagerduty = org.pagerduty
    width = max(5, len(str(user_count)))
    user_ids = []
    for index in range(user_count):
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        number = f"{index + 1:0{width}d}"
        email = f"{first}.{last}.{number}@example.com".lower()
        user_ids.append(pagerduty.add_user(f"{first} {last} {number}", email, "user").id)

    team_width = max(4, len(str(teams)))
    policies: list[EscalationPolicy] = []
    rotations: list[list[str]] = []
    for index in range(teams):
        word = _TEAM_WORDS[index % len(_TEAM_WORDS)]
        team = pagerduty.add_team(f"{word} {index + 1:0{team_width}d}", f"Generated team {index + 1}")
        members = rng.sample(user_ids, members_per_team)
        for position, user_id in enumerate(members):
            if position < len(_EXTRA_ROLES):
                role = ("manager", "responder", "observer")[position]
            else:
                role = rng.choices(_EXTRA_ROLES, _EXTRA_ROLE_WEIGHTS)[0]
            pagerduty.set_membership(team.id, user_id, role)
        policies.append(pagerduty.add_escalation_policy(f"{team.name} On-Call", [team.id], [members[0]]))
        rotations.append(members[:3])
    # Schedules and services come after every team, so users', teams' and policies' ids are what they were
    # before the generator made them: tests and benchmarks written against those ids still hold.
    for index, (policy, rotation) in enumerate(zip(policies, rotations, strict=True)):
        team_name = policy.name.removesuffix(" On-Call")
        schedule = pagerduty.add_schedule(
            f"{team_name} Primary", "Etc/UTC", [LayerSpec(tuple(rotation))], team_ids=policy.team_ids
        )
        first = policy.rules[0]
        pagerduty.update_escalation_policy(
            policy.id,
            rules=[
                RuleSpec(tuple(first.targets), first.escalation_delay_in_minutes, first.id),
                RuleSpec((EscalationTarget(SCHEDULE_TARGET, schedule.id),), 30),
            ],
        )
        tier = _TIERS[index % len(_TIERS)]
        pagerduty.add_service(
            f"{team_name} API",
            policy.id,
            tier=tier,
            # Every fourth critical service drifts from the critical standard (600 s to re-page).
            acknowledgement_timeout=1800 if tier == "critical" and index % 12 == 0 else 600,
            incident_urgency_rule={"type": "constant", "urgency": "high" if tier != "standard" else "low"},
        )
    org.slack.add_channel(GENERATED_SLACK_CHANNEL)
    return org
