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
stage's time. On an error or after :data:`HTTP_TIMEOUT_S` the rule-based reply is
used and the error is logged with the turn.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Sequence

URL_ENV = "SIPLAB_AGENT_LLM_URL"
KEY_ENV = "SIPLAB_AGENT_LLM_KEY"
HTTP_TIMEOUT_S = 10.0

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


def http_reply(url: str, text: str, call_id: str, turn: int,
               timeout_s: float = HTTP_TIMEOUT_S) -> str:
    """Ask the external endpoint for the reply text.

    Raises
    ------
    OSError, ValueError
        On a network error or an answer without a ``"reply"`` string.
    """
    body = json.dumps({"text": text, "call_id": call_id, "turn": turn}).encode()
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(KEY_ENV)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        answer = json.loads(resp.read())
    reply = answer.get("reply") if isinstance(answer, dict) else None
    if not isinstance(reply, str) or not reply.strip():
        raise ValueError("endpoint answer has no 'reply' string")
    return reply
