"""The small org and the tokens the sandbox tests share."""

from typing import Any

from nthlayer_pipelines.sandbox import SandboxOrg, org_from_seed

PAGERDUTY_TOKEN = "pd-test-token"
CORTEX_TOKEN = "cortex-test-token"
SLACK_TOKEN = "xoxb-test-token"
TOKENS = {"pagerduty": PAGERDUTY_TOKEN, "cortex": CORTEX_TOKEN, "slack": SLACK_TOKEN}

SEED: dict[str, Any] = {
    "pagerduty": {
        "users": [
            {"name": "Alice Example", "email": "alice@example.com", "role": "admin"},
            {"name": "Bob Example", "email": "bob@example.com"},
            {"name": "Carol Example", "email": "carol@example.com"},
            {"name": "Dave Example", "email": "dave@example.com", "id": "PDAVE01"},
        ],
        "teams": [
            {
                "name": "Payments",
                "description": "Money in, money out",
                "members": [
                    {"email": "alice@example.com", "role": "manager"},
                    {"email": "bob@example.com", "role": "responder"},
                    {"email": "carol@example.com", "role": "observer"},
                ],
            },
            {
                "name": "Search",
                "members": [
                    {"email": "dave@example.com", "role": "manager"},
                    {"email": "alice@example.com", "role": "responder"},
                ],
            },
        ],
        "escalation_policies": [
            {"name": "Payments On-Call", "teams": ["Payments"], "targets": ["alice@example.com"]},
            {
                "name": "Search On-Call",
                "teams": ["Search"],
                "targets": ["dave@example.com", "bob@example.com"],
            },
        ],
    },
    "cortex": {
        "teams": [
            {
                "tag": "data",
                "name": "Data Platform",
                "description": "Pipelines and warehouses",
                "members": [
                    {"email": "grace@example.com", "name": "Grace", "roles": ["oncall-manager"]},
                    {"email": "ken@example.com", "name": "Ken", "roles": []},
                ],
            },
            {"tag": "empty", "name": "Nobody Yet"},
            {
                "tag": "legacy",
                "name": "Legacy",
                "archived": True,
                "members": [{"email": "old@example.com", "name": "Old Timer"}],
            },
        ]
    },
    "slack": {"channels": ["ops-changes"]},
}


def seeded_org() -> SandboxOrg:
    return org_from_seed(SEED, source="conftest")
