"""A full snapshot of an account past PagerDuty's 10,000 listing limit, measured as (a) is:
`python -m bench.large_account --teams 5000 --users 20000` prints one JSON object.

The users listing's first page says the account holds more than a listing reaches, so the users are read
with the teams' members (`include[]=users`). `api_calls_minimum` is the chosen read's, as `read_full`
counts it: 1 for the users listing's first page (its total), the teams listing's pages (ceil(teams/100)),
and each team's member pages (ceil(members/100), at least 1). The desired emails on no team are looked up
by the membership compare, not by the snapshot, so they are not in these calls.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.measure import REAL_LATENCY_MS, REAL_LIMIT_PER_MINUTE, run_scenario, served_calls
from bench.report import bound_seconds
from bench.sandbox_process import BENCH_TOKEN, sandbox_process
from bench.scenarios import REAL_BURST


def measure_large_account(teams: int, users: int, scale: int, concurrency: int) -> dict[str, Any]:
    """The full snapshot of a generated account of `teams` teams (10 members each) and `users` users,
    against the sandbox at 250/`scale` ms a call and 960*`scale` calls a minute: calls served and the
    chosen read's minimum, wall and bound seconds, 429s, and the snapshot's peak memory growth."""
    if REAL_LATENCY_MS % scale:
        raise ValueError(f"scale must divide {REAL_LATENCY_MS} (the sandbox takes whole milliseconds)")
    limit = REAL_LIMIT_PER_MINUTE * scale
    with tempfile.TemporaryDirectory() as home:
        log = Path(home) / "sandbox.log"
        with sandbox_process(
            teams, users, rate_limit=limit, latency_ms=REAL_LATENCY_MS // scale, log=log
        ) as sandbox:
            config = {
                "token": BENCH_TOKEN,
                "api_url": sandbox.pagerduty_url,
                "rate_limit_per_minute": limit,
                "concurrency": concurrency,
                "burst": REAL_BURST,
            }
            sandbox.clear_requests()
            measured = run_scenario("large", config)
            calls, rate_limited = served_calls(sandbox)
    bound = bound_seconds(calls, limit)
    return {
        "teams": teams,
        "users": users,
        "scale": scale,
        "concurrency": concurrency,
        "users_read": measured["users_read"],
        "rows": measured["rows"],
        "api_calls": calls,
        "api_calls_minimum": measured["api_calls_minimum"],
        "api_calls_by_table": measured["api_calls_by_table"],
        "api_calls_minimum_by_table": measured["api_calls_minimum_by_table"],
        "wall_seconds": measured["wall_seconds"],
        "bound_seconds": bound,
        "wall_over_bound": measured["wall_seconds"] / bound,
        "status_429": rate_limited,
        "retries": measured["retries"],
        "memory_mb": measured["memory_mb"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.large_account", description=__doc__)
    parser.add_argument("--teams", type=int, default=5_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--scale", type=int, default=10, help="F: latency 250/F ms, limit 960*F a minute")
    parser.add_argument("--concurrency", type=int, default=16, help="nthlayer's max_concurrency")
    args = parser.parse_args(argv)
    result = measure_large_account(args.teams, args.users, args.scale, args.concurrency)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
