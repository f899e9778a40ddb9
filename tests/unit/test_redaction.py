"""The shared HTTP layer's redactor: every form a header gives a secret, in text, bytes, answers, failures
and log lines; a secret inside another; and values too short to be secrets."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import quote, quote_plus

import httpx
import pytest

from nthlayer_pipelines.resources.http.client import (
    REDACTED,
    RedactingLogger,
    Redactor,
    RequestFailed,
    RequestStats,
    RetryPolicy,
    basic_auth_secrets,
    send_with_retries,
)

# "+", "/" and "=" change under URL encoding and "/" under some JSON encoders; PagerDuty's user API keys
# start with "u+".
TOKEN = "u+Ab/cd=Ef-7h3x9q2w"
USER, PASSWORD = "grafana-admin", "pa/ss+w0rd=9"


def encodings(text: str) -> dict[str, str]:
    """`text` as a header value can travel: raw, URL-encoded (either hex case, path/query/form style),
    JSON-escaped (with and without `/` escaped, with and without non-ASCII escaped)."""
    url = quote(text, safe="")
    return {
        "raw": text,
        "url": url,
        "url, lowercase hex": "%".join(
            [url.split("%")[0], *(p[:2].lower() + p[2:] for p in url.split("%")[1:])]
        ),
        "url, path style": quote(text),
        "form": quote_plus(text, safe=""),
        "json": json.dumps(text)[1:-1],
        "json, slashes escaped": json.dumps(text)[1:-1].replace("/", "\\/"),
        "json, unicode kept": json.dumps(text, ensure_ascii=False)[1:-1],
    }


def shown(text: str, *secrets: str) -> list[str]:
    """Each encoding of each secret that `text` still holds."""
    return [
        f"{secret!r} {name}" for secret in secrets for name, form in encodings(secret).items() if form in text
    ]


BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
HEADERS = {
    "PagerDuty": f"Token token={TOKEN}",
    "Cortex, Slack": f"Bearer {TOKEN}",
    "HTTP Basic": f"Basic {BASIC}",
}


@pytest.mark.parametrize("header", list(HEADERS))
@pytest.mark.parametrize("encoding", list(encodings("x")))
def test_every_form_of_every_header_is_redacted(header: str, encoding: str) -> None:
    redactor = Redactor([TOKEN, *basic_auth_secrets(USER, PASSWORD)])
    value = HEADERS[header]
    text = f"refused: Authorization: {encodings(value)[encoding]} (request id 42)"

    redacted = redactor(text)

    assert shown(redacted, TOKEN, BASIC, BASIC.rstrip("="), PASSWORD, value) == [], redacted
    assert REDACTED in redacted
    assert redacted.startswith("refused: Authorization: ") and redacted.endswith(" (request id 42)")


def test_the_header_keeps_its_scheme() -> None:
    redactor = Redactor([TOKEN, *basic_auth_secrets(USER, PASSWORD)])
    text = "; ".join(HEADERS.values())
    assert redactor(text) == f"Token token={REDACTED}; Bearer {REDACTED}; Basic {REDACTED}"


def test_a_basic_credential_without_its_padding_is_redacted() -> None:
    user, password = "ab", "cdefghi"  # base64 of "ab:cdefghi" ends in "=="
    encoded = base64.b64encode(b"ab:cdefghi").decode()
    assert encoded.endswith("=")
    redactor = Redactor(basic_auth_secrets(user, password))
    assert redactor(f"auth={encoded.rstrip('=')}&x=1") == f"auth={REDACTED}&x=1"
    assert redactor(f"Basic {encoded}") == f"Basic {REDACTED}"


def test_a_non_ascii_secret_is_redacted_escaped_or_not() -> None:
    secret = "pässwörd-1234"
    redactor = Redactor([secret])
    text = json.dumps({"a": secret}) + json.dumps({"b": secret}, ensure_ascii=False) + quote(secret)
    assert shown(redactor(text), secret) == []
    assert redactor(text).count(REDACTED) == 3


def test_a_secret_inside_another_leaves_nothing_of_the_longer_one() -> None:
    short, long = "abcd1234", "tok-abcd1234-wxyz"
    for secrets in ([short, long], [long, short]):
        redactor = Redactor(secrets)
        assert redactor(f"{long} and {short}") == f"{REDACTED} and {REDACTED}"


@pytest.mark.parametrize("secret", ["", "   ", "abc", "\n"])
def test_an_empty_or_short_secret_redacts_nothing(secret: str) -> None:
    text = "PagerDuty GET /users: Authentication failed (HTTP 401, code 2006)"
    assert Redactor([secret])(text) == text
    assert Redactor([secret, TOKEN])(f"{text} {TOKEN}") == f"{text} {REDACTED}"
    assert Redactor()(text) == text


def test_a_secret_with_stray_whitespace_is_redacted_with_and_without_it() -> None:
    redactor = Redactor([f"{TOKEN}\n"])
    assert redactor(f"Bearer {TOKEN}, then Bearer {TOKEN}\n") == f"Bearer {REDACTED}, then Bearer {REDACTED}"


def test_the_redactor_never_shows_the_secrets_it_holds() -> None:
    assert TOKEN not in repr(Redactor([TOKEN]))


def test_an_answer_is_redacted_in_its_body_and_reason_phrase() -> None:
    redactor = Redactor([TOKEN])
    body = json.dumps({"error": {"message": f"Bearer {TOKEN}", "errors": [f"Authorization: {TOKEN}"]}})
    request = httpx.Request("GET", "https://api.example.com/users")
    answer = httpx.Response(
        400,
        content=body.encode(),
        headers={"content-type": "application/json", "x-request-id": "r1"},
        request=request,
        extensions={"reason_phrase": f"Bad token {TOKEN}".encode()},
    )

    redacted = redactor.response(answer)

    assert redacted.status_code == 400 and redacted.request is request
    assert redacted.json() == {
        "error": {"message": f"Bearer {REDACTED}", "errors": [f"Authorization: {REDACTED}"]}
    }
    assert redacted.reason_phrase == f"Bad token {REDACTED}"
    assert redacted.headers["x-request-id"] == "r1"
    assert redacted.headers["content-length"] == str(len(redacted.content))
    clean = httpx.Response(200, json={"users": []}, request=request)
    assert redactor.response(clean) is clean


def test_bytes_are_redacted_in_their_utf8_form() -> None:
    redactor = Redactor(["pässwörd-1234"])
    assert redactor.content("x pässwörd-1234 y".encode()) == f"x {REDACTED} y".encode()


def test_a_log_line_is_redacted_after_its_arguments_are_filled_in(caplog: pytest.LogCaptureFixture) -> None:
    log = RedactingLogger(logging.getLogger("tests.redaction"), Redactor([TOKEN]))
    with caplog.at_level(logging.DEBUG, logger="tests.redaction"):
        log.warning("answer: %s (%d)", f"Bearer {TOKEN}", 400)
        log.debug(f"body {quote(TOKEN, safe='')}")
    assert [r.getMessage() for r in caplog.records] == [
        f"answer: Bearer {REDACTED} (400)",
        f"body {REDACTED}",
    ]
    assert log.level == logging.getLogger("tests.redaction").level


# ---- the retry loop hands back only redacted text ----------------------------------------------------


def test_the_retry_loop_returns_the_answer_redacted_and_logs_no_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = httpx.Request("GET", f"https://hooks.example.com/notify?token={TOKEN}")
    answers = [
        httpx.Response(503, text="busy", request=request),
        httpx.Response(400, text=f"refused token {TOKEN}", request=request),
    ]
    with caplog.at_level(logging.WARNING, logger="tests.redaction"):
        response, attempts = send_with_retries(
            lambda: answers.pop(0),
            method="GET",
            path=f"/notify?token={TOKEN}",  # a token in a URL reaches the retry's log line
            policy=RetryPolicy(max_attempts=3, backoff_base_seconds=0.0),
            stats=RequestStats(),
            logger=logging.getLogger("tests.redaction"),
            redactor=Redactor([TOKEN]),
            sleep=lambda _: None,
        )
    assert (response.status_code, attempts) == (400, 2)
    assert response.text == f"refused token {REDACTED}"
    assert caplog.records and all(TOKEN not in r.getMessage() for r in caplog.records)


def test_a_failure_without_an_answer_is_redacted_and_does_not_chain_the_raw_error() -> None:
    # h11 quotes a malformed header line in its error: a proxy echoing headers badly puts the token there.
    raw = httpx.RemoteProtocolError(f"illegal header line: bytearray(b'Authorization: Bearer {TOKEN}')")

    def send() -> httpx.Response:
        raise raw

    with pytest.raises(RequestFailed) as caught:
        send_with_retries(
            send,
            method="GET",
            path="/teams",
            policy=RetryPolicy(max_attempts=2, backoff_base_seconds=0.0),
            stats=RequestStats(),
            logger=logging.getLogger("tests.redaction"),
            redactor=Redactor([TOKEN]),
            sleep=lambda _: None,
        )
    failure = caught.value
    assert TOKEN not in str(failure) and TOKEN not in failure.reason
    assert f"Bearer {REDACTED}" in failure.reason and "RemoteProtocolError" in failure.reason
    # Dagster stores an exception's chain; the raw error is kept for its type only, never chained.
    assert failure.__cause__ is None and failure.__suppress_context__
    assert failure.cause is raw
