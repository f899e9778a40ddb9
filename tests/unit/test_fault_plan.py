"""The fault plan's choice of which request gets which fault: pure, seeded, shares that add up."""

from collections import Counter

import pytest

from nthlayer_pipelines.sandbox.faults import (
    TRANSIENT_KINDS,
    FaultPlanError,
    parse_plan,
    request_key,
    transient_mix,
    uniform_draw,
)


def tally(plan, provider: str, endpoint: str, requests: int = 20_000) -> Counter:
    method, path = endpoint.split(" ", 1)
    return Counter(
        getattr(plan.choose(provider, endpoint, request_key(method, path, [("n", str(n))]), 0), "label", None)
        for n in range(requests)
    )


def test_the_draw_depends_only_on_seed_request_and_arrival() -> None:
    assert uniform_draw(1, "GET /teams?", 0) == uniform_draw(1, "GET /teams?", 0)
    draws = {
        uniform_draw(1, "GET /teams?", 0),
        uniform_draw(2, "GET /teams?", 0),
        uniform_draw(1, "GET /teams?", 1),
    }
    assert len(draws) == 3
    assert all(0 <= d < 1 for d in draws)
    assert request_key("GET", "/users", [("b", "2"), ("a", "1")]) == request_key(
        "GET", "/users", [("a", "1"), ("b", "2")]
    )


def test_matching_rules_share_the_draw_in_order() -> None:
    plan = parse_plan(
        {
            "seed": 3,
            "rules": [
                {"kind": "status", "status": 500, "rate": 0.1},
                {"kind": "status", "status": 502, "rate": 0.2},
            ],
        }
    )
    counts = tally(plan, "pagerduty", "GET /users")
    assert counts["status_500"] / 20_000 == pytest.approx(0.1, abs=0.01)
    assert counts["status_502"] / 20_000 == pytest.approx(0.2, abs=0.01)


def test_a_rule_matches_its_provider_endpoint_and_the_methods_its_kind_fits() -> None:
    plan = parse_plan(
        {
            "rules": [
                {"kind": "status", "status": 503, "provider": "cortex", "endpoint": "GET /api/v1/teams"},
                {"kind": "truncate", "endpoint": "*"},
                {"kind": "refuse_removal"},
            ]
        }
    )
    label = lambda provider, endpoint: getattr(plan.choose(provider, endpoint, "k", 0), "label", None)  # noqa: E731
    assert label("cortex", "GET /api/v1/teams") == "status_503"
    assert label("pagerduty", "GET /teams") == "truncate"  # truncate fits reads only
    assert label("pagerduty", "PUT /teams/{id}/users/{user_id}") is None
    assert label("pagerduty", "DELETE /teams/{id}/users/{user_id}") == "refuse_removal"
    assert label("slack", "DELETE /x") is None  # the 2001 refusal is PagerDuty's


def test_first_arrivals_spares_the_retries() -> None:
    plan = parse_plan({"rules": [{"kind": "status", "status": 500, "first_arrivals": 2}]})
    assert [plan.choose("pagerduty", "GET /users", "k", n) is not None for n in range(4)] == [
        True,
        True,
        False,
        False,
    ]


def test_the_transient_mix_hits_its_share_of_reads_and_writes_and_lags_the_rest_of_the_writes() -> None:
    plan = transient_mix(0.2, seed=1)
    reads = tally(plan, "pagerduty", "GET /teams/{id}/members")
    writes = tally(plan, "pagerduty", "PUT /teams/{id}/users/{user_id}")
    assert 1 - reads[None] / 20_000 == pytest.approx(0.2, abs=0.01)
    assert "truncate" in reads and "lag" not in reads
    assert (20_000 - writes["lag"]) / 20_000 == pytest.approx(0.2, abs=0.01)
    assert None not in writes and "truncate" not in writes
    assert {label for label in reads if label} >= {
        "status_429_headers_body",
        "status_429_no_headers_no_body",
        "drop",
        "timeout",
        "latency",
    }


def test_a_bad_plan_names_every_problem() -> None:
    with pytest.raises(FaultPlanError) as raised:
        parse_plan(
            {"rules": [{"kind": "status", "status": 404}, {"kind": "lag", "lag_ms": 0, "surprise": 1}]}
        )
    message = str(raised.value)
    assert "rules.0.status" in message and "rules.1.lag_ms" in message and "rules.1.surprise" in message


def test_an_echo_of_the_headers_answers_any_error_status_and_a_status_fault_only_its_own() -> None:
    echo = parse_plan({"rules": [{"kind": "echo_headers", "status": 400, "echo_format": "text"}]}).rules[0]
    assert (echo.status, echo.echo_format, echo.label) == (400, "text", "echo_headers")
    assert echo.matches("slack", "POST /api/chat.postMessage") and echo.matches("cortex", "GET /api/v1/teams")
    assert "echo_headers" not in TRANSIENT_KINDS  # the same answer each time: no retry gets past it
    with pytest.raises(FaultPlanError) as raised:
        parse_plan(
            {
                "rules": [
                    {"kind": "status", "status": 400},
                    {"kind": "echo_headers", "status": 302},
                    {"kind": "echo_headers", "echo_format": "html"},
                ]
            }
        )
    message = str(raised.value)
    assert "rules.0.status" in message and "rules.1.status" in message and "rules.2.echo_format" in message
