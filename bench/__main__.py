"""`python -m bench [--quick]`: measure, then write bench/results/latest.json and latest.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.e2e import DEFAULT_POSTGRES
from bench.e2e import measure as measure_drift_to_fix
from bench.imports import measure_imports
from bench.large_account import measure_large_account
from bench.measure import REAL_LATENCY_MS, REAL_LIMIT_PER_MINUTE, run_scenario, served_calls
from bench.report import bound_seconds, markdown
from bench.sandbox_process import BENCH_TOKEN, sandbox_process
from bench.scenarios import REAL_BURST
from nthlayer_pipelines.resources.settings import DEFAULT_SENSOR_INTERVAL_SECONDS

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FULL_SIZES = (100, 1_000, 5_000)
QUICK_SIZES = (100, 1_000)
MEASURED = ("a", "b", "c", "d")
# PagerDuty lists at most 10,000 of anything (offset + limit <= 10,000) and /users has no other paging, so
# these sizes keep to what the users listing reaches, where (a) is the listing's read and (c) and (d), the
# other clients, can read the account at all; bench/large_account.py measures the read of a larger one.
LISTABLE_USERS = 10_000
# The last commit before the run-overhead work (the lazy pandas import, the 1 s run queue): the run measures
# its import time and its drift to fix beside this checkout's, so before and after share one machine state.
OVERHEAD_BASELINE = "8dbb8c2"


def user_count(teams: int) -> int:
    """min(20000, 4 x teams), held to what a listing can reach."""
    return min(LISTABLE_USERS, 20_000, 4 * teams)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 teams only")
    parser.add_argument("--teams", type=int, nargs="+", help="account sizes, in teams (overrides --quick)")
    parser.add_argument(
        "--scale", type=int, default=10, help="F: latency 250/F ms, limit 960*F a minute (default 10)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="nthlayer's max_concurrency")
    parser.add_argument(
        "--terraform-sample", type=int, default=2_000, help="memberships (d) reads before extrapolating"
    )
    parser.add_argument("--divergence-memberships", type=int, default=100_000)
    parser.add_argument(
        "--sensor-interval",
        type=int,
        default=DEFAULT_SENSOR_INTERVAL_SECONDS,
        help="the deployment's sensor interval in the drift-to-fix measurement (default: the deployment's)",
    )
    parser.add_argument(
        "--large-account",
        type=int,
        nargs=2,
        metavar=("TEAMS", "USERS"),
        help="the account past the users listing's limit (default 5000 20000; --quick: 500 12000)",
    )
    parser.add_argument(
        "--onboarding",
        type=int,
        nargs=2,
        metavar=("CHANGES", "TEAMS"),
        help="the onboarding plan applied at --concurrency and one at a time (default 10000 1000; "
        "--quick: 1000 100)",
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the drift-to-fix measurement")
    parser.add_argument(
        "--only-overhead",
        action="store_true",
        help="measure the run overhead again into the last run's results, keeping the rest of them",
    )
    parser.add_argument(
        "--postgres",
        default=DEFAULT_POSTGRES,
        help="a server the drift-to-fix deployment makes a database on",
    )
    parser.add_argument(
        "--overhead-baseline",
        default=OVERHEAD_BASELINE,
        help="a git revision whose import time and drift to fix are measured beside this checkout's",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where latest.json and latest.md go")
    args = parser.parse_args(argv)
    if REAL_LATENCY_MS % args.scale:
        parser.error(f"--scale must divide {REAL_LATENCY_MS} (the sandbox takes whole milliseconds)")
    return args


def measure_onboarding(changes: int, teams: int, scale: int, concurrency: int) -> dict[str, Any]:
    """bench.onboarding in a fresh interpreter, so its memory is its own."""
    command = [sys.executable, "-m", "bench.onboarding", "--changes", str(changes), "--teams", str(teams)]
    command += ["--scale", str(scale), "--concurrency", str(concurrency)]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the onboarding at {concurrency} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout)


def measure_size(teams: int, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    limit = REAL_LIMIT_PER_MINUTE * args.scale
    serve = {"rate_limit": limit, "latency_ms": REAL_LATENCY_MS // args.scale, "log": log}
    base = {"token": BENCH_TOKEN, "rate_limit_per_minute": limit}
    scenarios: dict[str, Any] = {}

    for name in MEASURED:
        with sandbox_process(teams, user_count(teams), **serve) as sandbox:
            config = {**base, "api_url": sandbox.pagerduty_url}
            if name in ("a", "b"):
                config |= {"concurrency": args.concurrency, "burst": REAL_BURST}
            if name == "b":
                config |= {"sandbox_url": sandbox.url}
            if name == "d":
                state = sandbox.state()["pagerduty"]
                emails = {u["id"]: u["email"] for u in state["users"]}
                sizes: dict[str, int] = {t["id"]: 0 for t in state["teams"]}
                for m in state["memberships"]:
                    sizes[m["team_id"]] += 1
                sample = state["memberships"][: args.terraform_sample]  # whole teams, in team order
                config |= {
                    "teams": list(dict.fromkeys(m["team_id"] for m in sample)),
                    "memberships": [[m["team_id"], m["user_id"], emails[m["user_id"]]] for m in sample],
                }
            sandbox.clear_requests()
            print(f"  {teams:>5} teams: ({name}) ...", end="", flush=True, file=sys.stderr)
            measured = run_scenario(name, config)
            calls, rate_limited = served_calls(sandbox)
        result = {**measured, "api_calls": calls, "status_429": rate_limited}
        if name == "d":
            result |= extrapolate_terraform(result, sizes, limit)
        result["bound_seconds"] = bound_seconds(result["api_calls"], limit)
        result["wall_over_bound"] = result["wall_seconds"] / result["bound_seconds"]
        print(f" {result['api_calls']:,} calls, {result['wall_seconds']:.1f} s", file=sys.stderr)
        scenarios[name] = result
    rows = scenarios["a"]["rows"]
    return {
        "teams": teams,
        "users": rows["users"],
        "memberships": rows["memberships"],
        "scenarios": scenarios,
    }


def extrapolate_terraform(sample: dict[str, Any], team_sizes: dict[str, int], limit: int) -> dict[str, Any]:
    """The calls follow from the team sizes: a read per team, a user lookup per member, and each
    membership's read of its team's pages. The sample's pace times them all gives the wall time, unless
    that outruns the rate limit, which holds it to the bound: terraform's 10 reads at a time ask for more
    than PagerDuty's limit allows."""
    memberships = sum(team_sizes.values())
    total_calls = len(team_sizes) + memberships
    total_calls += sum(size * max(1, -(-size // 100)) for size in team_sizes.values())
    paced = sample["wall_seconds"] * total_calls / sample["api_calls"]
    bound = bound_seconds(total_calls, limit)
    return {
        "memberships_total": memberships,
        "sample": {
            "teams": sample["sampled_teams"],
            "memberships": sample["sampled_memberships"],
            "api_calls": sample["api_calls"],
            "wall_seconds": sample["wall_seconds"],
            "status_429": sample["status_429"],
        },
        "sampled": sample["sampled_memberships"] < memberships,
        "api_calls": total_calls,
        "wall_seconds_at_sample_pace": paced,
        "held_to_bound": paced < bound,
        "wall_seconds": max(paced, bound),
    }


def environment() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "httpx": version("httpx"),
        "pagerduty": version("pagerduty"),
        "commit": commit or None,
    }


@contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """`revision` of this repository in a temporary worktree, removed at the end."""
    with tempfile.TemporaryDirectory(prefix="nthlayer-bench-baseline-") as parent:
        tree = Path(parent) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), revision], check=True, capture_output=True
        )
        try:
            yield tree
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], check=False, capture_output=True
            )


