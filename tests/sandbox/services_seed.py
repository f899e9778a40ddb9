"""The shared small org with services, escalation policies on schedules, and schedules added."""

import copy
from typing import Any

from sandbox_seed import SEED

from nthlayer_pipelines.sandbox import SandboxOrg, org_from_seed

SERVICES_SEED: dict[str, Any] = copy.deepcopy(SEED)
SERVICES_SEED["pagerduty"]["schedules"] = [
    {
        "name": "Payments Primary",
        "time_zone": "Europe/London",
        "teams": ["Payments"],
        "users": ["carol@example.com", "alice@example.com", "bob@example.com"],
    },
    {
        "name": "Payments Secondary",
        "teams": ["Payments"],
        "layers": [
            {"name": "Weekdays", "users": ["bob@example.com"], "rotation_turn_length_seconds": 86400},
            {"name": "Weekends", "users": ["alice@example.com", "carol@example.com"]},
        ],
    },
]
SERVICES_SEED["pagerduty"]["escalation_policies"].append(
    {
        "name": "Payments Escalation",
        "teams": ["Payments"],
        "num_loops": 2,
        "rules": [
            {"escalation_delay_in_minutes": 10, "targets": [{"schedule": "Payments Primary"}]},
            {
                "escalation_delay_in_minutes": 20,
                "targets": [{"schedule": "Payments Secondary"}, "alice@example.com"],
            },
        ],
    }
)
SERVICES_SEED["pagerduty"]["services"] = [
    {
        "name": "Payment API",
        "escalation_policy": "Payments Escalation",
        "tier": "critical",
        "urgency": "high",
        "acknowledgement_timeout": 1800,
    },
    {
        "name": "Ledger",
        "escalation_policy": "Payments Escalation",
        "tier": "high",
        "auto_resolve_timeout": None,
        "status": "critical",  # open triggered incidents: the status a client must not echo back
    },
    {"name": "Search API", "escalation_policy": "Search On-Call", "tier": "standard", "urgency": "low"},
]


def services_org() -> SandboxOrg:
    return org_from_seed(SERVICES_SEED, source="services_seed")
