"""``X-Siplab-Plan``: the caller tells the agent the call's plan inside the INVITE.

Both backends play the same planned lengths (common random numbers): the caller
side draws every turn's ``caller_speech_s`` *and* ``agent_speech_s`` (see
:mod:`lab.plan`), so the real voice agent must learn how long its replies and IVR
prompts are to be. The caller puts the call's steps into one extension header of
its INVITE (RFC 3261 section 20: unknown ``X-`` headers are passed on unchanged by
proxies and ignored by user agents that do not know them)::

    X-Siplab-Plan: <base64url, unpadded, of the compact JSON below>

    {"v": 1, "call": 17, "steps": [["turn", 2512, 4010], ["dtmf", "12", 3000],
                                   ["msg"], ["hold", 5000], ["xfer", "sip:q@h", 8000],
                                   ["talk", 30000]]}

Times are whole milliseconds. Step kinds, in call order:

=========  ============================  ===========================================
kind       fields                        agent's part
=========  ============================  ===========================================
``turn``   caller_ms, agent_ms           reply padded/truncated to ``agent_ms``
``dtmf``   digits, prompt_ms             after the last digit, a ``prompt_ms`` prompt
``msg``    (none; the text is in the     answer the in-dialog MESSAGE 200
           MESSAGE body)
``hold``   hold_ms                       accept the re-INVITEs, stop/resume playback
``xfer``   target URI, talk_ms           send REFER to the caller once every earlier
                                         step is done; BYE after NOTIFY 200
``talk``   hold_ms                       listen
=========  ============================  ===========================================

A SIP request over UDP should stay below the path MTU (RFC 3261 section 18.1.1:
requests within 200 bytes of the MTU, ~1300 bytes, switch to TCP, which the local
proxy does not listen on), so :func:`encode` keeps the header value within
:data:`MAX_CHARS`: it keeps the leading steps that fit and sets ``"more": true``;
the agent then uses natural lengths for the turns it was not told about.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from lab.plan import CallPlan, Dtmf, Message, OnHold, Step, Talk, Transfer, Turn

HEADER = "X-Siplab-Plan"
VERSION = 1
MAX_CHARS = 600


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000.0))


def step_item(step: Step) -> list[Any]:
    """One plan step as its compact JSON list."""
    if isinstance(step, Turn):
        return ["turn", _ms(step.caller_speech_s), _ms(step.agent_speech_s)]
    if isinstance(step, Dtmf):
        return ["dtmf", step.digits, _ms(step.prompt_s)]
    if isinstance(step, Message):
        return ["msg"]
    if isinstance(step, OnHold):
        return ["hold", _ms(step.hold_s)]
    if isinstance(step, Transfer):
        return ["xfer", step.target, _ms(step.talk_s)]
    if isinstance(step, Talk):
        return ["talk", _ms(step.hold_s)]
    raise TypeError(f"not a plan step: {step!r}")


def _b64(obj: dict[str, Any]) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def encode(plan: CallPlan | Iterable[Step], call_id: int | None = None,
           max_chars: int = MAX_CHARS) -> str:
    """The header *value* for a call plan (or a bare step sequence).

    Parameters
    ----------
    plan
        A :class:`lab.plan.CallPlan` (its ``call_id`` is used) or its steps.
    call_id
        The plan's call id when ``plan`` is a bare step sequence.
    max_chars
        Longest value; trailing steps are dropped (and ``"more": true`` set) to fit.
    """
    if isinstance(plan, CallPlan):
        steps, call_id = list(plan.steps), plan.call_id
    else:
        steps = list(plan)
    return encode_items([step_item(s) for s in steps], call_id, max_chars)


def encode_items(items: list[list[Any]], call_id: int | None = None,
                 max_chars: int = MAX_CHARS) -> str:
    """The header value of already compact step lists (``[["turn", 2512, 4010], ...]``)."""
    items = [list(i) for i in items]
    obj: dict[str, Any] = {"v": VERSION, "steps": items}
    if call_id is not None:
        obj["call"] = int(call_id)
    value = _b64(obj)
    keep = len(items)
    while len(value) > max_chars and keep > 0:
        keep -= 1
        obj = {**obj, "steps": items[:keep], "more": True}
        value = _b64(obj)
    return value


def decode(value: str) -> dict[str, Any]:
    """The plan dict of a header value: ``{"v", "steps", ["call"], ["more"]}``.

    Raises
    ------
    ValueError
        When the value is not base64url JSON of a version this module knows.
    """
    text = value.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{HEADER}: not base64url JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION or not isinstance(
            obj.get("steps"), list):
        raise ValueError(f"{HEADER}: expected version {VERSION} with a step list")
    return obj


def from_message(whole_msg: str) -> dict[str, Any] | None:
    """The decoded plan of a raw SIP message holding the header, else None."""
    prefix = HEADER.lower() + ":"
    for line in whole_msg.split("\r\n\r\n", 1)[0].splitlines():
        if line.lower().startswith(prefix):
            try:
                return decode(line.split(":", 1)[1])
            except ValueError:
                return None
    return None


def turns(plan: dict[str, Any]) -> list[tuple[float, float]]:
    """``[(caller_speech_s, agent_speech_s), ...]`` of the plan's turns, in order."""
    return [(s[1] / 1000.0, s[2] / 1000.0) for s in plan["steps"] if s and s[0] == "turn"]


def prompts(plan: dict[str, Any]) -> list[tuple[str, float]]:
    """``[(digits, prompt_s), ...]`` of the plan's DTMF steps, in order."""
    return [(str(s[1]), s[2] / 1000.0) for s in plan["steps"] if s and s[0] == "dtmf"]


def transfer(plan: dict[str, Any]) -> dict[str, Any] | None:
    """The first transfer: ``{"target", "talk_s", "at_turn", "after_prompts"}`` or None.

    ``at_turn`` is the number of turns before it (the agent sends REFER once that
    many replies have been played), ``after_prompts`` the number of IVR prompts.
    """
    n_turns = n_prompts = 0
    for s in plan["steps"]:
        if s[0] == "turn":
            n_turns += 1
        elif s[0] == "dtmf":
            n_prompts += 1
        elif s[0] == "xfer":
            return {"target": str(s[1]), "talk_s": s[2] / 1000.0, "at_turn": n_turns,
                    "after_prompts": n_prompts}
    return None
