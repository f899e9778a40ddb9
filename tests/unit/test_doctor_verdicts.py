"""The doctor's verdicts on what it read: pure functions of heartbeats, schemas and secrets."""

from __future__ import annotations

from nthlayer_pipelines.doctor import Heartbeat, Status, assess_daemon, assess_ledger_schema, redact
from nthlayer_pipelines.resources.ledger.migrate import Revision

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
    both = {"plans": {"id", "count"}, "approvals": {"id"}}
    head = Revision(current="0003", head="0003")
    assert assess_ledger_schema(expected, {}, "db", None).status is Status.WARN
    assert assess_ledger_schema(expected, {}, "db", Revision(current=None, head="0003")).status is Status.WARN
    behind = assess_ledger_schema(expected, both, "db", Revision(current="0001", head="0003"))
    assert behind.status is Status.FAIL and "nthlayer db upgrade" in behind.message
    edited = assess_ledger_schema(expected, {"plans": {"id"}, "approvals": {"id"}}, "db", head)
    assert edited.status is Status.FAIL and "plans lacks count" in edited.message
    dropped = assess_ledger_schema(expected, {"plans": {"id", "count"}}, "db", head)
    assert dropped.status is Status.FAIL and "approvals is missing" in dropped.message
    fine = assess_ledger_schema(expected, both, "db", head)
    assert fine.status is Status.OK and "revision 0003" in fine.message


def test_redaction_hides_every_secret_longest_first_and_leaves_short_values() -> None:
    text = "token abcdef1234 and abcdef and pw"
    assert redact(text, ["abcdef", "abcdef1234", "pw"]) == "token [REDACTED] and [REDACTED] and pw"
