"""Benchmark results as numbers and as the markdown table the README quotes. Pure: no I/O."""

from __future__ import annotations

from typing import Any

from bench.imports import HEAVY

SCENARIO_TITLES = {
    "a": "(a) nthlayer snapshot",
    "b": "(b) incremental refresh, 10 changes",
    "c": "(c) official client, one call at a time",
    "d": "(d) terraform plan, teams-as-code",
}
TARGET_WALL_OVER_BOUND = 1.15
TARGET_CALLS_VS_TERRAFORM = 10.0
TARGET_WALL_VS_OFFICIAL_CLIENT = 3.0
TARGET_INCREMENTAL_SHARE = 0.02  # (b)'s calls as a share of (a)'s
TARGET_APPLY_OVER_BOUND = 1.25  # an onboarding applied at the rate limit
TARGET_APPLY_SPEEDUP = 5.0  # ... against one change at a time


def bound_seconds(api_calls: int, limit_per_minute: int) -> float:
    """The least time `api_calls` requests can take at the rate limit."""
    return api_calls * 60.0 / limit_per_minute


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}".replace("%", " %")


def size_rows(size: dict[str, Any]) -> list[list[str]]:
    scenarios = size["scenarios"]
    base = scenarios["a"]
    rows = []
    for key, title in SCENARIO_TITLES.items():
        result = scenarios.get(key)
        if result is None:
            rows.append([f"{size['teams']:,}", title, "not measured yet", "", "", "", "", "", ""])
            continue
        sampled = "*" if result.get("sampled") else ""
        held = "‡" if result.get("held_to_bound") else ""
        calls = f"{result['api_calls']:,}{sampled}"
        if key == "a":
            calls += " (minimum " + f"{result['api_calls_minimum']:,})"
        rows.append(
            [
                f"{size['teams']:,}",
                title,
                calls,
                "1x"
                if key == "a"
                else _share(ratio(result["api_calls"], base["api_calls"]))
                if key == "b"
                else _times(ratio(result["api_calls"], base["api_calls"])),
                _number(result["wall_seconds"], 1) + (held or sampled),
                _times(result["wall_over_bound"]),
                "1x" if key == "a" else _times(ratio(result["wall_seconds"], base["wall_seconds"])),
                _number(result["memory_mb"], 1) + ("†" if sampled else ""),
                str(result["status_429"]) + ("†" if sampled else ""),
            ]
        )
    return rows


