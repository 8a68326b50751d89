"""The voice agent's external reply hook, against a stub HTTP endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from real import reply


class _Stub(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict]] = []
    answer: ClassVar[bytes] = b""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.seen.append({"body": body, "auth": self.headers.get("Authorization")})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(_Stub.answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Stub.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_port}/reply"
    finally:
        server.shutdown()
        server.server_close()


def test_posts_the_transcript_and_speaks_the_reply(stub: str, monkeypatch) -> None:
    monkeypatch.setenv(reply.KEY_ENV, "sk-test-secret")
    _Stub.answer = json.dumps({"reply": "Your order ships today."}).encode()
    assert reply.http_reply(stub, "where is my order", "abc@127.0.0.1", 3) == (
        "Your order ships today.")
    assert _Stub.seen == [{"body": {"text": "where is my order", "call_id": "abc@127.0.0.1",
                                    "turn": 3}, "auth": "Bearer sk-test-secret"}]


def test_no_key_no_authorization_header(stub: str, monkeypatch) -> None:
    monkeypatch.delenv(reply.KEY_ENV, raising=False)
    _Stub.answer = b'{"reply": "ok"}'
    reply.http_reply(stub, "hi", "c", 0)
    assert _Stub.seen[0]["auth"] is None


def test_a_bad_answer_is_an_error_that_does_not_carry_the_key(stub: str, monkeypatch) -> None:
    monkeypatch.setenv(reply.KEY_ENV, "sk-test-secret")
    _Stub.answer = b'{"text": "no reply field"}'
    with pytest.raises(ValueError) as err:
        reply.http_reply(stub, "hi", "c", 0)
    assert "sk-test-secret" not in str(err.value)


def test_endpoint_only_from_an_http_url(monkeypatch) -> None:
    monkeypatch.setenv(reply.URL_ENV, "ftp://example.invalid/x")
    assert reply.endpoint_url() is None
    monkeypatch.setenv(reply.URL_ENV, "http://127.0.0.1:9/reply")
    assert reply.endpoint_url() == "http://127.0.0.1:9/reply"


def test_rule_reply_by_keyword() -> None:
    assert "order" in reply.rule_reply("I want to check my ORDER status").lower()
    assert reply.rule_reply("qwerty") == reply.FALLBACK
