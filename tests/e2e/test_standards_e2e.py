"""Services held to their tier's standard on a live deployment: dagster-webserver and dagster-daemon on
Postgres, the daemon's sensor as the gate.

The scenario, written out below: Payments' two critical services page the team's own policy, "Payments
On-Call", which is not the critical standard's, and their urgency and timeouts are not the standard's
either. Checkout's high-tier service already pages its managed policy, "Checkout (high)", as the high
standard has it. The memberships are as declared, and Git is the only source: every change planned is a
standard's.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import URL

from nthlayer_pipelines.core.model import ChangeStatus
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.sandbox import RunningSandbox, org_from_seed, running_sandbox
from tests.e2e.deployment import Deployment, RunView
from tests.e2e.test_apply_e2e import (
    CHANGE_COUNT_KEYS,
    NTHLAYER,
    TOKENS,
    apply_environment,
    assert_launched_by_the_gate,
    pagerduty_members,
    pagerduty_writes,
    started_deployment,
    step_output_metadata,
)
from tests.reliability import Reliability
from tests.support import ARTIFACTS, change_row, slack_messages

pytestmark = pytest.mark.postgres

# Ids pinned, so the plan's lines below read as the scenario does.
ALICE, BOB, CAROL, ERIN, FRANK = "PUALICE", "PUBOB00", "PUCAROL", "PUERIN0", "PUFRANK"
PAYMENTS, CHECKOUT = "PTPAYMT", "PTCHECK"
PAYMENTS_PRIMARY, PAYMENTS_SECONDARY, CHECKOUT_PRIMARY = "PSPAYP1", "PSPAYS2", "PSCHKP1"
PAYMENTS_ON_CALL, CHECKOUT_HIGH = "PEPAYOC", "PECHKHI"
REPOINT_TO_CRITICAL = (
    f'      escalation_policy: "Payments On-Call" ({PAYMENTS_ON_CALL}) → "Payments (critical)"'
)
PAYMENT_API, PAYMENT_WEBHOOKS, CHECKOUT_WEB = "PVPAYAP", "PVPAYWH", "PVCHKWB"

# The teams, as PagerDuty holds them and as declared: no membership change is ever planned here. Their
# schedules, by the keys the standards name.
TEAMS: dict[str, tuple[str, str, dict[str, str], dict[str, str]]] = {
    "payments": (
        PAYMENTS,
        "Payments",
        {"alice@example.com": "manager", "bob@example.com": "responder", "carol@example.com": "responder"},
        {"primary": "Payments Primary", "secondary": "Payments Secondary"},
    ),
    "checkout": (
        CHECKOUT,
        "Checkout",
        {"erin@example.com": "manager", "frank@example.com": "responder"},
        {"primary": "Checkout Primary"},
    ),
}
MEMBERS = {display: members for _id, display, members, _schedules in TEAMS.values()}


def members_list(members: dict[str, str]) -> list[dict[str, str]]:
    return [{"email": email, "role": role} for email, role in members.items()]


SEED: dict[str, object] = {
    "pagerduty": {
        "users": [
            {"id": ALICE, "name": "Alice Anders", "email": "alice@example.com"},
            {"id": BOB, "name": "Bob Brown", "email": "bob@example.com"},
            {"id": CAROL, "name": "Carol Chen", "email": "carol@example.com"},
            {"id": ERIN, "name": "Erin Evans", "email": "erin@example.com"},
            {"id": FRANK, "name": "Frank Fox", "email": "frank@example.com"},
        ],
        "teams": [
            {"id": team_id, "name": display, "members": members_list(members)}
            for team_id, display, members, _schedules in TEAMS.values()
        ],
        "schedules": [
            {
                "id": PAYMENTS_PRIMARY,
                "name": "Payments Primary",
                "teams": ["Payments"],
                "users": ["alice@example.com", "bob@example.com", "carol@example.com"],
            },
            {
                "id": PAYMENTS_SECONDARY,
                "name": "Payments Secondary",
                "teams": ["Payments"],
                "users": ["carol@example.com", "bob@example.com"],
            },
            {
                "id": CHECKOUT_PRIMARY,
                "name": "Checkout Primary",
                "teams": ["Checkout"],
                "users": ["erin@example.com", "frank@example.com"],
            },
        ],
        "escalation_policies": [
            # Payments' own policy, which both its critical services page: one loop fewer than the critical
            # standard's, the primary schedule paged 10 minutes late, then alice alone.
            {
                "id": PAYMENTS_ON_CALL,
                "name": "Payments On-Call",
                "teams": ["Payments"],
                "num_loops": 1,
                "rules": [
                    {"escalation_delay_in_minutes": 10, "targets": [{"schedule": "Payments Primary"}]},
                    {"escalation_delay_in_minutes": 30, "targets": ["alice@example.com"]},
                ],
            },
            # Checkout's managed policy for the high tier, exactly as the high standard has it.
            {
                "id": CHECKOUT_HIGH,
                "name": "Checkout (high)",
                "teams": ["Checkout"],
                "num_loops": 1,
                "rules": [
                    {"escalation_delay_in_minutes": 15, "targets": [{"schedule": "Checkout Primary"}]},
                    {"escalation_delay_in_minutes": 30, "targets": ["erin@example.com"]},
                ],
            },
        ],
        "services": [
            # Critical: to page at high urgency, re-page 10 minutes after an acknowledgement (600 s) and
            # resolve after 4 hours (14400 s).
            {
                "id": PAYMENT_API,
                "name": "Payment API",
                "escalation_policy": "Payments On-Call",
                "tier": "critical",
                "urgency": "high",
                "acknowledgement_timeout": 1800,  # drift: 30 minutes
                "auto_resolve_timeout": 14400,
            },
            {
                "id": PAYMENT_WEBHOOKS,
                "name": "Payment Webhooks",
                "escalation_policy": "Payments On-Call",
                "tier": "critical",
                "urgency": "low",  # drift
                "acknowledgement_timeout": 600,
                "auto_resolve_timeout": None,  # drift: never resolves by itself
            },
            # High: as the high standard has it (re-page after 30 minutes).
            {
                "id": CHECKOUT_WEB,
                "name": "Checkout Web",
                "escalation_policy": "Checkout (high)",
                "tier": "high",
                "urgency": "high",
                "acknowledgement_timeout": 1800,
                "auto_resolve_timeout": 14400,
            },
        ],
    },
    "slack": {"channels": ["ops-changes"]},
}

SERVICES = """\
apiVersion: nthlayer/v1
kind: Service
metadata: {name: payment-api}
spec: {team: payments, tier: critical, displayName: Payment API}
---
apiVersion: nthlayer/v1
kind: Service
metadata: {name: payment-webhooks}
spec: {team: payments, tier: critical, displayName: Payment Webhooks}
---
apiVersion: nthlayer/v1
kind: Service
metadata: {name: checkout-web}
spec: {team: checkout, tier: high, displayName: Checkout Web}
"""
STANDARDS = """\
apiVersion: nthlayer/v1
kind: Standard
metadata: {name: critical}
spec:
  escalation:
    loops: 2
    rules:
      - {targets: [{schedule: primary}], escalateAfterMinutes: 5}
      - {targets: [{schedule: secondary}, {teamRole: manager}], escalateAfterMinutes: 10}
  service:
    urgency: high
    acknowledgementTimeoutMinutes: 10
    autoResolveTimeoutMinutes: 240
