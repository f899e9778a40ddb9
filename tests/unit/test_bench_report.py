"""The benchmark records what it ran and how long it took, the source of the README's durations."""

from __future__ import annotations

from bench.__main__ import make_command
from bench.report import duration_text, run_line


def test_the_recorded_command_runs_the_benchmark_again() -> None:
    assert make_command([]) == "make bench"
    assert make_command(["--quick"]) == "make bench ARGS=--quick"
    assert make_command(["--teams", "100", "--no-e2e"]) == "make bench ARGS='--teams 100 --no-e2e'"


def test_the_run_line_says_how_long_the_run_took() -> None:
    results = {
        "command": "make bench ARGS=--quick",
        "generated_at": "2026-12-01T21:00:00+00:00",
        "environment": {"commit": "abc1234", "cpus": 2},
        "duration_seconds": 411.4,
    }
    assert run_line(results) == (
        "`make bench ARGS=--quick` at 2026-12-01T21:00:00+00:00 (commit abc1234, 2 CPUs): 6 min 51 s in all."
    )
    assert duration_text(48.2) == "48 s"
