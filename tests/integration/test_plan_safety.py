"""Team identity and small teams through the public surface: the refresh job's assets and checks against
the sandbox over loopback, the ledger's policy approval, and `nthlayer plan`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from nthlayer_pipelines.core.model import ChangeKind, FindingKind, Plan
from nthlayer_pipelines.definitions import build_definitions
from nthlayer_pipelines.resources.ledger import Ledger
from nthlayer_pipelines.sandbox import RunningSandbox, org_from_seed, running_sandbox
from tests.integration.test_pipeline import failure_messages, nthlayer
from tests.reliability import Reliability
from tests.support import pipeline_environment

ALL_KINDS = "create_team,add_member,set_role,remove_member"  # the widest policy a deployment can set

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "judy", "mallory"]


def seed(*, look_alike: bool) -> dict[str, Any]:
    """Payments (PPAY001), optionally a second team named like it, and small teams to protect."""
    member = lambda who, role: {"email": f"{who}@example.com", "role": role}  # noqa: E731
    teams = [
        {
            "id": "PPAY001",
            "name": "Payments",
            "members": [
                member("alice", "manager"),
                member("bob", "responder"),
                member("mallory", "responder"),
            ],
        },
        {"id": "PPLT001", "name": "Platform", "members": [member("judy", "manager")]},
        {
            "id": "PCHK001",
            "name": "Checkout",
            "members": [
                member("erin", "manager"),
                member("frank", "responder"),
                member("grace", "responder"),
                {"email": "bob@old.example.com", "role": "responder"},
            ],
        },
    ]
    if look_alike:
        teams.append({"id": "PPAY002", "name": "Payments ", "members": [member("dave", "manager")]})
    users = [{"name": who.title(), "email": f"{who}@example.com"} for who in USERS]
    users += [
        {"name": "Bob Old", "email": "bob@old.example.com"},
        {"name": "Ivan", "email": "ivan@xn--bcher-kva.example"},
    ]
    return {
        "pagerduty": {"users": users, "teams": teams},
        "cortex": {
            "teams": [
                {
                    "tag": "payments-team",
                    "name": "Payments",
                    "members": [{"email": "carol@example.com", "name": "Carol", "roles": ["manager"]}],
                }
            ]
        },
    }


def definitions(folder: Path, *teams: dict[str, Any]) -> Path:
    folder.mkdir(exist_ok=True)
    for spec in teams:
        slug = spec.pop("slug")
        document = {"apiVersion": "nthlayer/v1", "kind": "Team", "metadata": {"name": slug}, "spec": spec}
        (folder / f"{slug}.yaml").write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return folder


def team(slug: str, display: str, members: dict[str, str], **spec: Any) -> dict[str, Any]:
    listed = [{"email": email, "role": role} for email, role in sorted(members.items())]
    return {"slug": slug, "displayName": display, "prune": True, "members": listed, **spec}


PAYMENTS = {"alice@example.com": "manager", "bob@example.com": "responder", "carol@example.com": "responder"}
CHECKOUT = {"erin@example.com": "manager", "frank@example.com": "responder", "grace@example.com": "responder"}


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSandbox]:
    for name in ("PAGERDUTY_API_TOKEN", "CORTEX_API_TOKEN", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    look_alike = getattr(request, "param", False)
    with running_sandbox(org_from_seed(seed(look_alike=look_alike))) as running:
        yield running


def environment(
    sandbox: RunningSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    *,
    cortex: bool = False,
    **overrides: str,
) -> dict[str, str]:
    """The pipeline on `folder`'s definitions; Cortex off unless asked for."""
    if not cortex:
        overrides = {"CORTEX_API_URL": "", "CORTEX_API_TOKEN": "", **overrides}
    environ = pipeline_environment(sandbox, tmp_path, NTHLAYER_DEFINITIONS=str(folder), **overrides)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return environ


def refresh(environ: dict[str, str]) -> dg.ExecuteInProcessResult:
    job = build_definitions(environ).resolve_job_def("refresh")
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def check_evaluation(result: dg.ExecuteInProcessResult, name: str):
    (evaluation,) = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == name
    ]
    return evaluation


def policy_approved(environ: dict[str, str], plan: Plan) -> list[tuple[str, str, str | None]]:
    ledger = Ledger(environ["NTHLAYER_LEDGER_URL"])
    try:
        approval = ledger.latest_approval(plan.id)
    finally:
        ledger.dispose()
    if approval is None:
        return []
    return [(c.kind.value, c.team, c.email) for c in plan.changes if c.id in approval.change_ids]