---
apiVersion: nthlayer/v1
kind: Standard
metadata: {name: high}
spec:
  escalation:
    loops: 1
    rules:
      - {targets: [{schedule: primary}], escalateAfterMinutes: 15}
      - {targets: [{teamRole: manager}], escalateAfterMinutes: %(high_manager_minutes)d}
  service:
    urgency: high
    acknowledgementTimeoutMinutes: %(high_ack_minutes)d
    autoResolveTimeoutMinutes: 240
"""


def write_definitions(folder: Path, *, high_ack_minutes: int = 30, high_manager_minutes: int = 30) -> Path:
    """The teams as PagerDuty holds them, the three services, and the critical and high standards (the
    high one's acknowledgement timeout and manager rule's delay as given)."""
    folder.mkdir(parents=True, exist_ok=True)
    teams = [
        {
            "apiVersion": "nthlayer/v1",
            "kind": "Team",
            "metadata": {"name": name},
            "spec": {
                "displayName": display,
                "prune": True,
                "members": members_list(members),
                "pagerduty": {"schedules": schedules},
            },
        }
        for name, (_id, display, members, schedules) in TEAMS.items()
    ]
    (folder / "teams.yaml").write_text(yaml.safe_dump_all(teams, sort_keys=False))
    (folder / "services.yaml").write_text(SERVICES)
    standards = STANDARDS % {
        "high_ack_minutes": high_ack_minutes,
        "high_manager_minutes": high_manager_minutes,
    }
    (folder / "standards.yaml").write_text(standards)
    return folder


STANDARD_URGENCY = {"type": "constant", "urgency": "high"}


# ---- the deployment ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("standards")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(org_from_seed(SEED, source="test_standards_e2e"), tokens=TOKENS) as running:
        yield running


@pytest.fixture(scope="module")
def deployment(sandbox: RunningSandbox, postgres_server_url: URL, workdir: Path) -> Iterator[Deployment]:
    """The default approval policy (a managed policy's creation is pre-approved), Git the only source."""
    write_definitions(workdir / "definitions")
    environ = apply_environment(
        sandbox, workdir / "home", NTHLAYER_DEFINITIONS=str(workdir / "definitions"), CORTEX_API_URL=""
    )
    with started_deployment(
        postgres_server_url, environ, workdir / "home", ARTIFACTS / "e2e" / "standards"
    ) as running:
        yield running


# ---- what the tests read and do ---------------------------------------------------------------------------


def nthlayer(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NTHLAYER), *args], env=deployment.env, capture_output=True, text=True, timeout=120
    )


