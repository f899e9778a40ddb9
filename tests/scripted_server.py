"""A real HTTP/1.1 server on loopback that answers each request with the next scripted action: the
failures the sandbox does not produce (5xx, bare 429s, timeouts, dropped connections, broken paging)."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int
    body: Any = None  # dict or list: JSON; bytes: sent as they are
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stall:
    """Answer only after `seconds`: longer than the client's timeout, it is a read timeout."""

    seconds: float
    then: Reply = field(default_factory=lambda: Reply(200, {}))


@dataclass
class Drop:
    """Read the request, then close the connection without answering."""


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    """A real HTTP/1.1 server on 127.0.0.1 that answers each request with the next scripted action."""

    def __init__(self, *actions: Reply | Stall | Drop) -> None:
        self.actions = list(actions)
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, seen: Seen) -> Reply | Stall | Drop:
        with self._lock:
            self.requests.append(seen)
            if not self.actions:
                return Reply(500, {"error": {"message": "the script has no answer left"}})
            return self.actions.pop(0)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(self.command, parts.path, parse_qs(parts.query), dict(self.headers), body)
                action = script._next(seen)
                if isinstance(action, Drop):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(action, Stall):
                    time.sleep(action.seconds)
                    action = action.then
                try:
                    self._reply(action)
                except OSError:
                    self.close_connection = True  # the client gave up waiting

            def _reply(self, reply: Reply) -> None:
                body = reply.body
                content = (
                    body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
                )
                self.send_response(reply.status)
                if body is not None and not isinstance(body, bytes):
                    self.send_header("Content-Type", "application/json")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        return Handler


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
