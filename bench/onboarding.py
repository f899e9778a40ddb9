"""An onboarding applied at the rate limit: `python -m bench.onboarding --changes N --teams T`.

N users who exist in PagerDuty on no team are added to T teams (each team has a manager already), as
one approved plan in a fresh ledger, applied with `apply_approval` at concurrency C against the sandbox
in a process of its own, its latency and limit scaled by F (250/F ms, 960*F a minute). Prints one JSON
object: the calls and 429s the sandbox served, wall seconds, the write bound (calls at the limit), memory,
and how many writes each change got in the sandbox's request log (exactly 1 each, or it is a failure).

The org and the plan are built from ids the seed fixes (`onboarding_seed`, `onboarding_plan`), so nothing
is read to build them: the tests use the same ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bench.measure import REAL_LATENCY_MS, REAL_LIMIT_PER_MINUTE
from bench.scenarios import REAL_BURST
from nthlayer_pipelines.core.model import Change, ChangeKind, DesiredState, Member, Plan, Role, Team
from nthlayer_pipelines.core.plan import ordered_plan


def team_id(index: int) -> str:
    return f"PT{index:05d}"


def user_id(index: int) -> str:
    return f"PU{index:05d}"


def _team_name(index: int) -> str:
    return f"Onboarding {index:05d}"


def _slug(index: int) -> str:
    return f"onboarding-{index:05d}"


def _lead(index: int) -> tuple[str, str]:
    return f"PL{index:05d}", f"lead.{index:05d}@example.com"


def _newcomer(index: int) -> str:
    return f"new.{index:05d}@example.com"


def onboarding_seed(changes: int, teams: int) -> dict[str, Any]:
    """A sandbox seed: `teams` teams, each with its manager, and `changes` users on no team."""
    if changes > 99_999 or teams > 99_999 or teams < 1:
        raise ValueError("between 1 and 99,999 teams, and at most 99,999 changes")
    leads = [_lead(t) for t in range(teams)]
    users = [
        {"id": lead_id, "name": f"Lead {t:05d}", "email": email} for t, (lead_id, email) in enumerate(leads)
    ]
    users += [{"id": user_id(u), "name": f"New {u:05d}", "email": _newcomer(u)} for u in range(changes)]
    return {
        "pagerduty": {
            "users": users,
            "teams": [
                {
                    "id": team_id(t),
                    "name": _team_name(t),
                    "members": [{"email": leads[t][1], "role": "manager"}],
                }
                for t in range(teams)
            ],
        }
    }


def onboarding_plan(changes: int, teams: int) -> tuple[Plan, DesiredState]:
    """The plan adding user u to team u mod `teams` as a responder, and the definitions wanting it."""
    additions = [
        Change.planned(
            "pagerduty",
            ChangeKind.ADD_MEMBER,
            team=_slug(u % teams),
            team_name=_team_name(u % teams),
            team_id=team_id(u % teams),
            email=_newcomer(u),
            user_id=user_id(u),
            role=Role.RESPONDER,
        )
        for u in range(changes)
    ]
    members: dict[int, list[Member]] = {
        t: [Member(email=_lead(t)[1], role=Role.MANAGER)] for t in range(teams)
    }
    for u in range(changes):
        members[u % teams].append(Member(email=_newcomer(u), role=Role.RESPONDER))
    desired = DesiredState(
        teams=tuple(
            Team(
                name=_slug(t),
                display_name=_team_name(t),
                members=tuple(members[t]),
                pagerduty_team_id=team_id(t),
            )
            for t in range(teams)
        ),
        sources=("git",),
    )
    return ordered_plan(additions, []), desired


def writes_per_change(requests: list[dict[str, Any]], plan: Plan) -> Counter[int]:
    """How many changes got each number of membership writes in the request log: {1: N} when each of
    the N got exactly one."""
    writes = Counter(
        entry["path"]
        for entry in requests
        if entry["method"] in ("PUT", "DELETE") and "/users/" in entry["path"] and entry["status"] < 300
    )
    wanted = [f"/pagerduty/teams/{c.team_id}/users/{c.user_id}" for c in plan.changes]
    return Counter(writes.get(path, 0) for path in wanted)


def measure_onboarding(changes: int, teams: int, scale: int, concurrency: int) -> dict[str, Any]:
    """Apply an onboarding of `changes` additions over `teams` teams at `concurrency`, against the
    sandbox at 250/`scale` ms a call and 960*`scale` a minute; what it took (see the module's doc)."""
    from bench.sandbox_process import BENCH_TOKEN, sandbox_process
    from bench.scenarios import watched
    from nthlayer_pipelines.apply import apply_approval
    from nthlayer_pipelines.resources.ledger import Ledger
    from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource

    if REAL_LATENCY_MS % scale:
        raise ValueError(f"scale must divide {REAL_LATENCY_MS} (the sandbox takes whole milliseconds)")
    limit = REAL_LIMIT_PER_MINUTE * scale
    plan, desired = onboarding_plan(changes, teams)
    with tempfile.TemporaryDirectory(prefix="nthlayer-onboarding-") as tmp:
        seed = Path(tmp) / "seed.yaml"
        seed.write_text(yaml.safe_dump(onboarding_seed(changes, teams)), encoding="utf-8")
        ledger = Ledger(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        ledger.record_plan(plan)
        approval = ledger.approve(plan.id, approver="bench")
        serve = {
            "rate_limit": limit,
            "latency_ms": REAL_LATENCY_MS // scale,
            "log": Path(tmp) / "sandbox.log",
        }
        with sandbox_process(teams, 0, seed=seed, **serve) as sandbox:
            pagerduty = PagerDutyResource(
                api_url=sandbox.pagerduty_url,
                api_token=BENCH_TOKEN,
                max_concurrency=concurrency,
                rate_limit=limit,
                rate_window_seconds=60.0,
                rate_burst=REAL_BURST,
            )
            sandbox.clear_requests()
            with watched() as watch, pagerduty.client() as client:
                report = apply_approval(ledger=ledger, approval=approval, client=client, desired=desired)
            requests = sandbox.requests()
        outcomes = Counter(o.status.value for o in ledger.outcomes(plan.id))
        ledger.dispose()
    calls = len(requests)
    bound = calls / (limit / 60.0)
    per_change = writes_per_change(requests, plan)
    return {
        "changes": changes,
        "teams": teams,
        "scale": scale,
        "concurrency": concurrency,
        "latency_ms": REAL_LATENCY_MS // scale,
        "rate_limit_per_minute": limit,
        "api_calls": calls,
        "status_429": sum(1 for entry in requests if entry["status"] == 429),
        "wall_seconds": round(watch.wall_seconds, 3),
        "write_bound_seconds": round(bound, 3),
        "wall_over_bound": round(watch.wall_seconds / bound, 3) if bound else None,
        "memory_mb": round(watch.memory_mb, 1),
        "writes_per_change": {str(n): count for n, count in sorted(per_change.items())},
        "each_written_once": per_change == Counter({1: changes}),
        "outcomes": dict(outcomes),
        "report": report.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.onboarding", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10_000, help="users to add (default 10,000)")
    parser.add_argument("--teams", type=int, default=1_000, help="teams they join (default 1,000)")
    parser.add_argument("--concurrency", type=int, default=16, help="the client's max_concurrency")
    parser.add_argument(
        "--scale", type=int, default=10, help="F: latency 250/F ms, limit 960*F a minute (default 10)"
    )
    args = parser.parse_args(argv)
    result = measure_onboarding(args.changes, args.teams, args.scale, args.concurrency)
    print(json.dumps(result, indent=2))
    return 0 if result["each_written_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