def nthlayer_plan(deployment: Deployment) -> tuple[int, list[str]]:
    """`nthlayer plan` on the deployment's environment (its ledger read, never written): status and lines."""
    planned = nthlayer(deployment, "plan")
    assert planned.returncode in (0, 2), planned.stderr
    return planned.returncode, planned.stdout.splitlines()


def planned_drift(deployment: Deployment) -> tuple[str, list[str]]:
    """The plan `nthlayer plan` shows with changes (exit 2): its id, and its lines."""
    status, lines = nthlayer_plan(deployment)
    assert status == 2, lines
    return lines[0].split()[1].rstrip(":"), lines


def headline(plan_id: str, policies: tuple[int, int], services: tuple[int, int]) -> str:
    """A plan's first line when it changes no membership: policies and services to create or update."""
    return (
        f"Plan {plan_id}: 0 to create, 0 to add, 0 to change, 0 to remove. Standards: {policies[0]} policies "
        f"to create, {policies[1]} to update, {services[0]} services to re-point, {services[1]} to update."
    )


def refresh(deployment: Deployment) -> RunView:
    ui = deployment.ui
    run = ui.wait_for_run(ui.launch_run("refresh"))
    assert run.status == "SUCCESS"
    return run


def refresh_after(deployment: Deployment, apply: RunView) -> RunView:
    """The refresh the apply's success starts."""
    run = deployment.ui.wait_for_tagged_run("refresh", {"dagster/run_key": f"refresh-after:{apply.run_id}"})
    assert run.status == "SUCCESS"
    return run


def applied_by_the_gate(deployment: Deployment, plan_id: str, approval_id: str, approver: str) -> RunView:
    """The apply the sensor launches for the approval, once it has succeeded."""
    ui = deployment.ui
    run = ui.wait_for_tagged_run("apply_plan", {"nthlayer/approval_id": approval_id})
    assert run.status == "SUCCESS"
    assert_launched_by_the_gate(ui, run, plan_id, approval_id, approver)
    return run


def assert_all_applied(deployment: Deployment, run: RunView, changes: int) -> None:
    """The apply's own account: every change applied, none skipped, stale, blocked or failed, all verified."""
    metadata = step_output_metadata(deployment.database_url, run.run_id)
    counts = {key: metadata[f"changes_{key}"] for key in CHANGE_COUNT_KEYS}
    assert counts == {key: changes if key == "applied" else 0 for key in CHANGE_COUNT_KEYS}
    assert metadata["unconverged"] == 0


def approved_by_alice_and_applied(deployment: Deployment, plan_id: str, changes: int) -> RunView:
    """`nthlayer approve PLAN --approver alice`, as a person does; the gate's apply of it, every change
    applied."""
    approved = nthlayer(deployment, "approve", plan_id, "--approver", "alice")
    assert approved.returncode == 0, approved.stderr
    with Ledger(deployment.database_url) as ledger:
        approval = ledger.latest_approval(plan_id)
    assert approval is not None
    assert approved.stdout.strip() == f"approved {plan_id} as {approval.id} by alice ({changes} change(s))"
    run = applied_by_the_gate(deployment, plan_id, approval.id, "alice")
    assert_all_applied(deployment, run, changes)
    with Ledger(deployment.database_url) as ledger:
        assert {o.status for o in ledger.outcomes(plan_id)} == {ChangeStatus.APPLIED}
    return run