def duration_text(seconds: float) -> str:
    """`6 min 51 s`, or `48 s` under a minute."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def run_line(results: dict[str, Any]) -> str:
    """What was run, when, where, and how long it took: the source of the durations the README quotes."""
    environment = results.get("environment") or {}
    return (
        f"`{results['command']}` at {results['generated_at']} (commit {environment.get('commit') or '?'}, "
        f"{environment.get('cpus') or '?'} CPUs): {duration_text(results['duration_seconds'])} in all."
    )


def markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    header = [
        "teams",
        "scenario",
        "API calls",
        "calls vs (a)",
        "wall (s)",
        "wall / bound",
        "wall vs (a)",
        "memory (MB)",
        "429s",
    ]
    lines = [
        run_line(results),
        "",
        f"Scale F = {settings['scale']}: {settings['latency_ms']} ms a request and "
        f"{settings['rate_limit_per_minute']:,} requests a minute (PagerDuty: 250 ms and 960). "
        f"nthlayer: {settings['concurrency']} at a time, burst {settings['burst']}. "
        f"Bound = calls / limit. Memory = peak RSS growth of the measuring process.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i >= 2 else "---" for i in range(len(header))) + "|",
    ]
    for size in results["sizes"]:
        lines += ["| " + " | ".join(row) + " |" for row in size_rows(size)]
    lines += large_account_lines(results.get("large_account"))
    lines += onboarding_lines(results.get("onboarding"), settings["concurrency"])
    divergences = results.get("divergences")
    if divergences:
        lines += [
            "",
            f"`divergences` of {divergences['desired_memberships']:,} desired and "
            f"{divergences['observed_memberships']:,} observed memberships: "
            f"{divergences['seconds']:.2f} s (median of {divergences['runs']}), "
            f"{divergences['memory_mb']:.1f} MB peak RSS growth, {divergences['divergences']:,} rows.",
        ]
    lines += [
        "",
        "(b): a full refresh into a fresh ledger (SQLite), then 10 changes through the sandbox's PagerDuty "
        "API (5 members added, 3 roles changed, 2 members removed, on 10 teams), then the measured "
        "incremental refresh: the totals probe (`GET /users` and `GET /teams` with `limit=1&total=true`: "
        "2 calls), the audit records since the cursor and what they name; its wall time "
        "includes loading and storing the snapshot in the ledger.",
        "",
        "(d): what `terraform plan` reads for a module per team: `GET /teams/{id}` for each "
        '`pagerduty_team`, `GET /users?query=<email>` for each member\'s `data "pagerduty_user"`, and '
        "for each `pagerduty_team_membership` its team's member list, every page; 10 at a time "
        "(terraform's default parallelism).",
    ]
    d_results = [s["scenarios"].get("d") or {} for s in results["sizes"]]
    if any(d.get("sampled") for d in d_results):
        sample = settings["terraform_sample"]
        lines += [
            "",
            f"\\* (d) read the first {sample:,} memberships (whole teams) and was extrapolated: the calls "
            "exactly, since each team, member and membership costs a known number of reads, the wall time at "
            "the sample's pace. "
            "† measured on the sample.",
        ]
    if any(d.get("held_to_bound") for d in d_results):
        lines += [
            "",
            "‡ held to the rate-limit bound: terraform's 10 reads at a time ask for more than the limit "
            "allows, which the sandbox's minute-long window lets through for a while but PagerDuty's 960 "
            "a minute would not (it answers 429 instead).",
        ]
    lines += drift_to_fix_lines(results.get("drift_to_fix"))
    lines += overhead_lines(results.get("overhead"))
    lines += ["", *target_lines(results)]
    return "\n".join(lines) + "\n"


def drift_to_fix_lines(e2e: dict[str, Any] | None) -> list[str]:
    """The end-to-end measurement on dagster-daemon, leg by leg."""
    if not e2e:
        return []
    return [
        "",
        f"Drift to fix on dagster-daemon (deploy/dagster.yaml on Postgres, sensor interval "
        f"{e2e['sensor_interval_seconds']} s): a member removed through the sandbox's API is back after "
        f"**{e2e['drift_to_fix_seconds']:.1f} s**{_median_of(e2e)}, the refresh launched at once (a "
        f"schedule adds up to its period, hourly by default):",
        "",
        "| leg | seconds |",
        "|---|---:|",
        f"| `dagster job launch refresh` (the CLI loading the code) | {e2e['launch_seconds']:.1f} |",
        f"| refresh run, queued to finished ({e2e['refresh_kind']}) | {e2e['refresh_run_seconds']:.1f} |",
        f"| refresh finished to apply run queued (sensor tick) | {e2e['sensor_pickup_seconds']:.1f} |",
        f"| apply run, queued to finished | {e2e['apply_run_seconds']:.1f} |",
        f"| of which the apply itself (provider calls, ledger) | {e2e['apply_op_seconds']:.2f} |",
        "| of which Dagster overhead (queue, run worker start, events) | "
        f"{e2e['apply_overhead_seconds']:.1f} |",
        *_apply_leg_rows(e2e.get("apply_legs")),
    ]


def _median_of(e2e: dict[str, Any]) -> str:
    repeats = e2e.get("repeats", 1)
    return f" (the median of {repeats} drifts, as is each leg)" if repeats > 1 else ""


APPLY_LEGS = {
    "queue_seconds": "queued, until the daemon's run queue takes it",
    "worker_start_seconds": "the run worker starting: Python, Dagster, the code location, the instance",
    "before_step_seconds": "the run started, until its step starts (resources set up)",
    "step_other_seconds": "the step, besides the apply itself (the ledger opened, events, Slack)",
    "after_step_seconds": "the step finished, until the run is",
}


def _apply_leg_rows(legs: dict[str, float] | None) -> list[str]:
    """The apply run's overhead at its events (absent from runs before it was measured)."""
    if not legs:
        return []
    return [f"| &nbsp;&nbsp;{text} | {legs[key]:.1f} |" for key, text in APPLY_LEGS.items()]


