"""Slack's Web API methods the pipeline calls: `chat.postMessage` and `auth.test`.

Slack answers failures with HTTP 200 and `{"ok": false, "error": ...}`; callers must check `ok`.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import Response

from nthlayer_pipelines.sandbox.core import Endpoint, RequestContext, SandboxState, json_response
from nthlayer_pipelines.sandbox.slack.org import SlackOrg


def slack_error(error: str) -> Response:
    return json_response({"ok": False, "error": error})


class SlackApi:
    name = "slack"
    prefix = "/slack"

    def __init__(self, sandbox: SandboxState) -> None:
        self._sandbox = sandbox
        self._org: SlackOrg = sandbox.org.slack

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("POST", "/api/chat.postMessage", self.post_message),
            Endpoint("POST", "/api/auth.test", self.auth_test),
            Endpoint("GET", "/api/auth.test", self.auth_test),
        ]

    def admit(self, ctx: RequestContext) -> Response | None:
        try:
            ctx.arguments = _arguments(ctx)
        except ValueError as error:
            return slack_error(str(error))
        header = ctx.request.headers.get("authorization")
        if header is not None:
            token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        else:
            token = str(ctx.arguments.get("token") or "")
        if not token:
            return slack_error("not_authed")
        if not hmac.compare_digest(token.encode(), self._sandbox.tokens["slack"].encode()):
            return slack_error("invalid_auth")
        return None

    def finish(self, ctx: RequestContext, response: Response) -> None:
        return None

    def not_found(self, ctx: RequestContext) -> Response:
        return json_response({"ok": False, "error": "unknown_method"}, 404)

    def post_message(self, ctx: RequestContext) -> Response:
        args = ctx.arguments
        channel_id = self._org.resolve(str(args.get("channel") or ""))
        if channel_id is None:
            return slack_error("channel_not_found")
        text = args.get("text") or ""
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return slack_error("invalid_blocks_format")
        if not text and not blocks and not args.get("attachments"):
            return slack_error("no_text")
        message = self._org.post(channel_id, str(text), blocks, args.get("thread_ts"))
        rendered: dict[str, Any] = {
            "type": "message",
            "user": SlackOrg.BOT_USER_ID,
            "bot_id": SlackOrg.BOT_ID,
            "team": SlackOrg.TEAM_ID,
            "text": message.text,
            "ts": message.ts,
        }
        if blocks:
            rendered["blocks"] = blocks
        if message.thread_ts:
            rendered["thread_ts"] = message.thread_ts
        return json_response({"ok": True, "channel": channel_id, "ts": message.ts, "message": rendered})

    def auth_test(self, ctx: RequestContext) -> Response:
        return json_response(
            {
                "ok": True,
                "url": "https://sandbox.slack.com/",
                "team": "Sandbox",
                "user": "nthlayer",
                "team_id": SlackOrg.TEAM_ID,
                "user_id": SlackOrg.BOT_USER_ID,
                "bot_id": SlackOrg.BOT_ID,
                "is_enterprise_install": False,
            }
        )


def _arguments(ctx: RequestContext) -> dict[str, Any]:
    """Method arguments from the query and a JSON or form body; raises ValueError with Slack's error name."""
    arguments: dict[str, Any] = dict(ctx.request.query_params)
    if not ctx.body:
        return arguments
    if ctx.request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(ctx.body)
        except ValueError:
            raise ValueError("invalid_json") from None
        if not isinstance(body, dict):
            raise ValueError("json_not_object")
        return arguments | body
    try:
        return arguments | dict(parse_qsl(ctx.body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise ValueError("invalid_form_data") from None