def services(sandbox: RunningSandbox) -> dict[str, dict[str, Any]]:
    """Service name -> its escalation policy, urgency rule and timeouts, from the sandbox's own state."""
    kept = (
        "id",
        "escalation_policy_id",
        "incident_urgency_rule",
        "acknowledgement_timeout",
        "auto_resolve_timeout",
    )
    return {
        s["name"]: {key: s[key] for key in kept} for s in sandbox.state.to_dict()["pagerduty"]["services"]
    }


def policies(sandbox: RunningSandbox) -> dict[str, dict[str, Any]]:
    """Policy name -> its id, team, loops and rules (each rule's targets as a set), from the sandbox."""
    return {
        p["name"]: {
            "id": p["id"],
            "team_ids": p["team_ids"],
            "num_loops": p["num_loops"],
            "rules": [
                (r["escalation_delay_in_minutes"], {(t["type"], t["id"]) for t in r["targets"]})
                for r in p["rules"]
            ],
        }
        for p in sandbox.state.to_dict()["pagerduty"]["escalation_policies"]
    }


def held_service(policy_id: str, acknowledgement: int, service_id: str) -> dict[str, Any]:
    """A service as its standard has it: paging `policy_id`, high urgency, resolving after 4 hours."""
    return {
        "id": service_id,
        "escalation_policy_id": policy_id,
        "incident_urgency_rule": STANDARD_URGENCY,
        "acknowledgement_timeout": acknowledgement,
        "auto_resolve_timeout": 14400,
    }


SCHEDULE, USER = "schedule_reference", "user_reference"
CHECKOUT_HIGH_AS_SEEDED = {
    "id": CHECKOUT_HIGH,
    "team_ids": [CHECKOUT],
    "num_loops": 1,
    "rules": [(15, {(SCHEDULE, CHECKOUT_PRIMARY)}), (30, {(USER, ERIN)})],
}


# ---- the tests --------------------------------------------------------------------------------------------


