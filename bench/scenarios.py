"""The measured scenarios, each run in a fresh process: `python -m bench.scenarios NAME CONFIG_JSON`.

A scenario imports what it needs first, then is timed and its memory watched; it prints one JSON object.
Calls and 429s are counted by the orchestrator from the sandbox's request log, not here.
"""

from __future__ import annotations

import importlib
import json
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REAL_BURST = 16  # the nthlayer client's default burst against PagerDuty's 960 a minute: a count, not scaled
TERRAFORM_PARALLELISM = 10  # terraform plan's default -parallelism


# ---- memory ------------------------------------------------------------------------------------------


def _status_kib(name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Watch:
    """Wall time and peak resident memory of a block, over what the process held when it began."""

    wall_seconds: float = 0.0
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    peak_since_start: bool = False  # the kernel's peak could be reset: the peak is this block's own
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def memory_mb(self) -> float:
        return max(0.0, self.rss_peak_mb - self.rss_start_mb)


@contextmanager
def watched() -> Iterator[Watch]:
    watch = Watch()
    try:  # Linux resets VmHWM, the peak resident set, on "5" written to clear_refs.
        Path("/proc/self/clear_refs").write_text("5")
        watch.peak_since_start = True
    except OSError:
        watch.peak_since_start = False
    watch.rss_start_mb = (_status_kib("VmRSS") or 0) / 1024
    started = time.perf_counter()
    yield watch
    watch.wall_seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM") if watch.peak_since_start else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    watch.rss_peak_mb = peak / 1024


def _pages(count: int, page_size: int = 100) -> int:
    return max(1, -(-count // page_size))


def _nthlayer_resource(config: dict[str, Any]) -> Any:
    """nthlayer's PagerDuty resource at the bench's rate limit, concurrency and burst."""
    from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource

    return PagerDutyResource(
        api_url=config["api_url"],
        api_token=config["token"],
        max_concurrency=config["concurrency"],
        rate_limit=config["rate_limit_per_minute"],
        rate_window_seconds=60.0,
        rate_burst=config["burst"],
    )


# ---- (a) nthlayer ------------------------------------------------------------------------------------


def nthlayer_snapshot(config: dict[str, Any]) -> Watch:
    from nthlayer_pipelines.assets.pagerduty.snapshot import read_memberships, read_teams, read_users

    pagerduty = _nthlayer_resource(config)
    with watched() as watch, pagerduty.client() as client:
        users = read_users(client)
        teams = read_teams(client)
        memberships, members_minimum = read_memberships(client, list(teams["team_id"]))
    watch.details = {
        "client_api_calls": client.api_calls,
        "api_calls_minimum": _pages(len(users)) + _pages(len(teams)) + members_minimum,
        "retries": client.retries,
        "rate_limited": client.rate_limited,
        "rows": {"users": len(users), "teams": len(teams), "memberships": len(memberships)},
        "lanes": len(client._lanes),
    }
    return watch


def nthlayer_large_snapshot(config: dict[str, Any]) -> Watch:
    """(a) on an account past the users listing's limit: `read_full`, which reads the users through the
    teams' members there, with its own count of the calls the chosen read needs at the least."""
    from nthlayer_pipelines.assets.pagerduty.snapshot import read_full

    pagerduty = _nthlayer_resource(config)
    with watched() as watch, pagerduty.client() as client:
        read = read_full(client)
    state = read.state
    watch.details = {
        "client_api_calls": client.api_calls,
        "api_calls_by_table": read.api_calls,
        "api_calls_minimum": sum(read.api_calls_minimum.values()),
        "api_calls_minimum_by_table": read.api_calls_minimum,
        "users_read": read.users_read,
        "account_users": read.account_users,
        "retries": client.retries,
        "rate_limited": client.rate_limited,
        "rows": {"users": len(state.users), "teams": len(state.teams), "memberships": len(state.memberships)},
    }
    return watch


# ---- (b) nthlayer's incremental refresh -------------------------------------------------------------


def _ten_changes(client: Any, state: Any) -> list[str]:
    """Five members added, three roles changed, two members removed, on ten different teams, through the
    sandbox's PagerDuty API (with nthlayer's token: own writes, applied from their records all the same)."""
    from nthlayer_pipelines.core.model import Role
    from nthlayer_pipelines.resources.pagerduty.client import PagerDutyError

    members: dict[str, dict[str, str]] = {}
    for row in state.memberships.itertuples():
        members.setdefault(row.team_id, {})[row.user_id] = row.role
    teams = sorted(members)
    users = list(state.users["user_id"])
    done: list[str] = []
    for team in teams[:5]:
        newcomer = next(u for u in users if u not in members[team])
        client.set_membership(team, newcomer, Role.RESPONDER)
        done.append(f"add {newcomer} to {team}")
    for team in teams[5:8]:
        user, role = next(iter(members[team].items()))
        new_role = Role.MANAGER if role != Role.MANAGER.value else Role.RESPONDER
        client.set_membership(team, user, new_role)
        done.append(f"{team}: {user} {role} -> {new_role.value}")
    for team in teams[8:]:
        if len(done) == 10:
            break
        for user in members[team]:
            try:  # PagerDuty refuses to remove an escalation policy's target: take the next member
                client.remove_membership(team, user)
            except PagerDutyError:
                continue
            done.append(f"remove {user} from {team}")
            break
    return done


def nthlayer_incremental(config: dict[str, Any]) -> Watch:
    """A full refresh into a fresh ledger, ten changes, then the incremental refresh, which is measured.
    The sandbox's request log is cleared just before it, so the orchestrator counts its calls alone."""
    import tempfile

    import httpx

    from nthlayer_pipelines.assets.pagerduty.snapshot import refresh_pagerduty
    from nthlayer_pipelines.resources.ledger import Ledger

    pagerduty = _nthlayer_resource(config)
    with tempfile.TemporaryDirectory() as home, pagerduty.client() as client:
        ledger = Ledger(f"sqlite:///{home}/ledger.db")
        full = refresh_pagerduty(client, ledger, api_token=config["token"])
        changes = _ten_changes(client, full.state)
        httpx.delete(f"{config['sandbox_url']}/_admin/requests").raise_for_status()
        calls_before = client.api_calls
        with watched() as watch:
            incremental = refresh_pagerduty(client, ledger, api_token=config["token"])
        ledger.dispose()
    state = incremental.state
    watch.details = {
        "client_api_calls": client.api_calls - calls_before,
        "refresh": incremental.decision.mode.value,
        "refresh_reason": incremental.decision.reason,
        "full_snapshot_api_calls": full.total_api_calls,
        "changes": changes,
        "probe_api_calls": incremental.probe_api_calls,
        "audit_records_read": incremental.audit_records_read,
        "teams_reread": incremental.teams_reread,
        "rows": {"users": len(state.users), "teams": len(state.teams), "memberships": len(state.memberships)},
    }
    return watch


# ---- (c) the official client -------------------------------------------------------------------------


def official_client(config: dict[str, Any]) -> Watch:
    import pagerduty

    client = pagerduty.RestApiV2Client(config["token"])
    client._url = config["api_url"]  # its constructor refuses http://; the attribute takes it
    with watched() as watch:
        users = list(client.iter_all("users"))
        teams = list(client.iter_all("teams"))
        members = {team["id"]: list(client.iter_all(f"teams/{team['id']}/members")) for team in teams}
    watch.details = {
        "rows": {
            "users": len(users),
            "teams": len(teams),
            "memberships": sum(len(m) for m in members.values()),
        }
    }
    return watch


# ---- (d) terraform plan over a teams-as-code config -------------------------------------------------


def terraform_plan_reads(config: dict[str, Any]) -> Watch:
    """What `terraform plan` reads for a teams-as-code config written the usual way, a module per team:

    - its `pagerduty_team` resource: `GET /teams/{id}`;
    - a `data "pagerduty_user"` per member, looked up by email: `GET /users?query=<email>`;
    - a `pagerduty_team_membership` per member: the team's member list, every page, to find the user.

    For a sample of whole teams, `TERRAFORM_PARALLELISM` reads at a time, each retried after a 429."""
    import httpx

    teams: list[str] = config["teams"]
    memberships: list[tuple[str, str, str]] = [tuple(m) for m in config["memberships"]]
    headers = {
        "Authorization": f"Token token={config['token']}",
        "Accept": "application/vnd.pagerduty+json;version=2",
    }

    with httpx.Client(base_url=config["api_url"], headers=headers, timeout=60) as http:

        def get(path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
            while True:
                response = http.get(path, params=params)
                if response.status_code == 429:
                    time.sleep(float(response.headers.get("ratelimit-reset", "1")))
                    continue
                response.raise_for_status()
                return response.json()

        def read_team(team_id: str) -> bool:
            return get(f"/teams/{team_id}")["team"]["id"] == team_id

        def read_user(email: str) -> bool:
            return any(user["email"] == email for user in get("/users", {"query": email})["users"])

        def read_membership(team_id: str, user_id: str) -> bool:
            offset, found = 0, False
            while True:
                body = get(f"/teams/{team_id}/members", {"limit": 100, "offset": offset})
                found = found or any(member["user"]["id"] == user_id for member in body["members"])
                offset += len(body["members"])
                if not body["more"]:
                    return found

        reads: list[Callable[[], bool]] = [
            *(lambda t=team_id: read_team(t) for team_id in teams),
            *(lambda e=email: read_user(e) for _, _, email in memberships),
            *(lambda t=team_id, u=user_id: read_membership(t, u) for team_id, user_id, _ in memberships),
        ]
        with watched() as watch, ThreadPoolExecutor(TERRAFORM_PARALLELISM) as pool:
            found = list(pool.map(lambda read: read(), reads))
    watch.details = {
        "sampled_teams": len(teams),
        "sampled_memberships": len(memberships),
        "found": sum(found),
        "reads": len(reads),
    }
    return watch


# ---- divergences -------------------------------------------------------------------------------------


def divergences(config: dict[str, Any]) -> Watch:
    """`compute_divergences` over `memberships` desired and about as many observed, with 1 % of them
    missing, 1 % on another role and 1 % extra."""
    import pandas as pd

    from nthlayer_pipelines.assets.pagerduty.teams.compare import compute_divergences
    from nthlayer_pipelines.core.model import DesiredState, Member, Role, Team
    from nthlayer_pipelines.resources.pagerduty.observed import (
        ObservedState,
        memberships_frame,
        teams_frame,
        users_frame,
    )

    rng = random.Random(0)
    team_count = config["memberships"] // 10
    user_count = min(20_000, team_count * 4)
    emails = [f"user.{n:05d}@example.com" for n in range(user_count)]
    roles = list(Role)
    desired_teams, observed_rows = [], []
    for t in range(team_count):
        chosen = rng.sample(range(user_count), 10)
        members = [Member(email=emails[u], role=roles[(t + i) % 3]) for i, u in enumerate(chosen)]
        desired_teams.append(
            Team(name=f"team-{t:05d}", display_name=f"Team {t:05d}", members=tuple(members), prune=t % 2 == 0)
        )
        for i, (u, member) in enumerate(zip(chosen, members, strict=True)):
            n = t * 10 + i
            if n % 100 == 0:
                continue  # missing
            role = roles[(t + i + 1) % 3] if n % 100 == 50 else member.role
            observed_rows.append({"team_id": f"PT{t:05d}", "user_id": f"PU{u:05d}", "role": role.value})
        if t % 10 == 0:  # an extra member on one team in ten: 1 % of the memberships
            extra = next(u for u in range(user_count) if u not in chosen)
            observed_rows.append({"team_id": f"PT{t:05d}", "user_id": f"PU{extra:05d}", "role": "observer"})
    desired = DesiredState(teams=tuple(desired_teams), sources=("git",))
    observed = ObservedState(
        users=users_frame([{"user_id": f"PU{u:05d}", "email": e, "name": e} for u, e in enumerate(emails)]),
        teams=teams_frame([{"team_id": f"PT{t:05d}", "name": f"Team {t:05d}"} for t in range(team_count)]),
        memberships=memberships_frame(observed_rows),
    )
    seconds, results = [], []
    for _ in range(config["runs"]):
        with watched() as watch:
            result: pd.DataFrame = compute_divergences(desired, observed)
        seconds.append(watch.wall_seconds)
        results.append(watch)
    watch = max(results, key=lambda w: w.memory_mb)
    watch.wall_seconds = statistics.median(seconds)
    watch.details = {
        "desired_memberships": sum(len(t.members) for t in desired.teams),
        "observed_memberships": len(observed.memberships),
        "divergences": len(result),
        "by_kind": {str(k): int(v) for k, v in result["kind"].value_counts().sort_index().items()},
        "runs": config["runs"],
        "all_seconds": [round(s, 4) for s in seconds],
    }
    return watch


SCENARIOS: dict[str, Callable[[dict[str, Any]], Watch]] = {
    "a": nthlayer_snapshot,
    "large": nthlayer_large_snapshot,
    "b": nthlayer_incremental,
    "c": official_client,
    "d": terraform_plan_reads,
    "divergences": divergences,
}


def main(argv: list[str]) -> None:
    name, config = argv[0], json.loads(argv[1])
    # The code imports pandas at its first table (nthlayer_pipelines.core.lazy); a scenario measures the
    # read, as a process that has loaded its libraries does it, not the import, in time or in memory.
    importlib.import_module("pandas")
    watch = SCENARIOS[name](config)
    print(
        json.dumps(
            {
                "wall_seconds": watch.wall_seconds,
                "memory_mb": watch.memory_mb,
                "rss_start_mb": watch.rss_start_mb,
                "rss_peak_mb": watch.rss_peak_mb,
                "peak_since_start": watch.peak_since_start,
                **watch.details,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