def large_account_lines(large: dict[str, Any] | None) -> list[str]:
    """The full snapshot of an account past the users listing's 10,000."""
    if not large:
        return []
    rows = large["rows"]
    return [
        "",
        f"An account of {large['teams']:,} teams and {large['users']:,} users (past the 10,000 a listing "
        f"reaches): the users read `{large['users_read']}`, {rows['users']:,} users on teams, "
        f"{rows['memberships']:,} memberships. {large['api_calls']:,} calls (minimum "
        f"{large['api_calls_minimum']:,}: the users listing's first page for its total, the teams' pages, "
        f"each team's member pages), {large['wall_seconds']:.1f} s, {large['wall_over_bound']:.2f}x the "
        f"bound, {large['status_429']} 429s, {large['memory_mb']:.1f} MB peak RSS growth.",
    ]


def onboarding_lines(onboarding: dict[str, Any] | None, concurrency: int) -> list[str]:
    """The onboarding plan applied at the concurrency and one change at a time."""
    if not onboarding:
        return []
    at, one = onboarding[str(concurrency)], onboarding["1"]
    lines = [
        "",
        f"Onboarding: {at['changes']:,} additions over {at['teams']:,} teams in one approved plan, applied "
        "with `apply_approval` (a fresh SQLite ledger):",
        "",
        "| apply | API calls | wall (s) | wall / write bound | wall vs one at a time | memory (MB) | 429s "
        "| writes per change |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, measured in ((f"{concurrency} teams at a time", at), ("one change at a time", one)):
        written = measured["writes_per_change"]
        once = "exactly 1 each" if measured["each_written_once"] else f"NOT once: {written}"
        against = _times(ratio(measured["wall_seconds"], one["wall_seconds"]))
        lines.append(
            f"| {label} | {measured['api_calls']:,} | {measured['wall_seconds']:.1f} | "
            f"{measured['wall_over_bound']:.2f}x | {against} "
            f"| {measured['memory_mb']:.1f} | {measured['status_429']} | {once} |"
        )
    return lines


OVERHEAD_ROWS = (
    ("imports", "baseline_seconds", "importing Dagster and its Postgres storage (any run worker)"),
    ("imports", "code_location_seconds", "importing the code location, on top"),
    ("drift", "drift_to_fix_seconds", "drift to fix"),
    ("drift", "refresh_run_seconds", "refresh run, queued to finished"),
    ("drift", "refresh_queue_seconds", "&nbsp;&nbsp;in the run queue"),
    ("drift", "sensor_pickup_seconds", "refresh finished to apply run queued (sensor tick)"),
    ("drift", "apply_run_seconds", "apply run, queued to finished"),
    ("legs", "queue_seconds", "&nbsp;&nbsp;in the run queue"),
    ("legs", "worker_start_seconds", "&nbsp;&nbsp;the run worker starting"),
    ("legs", "step_seconds", "&nbsp;&nbsp;the step"),
)


def overhead_lines(overhead: dict[str, Any] | None) -> list[str]:
    """This checkout beside the baseline revision, both measured in this run."""
    if not overhead or "imports_before" not in overhead:
        return []
    sides = {}
    for side in ("before", "after"):
        drift = overhead.get(f"drift_to_fix_{side}") or {}
        sides[side] = {
            "imports": overhead[f"imports_{side}"],
            "drift": drift,
            "legs": drift.get("apply_legs") or {},
        }
    lines = [
        "",
        f"Run overhead, before (commit {overhead['baseline']}) and after (commit "
        f"{overhead.get('commit') or 'this one'}), measured together at "
        f"{overhead.get('measured_at', 'this run')} (fresh interpreters, "
        f"median of {sides['after']['imports']['runs']}; drift to fix as above, median of "
        f"{sides['after']['drift'].get('repeats', 1)} each):",
        "",
        "| seconds | before | after | after ÷ before |",
        "|---|---:|---:|---:|",
    ]
    for group, key, text in OVERHEAD_ROWS:
        before, after = sides["before"][group].get(key), sides["after"][group].get(key)
        if before is None or after is None:
            continue
        lines.append(f"| {text} | {before:.2f} | {after:.2f} | {_times(ratio(after, before))} |")
    loaded = ", ".join(sides["after"]["imports"]["heavy_loaded"]) or "none of them"
    lines += ["", f"Loaded with the code location after the work, of {', '.join(HEAVY)}: {loaded}."]
    return lines


def target_lines(results: dict[str, Any]) -> list[str]:
    """Each target, checked on the largest account measured."""
    size = max(results["sizes"], key=lambda s: s["teams"])
    a, b, c, d = (size["scenarios"].get(k) for k in ("a", "b", "c", "d"))
    teams = f"{size['teams']:,} teams"
    lines = [f"Targets, on {teams}:"]

    def check(ok: bool, text: str) -> None:
        lines.append(f"- {'met' if ok else 'NOT met'}: {text}")

    check(a["api_calls"] == a["api_calls_minimum"], f"calls equal the page minimum ({a['api_calls']:,})")
    check(
        a["wall_over_bound"] <= TARGET_WALL_OVER_BOUND,
        f"wall time within {TARGET_WALL_OVER_BOUND}x of the bound ({a['wall_over_bound']:.2f}x)",
    )
    check(a["status_429"] == 0, f"no 429s ({a['status_429']})")
    if b is not None:
        share = ratio(b["api_calls"], a["api_calls"]) or 0.0
        check(
            share <= TARGET_INCREMENTAL_SHARE,
            f"(b) after 10 changes: at most {TARGET_INCREMENTAL_SHARE:.0%} of (a)'s calls "
            f"({b['api_calls']:,} of {a['api_calls']:,}: {_share(share)})",
        )
    if d is not None:
        calls = ratio(d["api_calls"], a["api_calls"]) or 0.0
        check(
            calls >= TARGET_CALLS_VS_TERRAFORM,
            f"at least {TARGET_CALLS_VS_TERRAFORM:.0f}x fewer calls than (d) ({calls:.2f}x)",
        )
    if c is not None:
        wall = ratio(c["wall_seconds"], a["wall_seconds"]) or 0.0
        check(
            wall >= TARGET_WALL_VS_OFFICIAL_CLIENT,
            f"at least {TARGET_WALL_VS_OFFICIAL_CLIENT:.0f}x less wall time than (c) ({wall:.2f}x)",
        )
    onboarding = results.get("onboarding")
    if onboarding:
        at, one = onboarding[str(results["settings"]["concurrency"])], onboarding["1"]
        plan = f"onboarding of {at['changes']:,}"
        check(
            at["wall_over_bound"] <= TARGET_APPLY_OVER_BOUND,
            f"{plan}: within {TARGET_APPLY_OVER_BOUND}x of the write bound ({at['wall_over_bound']:.2f}x)",
        )
        speedup = ratio(one["wall_seconds"], at["wall_seconds"]) or 0.0
        check(
            speedup >= TARGET_APPLY_SPEEDUP,
            f"{plan}: at least {TARGET_APPLY_SPEEDUP:.0f}x faster than one at a time ({speedup:.1f}x)",
        )
        check(
            at["each_written_once"] and one["each_written_once"],
            f"{plan}: every change written exactly once, both ways (the sandbox's request log)",
        )
    large = results.get("large_account")
    if large is not None:
        account = f"{large['teams']:,} teams and {large['users']:,} users"
        check(
            large["api_calls"] == large["api_calls_minimum"],
            f"{account}: calls equal the chosen read's minimum ({large['api_calls']:,})",
        )
        check(
            large["wall_over_bound"] <= TARGET_WALL_OVER_BOUND,
            f"{account}: within {TARGET_WALL_OVER_BOUND}x of the bound ({large['wall_over_bound']:.2f}x)",
        )
        check(large["status_429"] == 0, f"{account}: no 429s ({large['status_429']})")
    return lines