def test_critical_services_paging_the_teams_policy_are_brought_to_the_critical_standard(
    deployment: Deployment, sandbox: RunningSandbox, reliability: Reliability
) -> None:
    before = services(sandbox)
    assert {name: s["escalation_policy_id"] for name, s in before.items()} == {
        "Payment API": PAYMENTS_ON_CALL,
        "Payment Webhooks": PAYMENTS_ON_CALL,
        "Checkout Web": CHECKOUT_HIGH,
    }

    # What the refresh will record, as `nthlayer plan` shows it: the managed policy to create, both
    # critical services to re-point at it, and their fields, each `before → after`. Nothing of Checkout.
    plan_id, lines = planned_drift(deployment)
    assert lines == [
        headline(plan_id, policies=(1, 0), services=(2, 2)),
        "",
        f'  + escalation_policy "Payments (critical)" (new), team payments (Payments, {PAYMENTS})',
        "      num_loops: 2",
        f"      escalation_rules: [5 min: schedule {PAYMENTS_PRIMARY}] "
        f"[10 min: schedule {PAYMENTS_SECONDARY}, user {ALICE}]",
        f'  ~ service "Payment API" ({PAYMENT_API}), team payments (Payments, {PAYMENTS})',
        f"{REPOINT_TO_CRITICAL} (new)",
        f'  ~ service "Payment Webhooks" ({PAYMENT_WEBHOOKS}), team payments (Payments, {PAYMENTS})',
        f"{REPOINT_TO_CRITICAL} (new)",
        f'  ~ service "Payment API" ({PAYMENT_API}), team payments (Payments, {PAYMENTS})',
        "      acknowledgement_timeout: 1800 → 600",
        f'  ~ service "Payment Webhooks" ({PAYMENT_WEBHOOKS}), team payments (Payments, {PAYMENTS})',
        "      incident_urgency_rule: low → high",
        "      auto_resolve_timeout: off → 14400",
    ]

    # The refresh records that very plan, and the policy approves the managed policy's creation alone.
    first_refresh = refresh(deployment)
    summary = deployment.ui.materializations(first_refresh.run_id)["change_plan"]
    assert (summary["plan_id"], summary["changes_total"], summary["pre_approved_changes"]) == (plan_id, 5, 1)
    with Ledger(deployment.database_url) as ledger:
        assert ledger.latest_plan_id() == plan_id
        plan = ledger.get_plan(plan_id)
        policy = ledger.latest_approval(plan_id)
    assert [change_row(c) for c in plan.changes] == [
        ("create_escalation_policy", "payments", "Payments (critical)", "num_loops,escalation_rules", None),
        ("set_service_policy", "payments", "Payment API", "escalation_policy", None),
        ("set_service_policy", "payments", "Payment Webhooks", "escalation_policy", None),
        ("update_service", "payments", "Payment API", "acknowledgement_timeout", None),
        (
            "update_service",
            "payments",
            "Payment Webhooks",
            "incident_urgency_rule,auto_resolve_timeout",
            None,
        ),
    ]
    assert policy is not None
    assert (policy.source, policy.approver, policy.decision) == ("policy", "policy", "approved")
    assert policy.change_ids == (plan.changes[0].id,)

    # The sensor applies the creation: the policy exists, owned by Payments, as the standard has it (the
    # secondary schedule and the team's manager, alice, on the second rule); no service is touched yet.
    policy_apply = applied_by_the_gate(deployment, plan_id, policy.id, "policy")
    assert_all_applied(deployment, policy_apply, 1)
    created = policies(sandbox)["Payments (critical)"]
    managed = created["id"]
    assert created == {
        "id": managed,
        "team_ids": [PAYMENTS],
        "num_loops": 2,
        "rules": [
            (5, {(SCHEDULE, PAYMENTS_PRIMARY)}),
            (10, {(SCHEDULE, PAYMENTS_SECONDARY), (USER, ALICE)}),
        ],
    }
    assert services(sandbox) == before

    # The refresh after it plans the rest, which changes who is paged and how: a person's to approve.
    after_policy = refresh_after(deployment, policy_apply)
    with Ledger(deployment.database_url) as ledger:
        rest_id = ledger.latest_plan_id()
        rest = ledger.get_plan(rest_id)
        assert ledger.latest_approval(rest_id) is None  # nothing of it is pre-approved
    assert deployment.ui.materializations(after_policy.run_id)["change_plan"]["plan_id"] == rest_id
    assert rest_id != plan_id
    assert [change_row(c) for c in rest.changes] == [change_row(c) for c in plan.changes[1:]]
    shown_id, lines = planned_drift(deployment)
    assert shown_id == rest_id
    assert lines == [
        headline(rest_id, policies=(0, 0), services=(2, 2)),
        "",
        f'  ~ service "Payment API" ({PAYMENT_API}), team payments (Payments, {PAYMENTS})',
        f"{REPOINT_TO_CRITICAL} ({managed})",
        f'  ~ service "Payment Webhooks" ({PAYMENT_WEBHOOKS}), team payments (Payments, {PAYMENTS})',
        f"{REPOINT_TO_CRITICAL} ({managed})",
        f'  ~ service "Payment API" ({PAYMENT_API}), team payments (Payments, {PAYMENTS})',
        "      acknowledgement_timeout: 1800 → 600",
        f'  ~ service "Payment Webhooks" ({PAYMENT_WEBHOOKS}), team payments (Payments, {PAYMENTS})',
        "      incident_urgency_rule: low → high",
        "      auto_resolve_timeout: off → 14400",
    ]

    person_apply = approved_by_alice_and_applied(deployment, rest_id, 4)

    # The sandbox holds the standard: both critical services page the managed policy at high urgency,
    # re-page 10 minutes after an acknowledgement and resolve after 4 hours; Checkout Web is as it was.
    assert services(sandbox) == {
        "Payment API": held_service(managed, 600, PAYMENT_API),
        "Payment Webhooks": held_service(managed, 600, PAYMENT_WEBHOOKS),
        "Checkout Web": before["Checkout Web"],
    }
    assert policies(sandbox)["Checkout (high)"] == CHECKOUT_HIGH_AS_SEEDED
    assert pagerduty_members(sandbox) == MEMBERS
    # One write per change: the policy's POST, and each service's two changes two PUTs.
    writes = pagerduty_writes(sandbox)
    assert writes == Counter(
        {
            ("POST", "/pagerduty/escalation_policies"): 1,
            ("PUT", f"/pagerduty/services/{PAYMENT_API}"): 2,
            ("PUT", f"/pagerduty/services/{PAYMENT_WEBHOOKS}"): 2,
        }
    )

    # The next refresh plans nothing, and `nthlayer plan` agrees.
    final = refresh_after(deployment, person_apply)
    assert deployment.ui.materializations(final.run_id)["change_plan"]["changes_total"] == 0
    status, lines = nthlayer_plan(deployment)
    assert (status, lines[0].split(": ", 1)[1]) == (0, "no changes. PagerDuty matches the desired state.")
    assert slack_messages(sandbox) == [
        f"nthlayer: plan {plan_id} applied (1 applied), approved by policy",
        f"nthlayer: plan {rest_id} applied (4 applied), approved by alice",
    ]
    reliability.count(
        "services held to their standard, on the daemon",
        services_brought_to_standard=2,
        changes_applied=5,
        duplicate_writes=sum(writes.values()) - 5,
    )


