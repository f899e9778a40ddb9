"""The Slack emulator, through slack_sdk and raw HTTP: ok and not-ok answers, stored messages."""

import httpx
import pytest
from sandbox_seed import SLACK_TOKEN
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from nthlayer_pipelines.sandbox import RunningSandbox, SandboxOrg


def test_post_message_through_slack_sdk_is_stored(sandbox: RunningSandbox, org: SandboxOrg) -> None:
    client = WebClient(token=SLACK_TOKEN, base_url=sandbox.slack_url)
    answer = client.chat_postMessage(channel="#ops-changes", text="Plan 42 applied").data
    channel_id = org.slack.resolve("ops-changes")
    assert answer["ok"] is True
    assert answer["channel"] == channel_id
    assert answer["message"]["text"] == "Plan 42 applied"
    assert answer["message"]["ts"] == answer["ts"]
    assert [(m.channel, m.text, m.ts) for m in org.slack.messages] == [
        (channel_id, "Plan 42 applied", answer["ts"])
    ]


def test_post_message_accepts_a_form_body_with_the_token_in_it(
    sandbox: RunningSandbox, org: SandboxOrg
) -> None:
    channel_id = org.slack.resolve("ops-changes")
    response = httpx.post(
        sandbox.slack_url + "chat.postMessage",
        data={"token": SLACK_TOKEN, "channel": channel_id, "text": "by form"},
    )
    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert [m.text for m in org.slack.messages] == ["by form"]


def test_message_timestamps_are_unique_and_increasing(sandbox: RunningSandbox) -> None:
    client = WebClient(token=SLACK_TOKEN, base_url=sandbox.slack_url)
    stamps = [client.chat_postMessage(channel="ops-changes", text=str(i))["ts"] for i in range(5)]
    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 5


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(
    ("token", "arguments", "error"),
    [
        ("xoxb-wrong", {"channel": "ops-changes", "text": "x"}, "invalid_auth"),
        (SLACK_TOKEN, {"channel": "no-such-channel", "text": "x"}, "channel_not_found"),
        (SLACK_TOKEN, {"channel": "ops-changes"}, "no_text"),
    ],
)
def test_failures_are_http_200_with_ok_false(
    sandbox: RunningSandbox, org: SandboxOrg, token: str, arguments: dict, error: str
) -> None:
    with pytest.raises(SlackApiError) as failed:
        WebClient(token=token, base_url=sandbox.slack_url).chat_postMessage(**arguments)
    assert failed.value.response.status_code == 200
    assert failed.value.response.data == {"ok": False, "error": error}
    assert org.slack.messages == []


def test_no_token_at_all_is_not_authed(sandbox: RunningSandbox) -> None:
    response = httpx.post(
        sandbox.slack_url + "chat.postMessage", json={"channel": "ops-changes", "text": "x"}
    )
    assert response.json() == {"ok": False, "error": "not_authed"}


def test_auth_test_identifies_the_bot(sandbox: RunningSandbox) -> None:
    answer = WebClient(token=SLACK_TOKEN, base_url=sandbox.slack_url).auth_test().data
    assert answer["ok"] is True
    assert (answer["user_id"], answer["bot_id"], answer["team_id"]) == (
        "U0SANDBOX1",
        "B0SANDBOX1",
        "T0SANDBOX1",
    )
