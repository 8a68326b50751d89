"""The agent's "LLM" stage: a rule-based reply, with the provider's latency emulated.

A voice agent's language model turns the transcript into a reply; what matters to
a telephony load test is *when* the first token comes back, not what it says. So
by default the reply is rule-based (the first keyword rule that matches the
transcript picks a canned sentence) and the stage sleeps the drawn
``deployment.ai.llm.ttft_ms`` (time to first token) before handing the text to
TTS: a known, settable reply delay on top of the real STT and TTS work.

External endpoint hook
----------------------
Set ``SIPLAB_AGENT_LLM_URL`` (``http://`` or ``https://``) and the stage POSTs
``{"text": transcript, "call_id": SIP Call-ID, "turn": n}`` as JSON, with
``Authorization: Bearer $SIPLAB_AGENT_LLM_KEY`` when that variable is set (the key
is never logged), and speaks the ``"reply"`` string of the JSON answer. The
emulated ``ttft_ms`` is then *not* slept: the endpoint's own latency is the
stage's time. On an error or after :data:`HTTP_TIMEOUT_S` (``SIPLAB_AGENT_LLM_TIMEOUT_S``
sets another) the rule-based reply is still spoken, but the turn counts as failed:
:func:`error_cause` names why (``http_401``, ``http_503``, ``timeout``, ``bad_json``,
``connect_error``), the agent logs it with the turn, and the run counts it
(``turns.cause`` = ``llm.<cause>``, ``summary.json`` ``ai.llm.errors``).

The key is a secret: only the voice agents, which call the endpoint, get it in their
environment (:mod:`real.credentials`), and each takes it out of its environment at once
(:func:`take_key`), so nothing it runs inherits it.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence

URL_ENV = "SIPLAB_AGENT_LLM_URL"
KEY_ENV = "SIPLAB_AGENT_LLM_KEY"
TIMEOUT_ENV = "SIPLAB_AGENT_LLM_TIMEOUT_S"
HTTP_TIMEOUT_S = 10.0


class EndpointError(ValueError):
    """The external endpoint gave no usable reply; ``cause`` says why (``http_503``, ...)."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause

RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("order", "delivery", "shipping", "status"),
     "Your order has shipped and should arrive on Tuesday."),
    (("bill", "billing", "payment", "pay", "refund"),
     "Your last payment was received, and your balance is zero."),
    (("account", "password", "reset", "address", "change"),
     "I can help with your account. I have sent you a secure link."),
    (("cancel",), "I am sorry to see you go. Your request to cancel is noted."),
    (("agent", "human", "person", "representative", "speak", "talk"),
     "Let me connect you to one of our agents."),
    (("hello", "hi", "hey"), "Hello, how can I help you today?"),
    (("thanks", "thank"), "You are welcome. Is there anything else?"),
)
FALLBACK = "Sorry, I did not catch that. Could you say it again?"


def keywords(text: str, rules: Sequence[tuple[tuple[str, ...], str]] = RULES) -> list[str]:
    """The rule keywords present in ``text``, in rule order."""
    words = set(text.lower().split())
    return [k for keys, _ in rules for k in keys if k in words]


def rule_reply(text: str, rules: Sequence[tuple[tuple[str, ...], str]] = RULES) -> str:
    """The reply of the first rule with a keyword in ``text``, else :data:`FALLBACK`."""
    words = set(text.lower().split())
    for keys, reply in rules:
        if words.intersection(keys):
            return reply
    return FALLBACK


def endpoint_url() -> str | None:
    """The external reply endpoint, if configured."""
    url = os.environ.get(URL_ENV, "").strip()
    return url if url.startswith(("http://", "https://")) else None


_key: str | None = None  # the key, once taken out of the environment (take_key)


def take_key() -> None:
    """Move the endpoint's key from the environment into this process's memory, so
    the programs this process runs (eSpeak NG, ...) do not inherit it."""
    global _key
    key = os.environ.pop(KEY_ENV, None)
    if key:
        _key = key


def timeout_s() -> float:
    """The endpoint's timeout: ``SIPLAB_AGENT_LLM_TIMEOUT_S`` if a number > 0, else
    :data:`HTTP_TIMEOUT_S`."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV, ""))
    except ValueError:
        return HTTP_TIMEOUT_S
    return value if value > 0 else HTTP_TIMEOUT_S


def error_cause(exc: BaseException) -> str:
    """The short cause of a failed endpoint request: ``http_<status>``, ``timeout``,
    ``bad_json`` (no JSON object with a ``"reply"`` string) or ``connect_error``."""
    if isinstance(exc, EndpointError):
        return exc.cause
    if isinstance(exc, urllib.error.HTTPError):
        return f"http_{exc.code}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ValueError):  # json.JSONDecodeError, a body that is not UTF-8
        return "bad_json"
    return "connect_error"


def http_reply(url: str, text: str, call_id: str, turn: int,
               timeout: float | None = None) -> str:
    """Ask the external endpoint for the reply text.

    Raises
    ------
    OSError, ValueError
        On a network error, an HTTP error status, a timeout, or an answer that is not
        JSON with a ``"reply"`` string (:func:`error_cause` names which).
    """
    body = json.dumps({"text": text, "call_id": call_id, "turn": turn}).encode()
    headers = {"Content-Type": "application/json"}
    key = _key or os.environ.get(KEY_ENV)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout or timeout_s()) as resp:
        raw = resp.read()
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        raise EndpointError("bad_json", f"answer is not JSON ({exc})") from None
    reply = answer.get("reply") if isinstance(answer, dict) else None
    if not isinstance(reply, str) or not reply.strip():
        raise EndpointError("bad_json", "endpoint answer has no 'reply' string")
    return reply