def test_a_second_tiers_standard_changed_in_git_replans_only_its_services(
    deployment: Deployment, sandbox: RunningSandbox, workdir: Path, reliability: Reliability
) -> None:
    """After the test above: PagerDuty holds both standards, and the high one changes in Git."""
    held_before = services(sandbox)
    policies_before = policies(sandbox)
    writes_before = pagerduty_writes(sandbox)

    # The high standard now re-pages 15 minutes after an acknowledgement, and pages the manager after 20.
    write_definitions(workdir / "definitions", high_ack_minutes=15, high_manager_minutes=20)
    plan_id, lines = planned_drift(deployment)
    assert lines == [
        headline(plan_id, policies=(0, 1), services=(0, 1)),
        "",
        f'  ~ escalation_policy "Checkout (high)" ({CHECKOUT_HIGH}), team checkout (Checkout, {CHECKOUT})',
        f"      escalation_rules: [15 min: schedule {CHECKOUT_PRIMARY}] [30 min: user {ERIN}] → "
        f"[15 min: schedule {CHECKOUT_PRIMARY}] [20 min: user {ERIN}]",
        f'  ~ service "Checkout Web" ({CHECKOUT_WEB}), team checkout (Checkout, {CHECKOUT})',
        "      acknowledgement_timeout: 1800 → 900",
    ]

    # The refresh records only the high tier's changes: nothing of the critical services, no membership.
    run = refresh(deployment)
    with Ledger(deployment.database_url) as ledger:
        assert ledger.latest_plan_id() == plan_id
        plan = ledger.get_plan(plan_id)
        assert ledger.latest_approval(plan_id) is None  # an update changes who is paged: a person's
    assert deployment.ui.materializations(run.run_id)["change_plan"]["changes_total"] == 2
    assert [change_row(c) for c in plan.changes] == [
        ("update_escalation_policy", "checkout", "Checkout (high)", "escalation_rules", None),
        ("update_service", "checkout", "Checkout Web", "acknowledgement_timeout", None),
    ]

    apply = approved_by_alice_and_applied(deployment, plan_id, 2)

    # Checkout holds the new high standard; the critical services and their policy are as they were.
    assert policies(sandbox) == {
        **policies_before,
        "Checkout (high)": {
            **CHECKOUT_HIGH_AS_SEEDED,
            "rules": [(15, {(SCHEDULE, CHECKOUT_PRIMARY)}), (20, {(USER, ERIN)})],
        },
    }
    assert services(sandbox) == {
        **held_before,
        "Checkout Web": held_service(CHECKOUT_HIGH, 900, CHECKOUT_WEB),
    }
    assert pagerduty_members(sandbox) == MEMBERS
    writes = pagerduty_writes(sandbox) - writes_before
    assert writes == Counter(
        {
            ("PUT", f"/pagerduty/escalation_policies/{CHECKOUT_HIGH}"): 1,
            ("PUT", f"/pagerduty/services/{CHECKOUT_WEB}"): 1,
        }
    )

    final = refresh_after(deployment, apply)
    assert deployment.ui.materializations(final.run_id)["change_plan"]["changes_total"] == 0
    assert slack_messages(sandbox)[-1] == f"nthlayer: plan {plan_id} applied (2 applied), approved by alice"
    reliability.count(
        "services held to their standard, on the daemon",
        standards_changed_in_git=1,
        changes_applied=2,
        duplicate_writes=sum(writes.values()) - 2,
    )