def make_command(argv: list[str]) -> str:
    """The make command that runs the benchmark with these arguments again."""
    return "make bench" + (f" ARGS={shlex.quote(shlex.join(argv))}" if argv else "")


def measure_overhead(args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """The code location's import time and the drift to fix, of the baseline revision and of this checkout."""
    overhead: dict[str, Any] = {"baseline": args.overhead_baseline}
    with checkout(args.overhead_baseline) as baseline_tree:
        for side, tree in (("before", baseline_tree), ("after", REPO)):
            print(f"  code location import ({side}) ...", end="", flush=True, file=sys.stderr)
            overhead[f"imports_{side}"] = measure_imports(repo=tree)
            print(f" {overhead[f'imports_{side}']['code_location_seconds']:.2f} s", file=sys.stderr)
            if args.no_e2e:
                continue
            print(f"  drift to fix on dagster-daemon ({side}) ...", end="", flush=True, file=sys.stderr)
            overhead[f"drift_to_fix_{side}"] = measure_drift_to_fix(
                rate_limit=REAL_LIMIT_PER_MINUTE * args.scale,
                latency_ms=REAL_LATENCY_MS // args.scale,
                log=log,
                sensor_interval_seconds=args.sensor_interval,
                postgres=args.postgres,
                repo=tree,
            )
            print(f" {overhead[f'drift_to_fix_{side}']['drift_to_fix_seconds']:.1f} s", file=sys.stderr)
    overhead["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    overhead["commit"] = environment()["commit"]
    return overhead


def rerun_overhead(args: argparse.Namespace, log: Path) -> int:
    """The overhead measured again, in place in latest.json; its own time and commit say when."""
    path = args.output / "latest.json"
    results = json.loads(path.read_text())
    results["overhead"] = measure_overhead(args, log)
    results["drift_to_fix"] = results["overhead"].get("drift_to_fix_after")
    path.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.output / "latest.md").write_text(table)
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    sizes = tuple(args.teams) if args.teams else QUICK_SIZES if args.quick else FULL_SIZES
    args.output.mkdir(parents=True, exist_ok=True)
    log = Path(tempfile.gettempdir()) / "nthlayer-bench-sandbox.log"  # the servers' output, for a failure
    log.unlink(missing_ok=True)
    if args.only_overhead:
        return rerun_overhead(args, log)
    started = time.monotonic()
    print(f"bench: F={args.scale}, sizes {', '.join(map(str, sizes))}", file=sys.stderr)
    measured = [measure_size(teams, args, log) for teams in sizes]
    large_teams, large_users = args.large_account or ((500, 12_000) if args.quick else (5_000, 20_000))
    print(f"  {large_teams} teams, {large_users} users: snapshot ...", end="", flush=True, file=sys.stderr)
    large_account = measure_large_account(large_teams, large_users, args.scale, args.concurrency)
    print(f" {large_account['api_calls']:,} calls, {large_account['wall_seconds']:.1f} s", file=sys.stderr)
    changes, onboarding_teams = args.onboarding or ((1_000, 100) if args.quick else (10_000, 1_000))
    onboarding = {}
    for concurrency in (args.concurrency, 1):
        print(f"  onboarding, {changes} changes at {concurrency} ...", end="", flush=True, file=sys.stderr)
        onboarding[str(concurrency)] = measure_onboarding(changes, onboarding_teams, args.scale, concurrency)
        print(f" {onboarding[str(concurrency)]['wall_seconds']:.1f} s", file=sys.stderr)
    print("  divergences ...", end="", flush=True, file=sys.stderr)
    divergences = run_scenario("divergences", {"memberships": args.divergence_memberships, "runs": 3})
    print(f" {divergences['wall_seconds']:.2f} s", file=sys.stderr)
    overhead = measure_overhead(args, log)
    drift_to_fix = overhead.get("drift_to_fix_after")
    results = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": make_command(argv),
        "settings": {
            "scale": args.scale,
            "latency_ms": REAL_LATENCY_MS // args.scale,
            "rate_limit_per_minute": REAL_LIMIT_PER_MINUTE * args.scale,
            "concurrency": args.concurrency,
            "burst": REAL_BURST,
            "terraform_sample": args.terraform_sample,
        },
        "environment": environment(),
        "sizes": measured,
        "large_account": large_account,
        "onboarding": onboarding,
        "divergences": {**divergences, "seconds": divergences["wall_seconds"]},
        "drift_to_fix": drift_to_fix,
        "overhead": overhead,
        "duration_seconds": round(time.monotonic() - started, 1),
    }
    (args.output / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.output / "latest.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