# ---- identity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sandbox", [True], indirect=True)
def test_a_name_two_pagerduty_teams_carry_blocks_its_team_and_plans_the_others(
    sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    folder = definitions(
        tmp_path / "definitions",
        team("payments", "Payments", PAYMENTS),
        team("checkout", "Checkout", CHECKOUT),
    )
    environ = environment(sandbox, tmp_path, monkeypatch, folder)
    result = refresh(environ)
    plan: Plan = result.output_for_node("change_plan")
    reliability.count(
        "identity",
        identity_scenarios=1,
        changes_to_unsettled_teams=sum(1 for c in plan.changes if c.team == "payments"),
    )

    # The run fails loudly on the check, but the plan is made, stored, and the other teams' part approved.
    assert not result.success
    assert [c for c in plan.changes if c.team == "payments"] == []
    assert {(c.kind, c.team) for c in plan.changes} == {(ChangeKind.REMOVE_MEMBER, "checkout")}
    (blocked,) = plan.blocking_findings
    assert blocked.kind is FindingKind.AMBIGUOUS_TEAM and blocked.team == "payments"
    assert "'Payments' (PPAY001), 'Payments ' (PPAY002)" in blocked.detail
    check = check_evaluation(result, "change_plan_identifies_every_team")
    assert not check.passed
    assert check.metadata["teams"].value == "payments"
    assert "PPAY001" in check.metadata["blocked"].value and "PPAY002" in check.metadata["blocked"].value
    assert check_evaluation(result, "change_plan_within_blast_radius").passed
    ledger = Ledger(environ["NTHLAYER_LEDGER_URL"])
    assert ledger.latest_plan_id() == plan.id
    ledger.dispose()

    # `nthlayer plan` exits 1 on the failed check and still prints the plan.
    run = nthlayer("plan", "--json", environ=environ)
    assert run.returncode == 1, run.stderr
    payload = json.loads(run.stdout)
    assert payload["plan_id"] == plan.id
    assert [(f["kind"], f["team"], f["blocking"]) for f in payload["findings"] if f["blocking"]] == [
        ("ambiguous_team", "payments", True)
    ]
    assert [(c["kind"], c["team"], c["team_name"], c["team_id"]) for c in payload["changes"]] == [
        ("remove_member", "checkout", "Checkout", "PCHK001")
    ]
    assert "check change_plan_identifies_every_team failed on change_plan" in run.stderr
    text = nthlayer("plan", environ=environ)
    assert text.returncode == 1
    assert "Blocked (1): nothing is planned for these teams until a person settles them:" in text.stdout


@pytest.mark.parametrize("sandbox", [True], indirect=True)
def test_a_pin_whose_pagerduty_name_is_another_keeps_its_removals_for_a_person(
    sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    folder = definitions(
        tmp_path / "definitions",
        team("payments", "Card Payments", PAYMENTS, pagerduty={"teamId": "PPAY001"}),
    )
    environ = environment(sandbox, tmp_path, monkeypatch, folder, NTHLAYER_PRE_APPROVED_KINDS=ALL_KINDS)
    result = refresh(environ)
    assert result.success, failure_messages(result)
    plan: Plan = result.output_for_node("change_plan")
    approved = policy_approved(environ, plan)
    reliability.count(
        "identity",
        identity_scenarios=1,
        held_removals_pre_approved=sum(1 for kind, _, _ in approved if kind == "remove_member"),
    )

    assert approved == [("add_member", "payments", "carol@example.com")]
    (mismatch,) = [f for f in plan.findings if f.kind is FindingKind.PINNED_TEAM_NAME_MISMATCH]
    assert mismatch.detail == (
        "pinned PagerDuty team PPAY001 is named 'Payments' in PagerDuty, not 'Card Payments': "
        "its removals wait for a person"
    )
    # Each change names the team it writes to as PagerDuty has it.
    assert [(c.kind.value, c.team_name, c.team_id, c.email) for c in plan.changes] == [
        ("add_member", "Payments", "PPAY001", "carol@example.com"),
        ("remove_member", "Payments", "PPAY001", "mallory@example.com"),
    ]


def test_two_definitions_on_one_pagerduty_team_plan_nothing(
    sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    """Git's payments is pinned to PPAY001; Cortex's payments-team finds the same team by its name."""
    folder = definitions(
        tmp_path / "definitions", team("payments", "Card Payments", PAYMENTS, pagerduty={"teamId": "PPAY001"})
    )
    environ = environment(sandbox, tmp_path, monkeypatch, folder, cortex=True)
    result = refresh(environ)
    planned = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["change_plan"]]
    reliability.count("identity", identity_scenarios=1, changes_to_unsettled_teams=len(planned))

    assert not result.success
    assert "divergences" in {e.step_key for e in result.all_events if e.is_step_failure}
    assert planned == []
    ledger = Ledger(environ["NTHLAYER_LEDGER_URL"])
    assert ledger.latest_plan_id() is None
    ledger.dispose()
    messages = "\n".join(failure_messages(result))
    assert "PagerDuty team 'Payments' (PPAY001) is claimed by 2 definitions" in messages
    assert "payments (git, payments.yaml, pinned to PPAY001)" in messages  # origin: the file in the repo
    assert "payments-team (cortex, cortex:payments-team, named 'Payments')" in messages

    run = nthlayer("plan", environ=environ)
    assert run.returncode == 1 and run.stdout == ""
    assert "claimed by 2 definitions" in run.stderr


def test_emails_of_internationalised_domains_join_in_either_form(
    sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    """PagerDuty holds ivan@xn--bcher-kva.example; the definition says ivan@bücher.example: one person."""
    folder = definitions(
        tmp_path / "definitions",
        team("platform", "Platform", {"judy@example.com": "manager", "ivan@bücher.example": "responder"}),
    )
    environ = environment(sandbox, tmp_path, monkeypatch, folder)
    result = refresh(environ)
    assert result.success, failure_messages(result)
    plan: Plan = result.output_for_node("change_plan")
    reliability.count(
        "identity",
        identity_scenarios=1,
        emails_unjoined=sum(1 for f in plan.findings if f.kind is FindingKind.UNRESOLVED_USER),
    )
    assert [(c.kind.value, c.email) for c in plan.changes] == [("add_member", "ivan@bücher.example")]
    assert [f.kind for f in plan.findings] == [FindingKind.UNMANAGED_TEAM, FindingKind.UNMANAGED_TEAM]


# ---- small teams ---------------------------------------------------------------------------------------


def test_a_plan_removing_a_teams_only_manager_is_over_the_blast_radius(
    sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    """Platform's one manager, judy@example.com, appears in the definitions as judy@new.example.com, which
    has no PagerDuty account: the plan would remove her and leave the team without a manager."""
    folder = definitions(
        tmp_path / "definitions", team("platform", "Platform", {"judy@new.example.com": "manager"})
    )
    environ = environment(sandbox, tmp_path, monkeypatch, folder, NTHLAYER_PRE_APPROVED_KINDS=ALL_KINDS)
    result = refresh(environ)
    plan: Plan = result.output_for_node("change_plan")
    check = check_evaluation(result, "change_plan_within_blast_radius")
    reliability.count("small teams", small_team_scenarios=1, small_team_plans_let_through=int(check.passed))

    assert [(c.kind.value, c.email) for c in plan.changes] == [("remove_member", "judy@example.com")]
    assert not check.passed
    assert check.metadata["reasons"].value == (
        "- platform (PPLT001): the plan removes every member (1 of 1)\n"
        "- platform (PPLT001): the plan leaves no manager (removes judy@example.com, the only one)"
    )
    ledger = Ledger(environ["NTHLAYER_LEDGER_URL"])
    assert ledger.blast_radius(plan.id).exceeded
    ledger.dispose()
    assert policy_approved(environ, plan) == []
    (rename,) = [f for f in plan.findings if f.kind is FindingKind.POSSIBLE_EMAIL_RENAME]
    assert rename.detail == (
        "judy@example.com is removed while judy@new.example.com has no PagerDuty account: "
        "if the address was renamed in PagerDuty, this removes the person"
    )


def test_a_removal_beside_an_unresolved_address_waits_for_a_person(
    sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    """Checkout's bob@old.example.com is bob@new.example.com in the definitions: within the blast radius
    (one of four), and still never removed on the policy's word."""
    folder = definitions(
        tmp_path / "definitions",
        team("checkout", "Checkout", {**CHECKOUT, "bob@new.example.com": "responder"}),
        team("payments", "Payments", {"alice@example.com": "manager", "bob@example.com": "responder"}),
    )
    environ = environment(sandbox, tmp_path, monkeypatch, folder, NTHLAYER_PRE_APPROVED_KINDS=ALL_KINDS)
    result = refresh(environ)
    assert result.success, failure_messages(result)
    plan: Plan = result.output_for_node("change_plan")
    approved = policy_approved(environ, plan)
    reliability.count(
        "small teams",
        small_team_scenarios=1,
        small_team_plans_let_through=sum(1 for _, _, email in approved if email == "bob@old.example.com"),
    )

    assert [(c.kind.value, c.team, c.email) for c in plan.changes] == [
        ("remove_member", "checkout", "bob@old.example.com"),
        ("remove_member", "payments", "mallory@example.com"),
    ]
    # Payments' removal has no unresolved address beside it: this deployment's policy approves it.
    assert approved == [("remove_member", "payments", "mallory@example.com")]
    assert [(f.team, f.email) for f in plan.findings if f.kind is FindingKind.POSSIBLE_EMAIL_RENAME] == [
        ("checkout", "bob@old.example.com")
    ]


def test_past_the_volume_cap_the_policy_approves_nothing(pipeline_env, tmp_path, monkeypatch) -> None:
    """The example org's drift has four pre-approvable changes (a creation, three additions)."""
    result = refresh(pipeline_env)
    plan: Plan = result.output_for_node("change_plan")
    assert len(policy_approved(pipeline_env, plan)) == 4

    capped = {**pipeline_env, "NTHLAYER_MAX_PRE_APPROVED_CHANGES": "3"}
    capped["NTHLAYER_LEDGER_URL"] = f"sqlite:///{tmp_path / 'capped.db'}"
    for name, value in capped.items():
        monkeypatch.setenv(name, value)
    result = refresh(capped)
    assert result.success
    assert policy_approved(capped, plan) == []
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["change_plan"]]
    assert event.materialization.metadata["pre_approval_held"].value == (
        "4 changes would be pre-approved, more than NTHLAYER_MAX_PRE_APPROVED_CHANGES (3): "
        "the policy approves none of them, a person approves the plan"
    )
