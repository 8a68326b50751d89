"""The agent's side of the call features: DTMF menus, MESSAGE, hold, blind transfer.

The real counterpart of :mod:`twin.features`; the caller's side is
:mod:`loadgen.callers.features`. What the agent does, per planned step of the
call's ``X-Siplab-Plan`` (:mod:`real.plan_header`):

- **DTMF** (RFC 4733 telephone-events): digits arrive one by one; after the last
  digit of a planned DTMF step the agent speaks a menu prompt of the planned length
  (:meth:`Features.digit`);
- **MESSAGE** (RFC 3428) inside the dialog: pjsua answers ``200 OK``; the agent
  counts and logs it;
- **hold** (RFC 3264 section 8.4): the caller's re-INVITE offers ``a=sendonly``,
  pjsua answers ``recvonly`` and the agent pauses its playback until the re-INVITE
  that resumes (:meth:`Features.media`);
- **blind transfer** (RFC 3515): once every step planned before it is done --
  replies and prompts played, MESSAGEs received, hold cycles resumed
  (:meth:`Features.transfer_due`) -- the agent sends ``REFER`` to the caller and
  hangs up after the NOTIFY that reports the new call's final response (RFC 3515
  section 2.4.5, ``message/sipfrag``). The ``Refer-To`` keeps the planned target's
  user part at the proxy the call came through (:func:`loopback_target`), which
  routes ``human`` to the local transfer target.

Everything here is plain state: the voice agent (:mod:`real.voice_agent`) feeds it
pjsua2's callbacks and performs what it decides.
"""

from __future__ import annotations

import time
from typing import Any

from real import plan_header


class Features:
    """The feature state of one call at the agent, from its plan (None: no plan)."""

    def __init__(self, plan: dict[str, Any] | None) -> None:
        self.plan = plan
        self.prompt_plan = plan_header.prompts(plan) if plan else []
        self.xfer_plan = plan_header.transfer(plan) if plan else None
        self.digits: list[tuple[str, float]] = []  # received, not yet handled
        self.digit_count = 0
        self.held = False
        self.resumes = 0  # hold/resume cycles completed (RFC 3264 re-INVITEs)
        self.messages = 0  # in-dialog MESSAGEs received
        self.refer_sent = False
        self.hangup_at: float | None = None

    def digit(self, digit: str) -> tuple[int, str, float | None] | None:
        """Count ``digit``; the DTMF step it completes, ``(step, digits, prompt_s)``.

        None while the current planned step still waits for digits. Digits beyond the
        plan each complete a step of their own (index: the digit count, natural-length
        prompt).
        """
        self.digit_count += 1
        total = 0
        for k, (ds, p) in enumerate(self.prompt_plan):
            total += len(ds)
            if self.digit_count == total:
                return k, ds, p
            if self.digit_count < total:
                return None
        return self.digit_count, digit, None

    def media(self, held: bool) -> bool:
        """The call's audio is (no longer) held by the far end; True when that changed."""
        if held == self.held:
            return False
        self.held = held
        self.resumes += not held
        return True

    def transfer_due(self, replies_done: int, prompts_done: int, busy: bool,
                     confirmed: bool) -> bool:
        """Whether to send the planned REFER now: once, on a confirmed call, when every
        step planned before it is done."""
        x = self.xfer_plan
        if x is None or self.refer_sent or busy or not confirmed:
            return False
        if replies_done < x["at_turn"] or prompts_done < x["after_prompts"]:
            return False
        # the caller's MESSAGEs and hold/resume cycles planned before the transfer, too
        return not (self.held or self.messages < steps_before(self.plan, "msg", "xfer")
                    or self.resumes < steps_before(self.plan, "hold", "xfer"))

    def transfer_status(self, code: int, final: bool) -> bool:
        """A NOTIFY about the transfer arrived; True when it is the last one (hang up)."""
        if final or code >= 200:
            if self.hangup_at is None:
                self.hangup_at = time.monotonic()
            return True
        return False


def loopback_target(target: str, proxy: str) -> str:
    """The planned transfer ``target`` as the loopback system reaches it: its user part
    at the proxy the call came through (``proxy``, host:port), which routes user
    ``human`` to the transfer target's UAS. Unchanged without a proxy address.

    >>> loopback_target("sip:human@example.com", "127.0.0.1:5060")
    'sip:human@127.0.0.1:5060'
    """
    bare = target.strip().strip("<>")
    if not proxy or "@" not in bare:
        return target
    user = bare.split(":", 1)[1].split("@", 1)[0]
    return f"sip:{user}@{proxy}"


def steps_before(plan: dict[str, Any] | None, kind: str, until: str) -> int:
    """How many ``kind`` steps the plan has before its first ``until`` step."""
    n = 0
    for step in (plan or {}).get("steps", []):
        if step and step[0] == until:
            break
        n += bool(step) and step[0] == kind
    return n
