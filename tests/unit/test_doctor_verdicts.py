"""The doctor's verdicts on what it read: pure functions of heartbeats, schemas and secrets."""

from __future__ import annotations

from nthlayer_pipelines.doctor import Heartbeat, Status, assess_daemon, assess_ledger_schema, redact

REQUIRED = ["SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"]
NOW = 1_000_000.0


def beats(age_seconds: float, errors: tuple[str, ...] = ()) -> dict[str, Heartbeat]:
    return {name: Heartbeat(NOW - age_seconds, errors) for name in REQUIRED}


def test_a_daemon_that_beat_recently_is_alive() -> None:
    verdict = assess_daemon(REQUIRED, beats(12), NOW)
    assert (verdict.status, verdict.message) == (Status.OK, "alive: 3 daemons, last heartbeat 12s ago")


def test_a_silent_daemon_is_down_or_stuck() -> None:
    verdict = assess_daemon(REQUIRED, beats(61), NOW)
    assert verdict.status is Status.FAIL
    assert verdict.message.startswith("the last heartbeat came 61s ago (over 60s;")


def test_one_daemon_missing_is_named() -> None:
    heartbeats = beats(5)
    del heartbeats["SENSOR"]
    verdict = assess_daemon(REQUIRED, heartbeats, NOW)
    assert (verdict.status, verdict.message) == (
        Status.FAIL,
        "no heartbeat from SENSOR: start the full dagster-daemon",
    )


def test_an_alive_daemon_reporting_errors_is_a_warning_quoting_the_first() -> None:
    verdict = assess_daemon(REQUIRED, beats(3, ("Could not load sensor\nTraceback ...",)), NOW)
    assert verdict.status is Status.WARN
    assert verdict.message.endswith("reports errors: Could not load sensor")


def test_an_ephemeral_instance_has_no_daemon_to_ask() -> None:
    assert assess_daemon([], {}, NOW).status is Status.WARN


def test_schema_verdicts() -> None:
    expected = {"plans": {"id", "count"}, "approvals": {"id"}}
    assert assess_ledger_schema(expected, {}, "db").status is Status.WARN
    assert assess_ledger_schema(expected, {"plans": {"id", "count"}}, "db").status is Status.WARN
    outdated = assess_ledger_schema(expected, {"plans": {"id"}, "approvals": {"id"}}, "db")
    assert outdated.status is Status.FAIL and "plans lacks count" in outdated.message
    assert assess_ledger_schema(expected, {"plans": {"id", "count"}, "approvals": {"id"}}, "db").status is (
        Status.OK
    )


def test_redaction_hides_every_secret_longest_first_and_leaves_short_values() -> None:
    text = "token abcdef1234 and abcdef and pw"
    assert redact(text, ["abcdef", "abcdef1234", "pw"]) == "token [REDACTED] and [REDACTED] and pw"
