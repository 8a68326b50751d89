"""The caller's conversation: speak a prompt, time the agent's reply by ear.

Voice-to-voice latency is what a caller experiences: from the end of its own
speech to the first audible frame of the agent's reply. The caller knows when its
speech ends (the prompt's planned speech length after the player started; the
prompt's trailing silence follows, which is what lets the agent's endpointer
declare the end of speech) and hears the reply through its tap
(:class:`loadgen.callers.media.Tap`), so both ends of the interval are stamped in
the caller process, on ``time.monotonic()``, after the whole media path (RTP
packetisation, the impairment emulator, the caller's jitter buffer).

The reply is over after :data:`REPLY_END_SILENCE_S` of silence, or at its planned
length plus :data:`REPLY_SLACK_S`; a reply that never starts within
:data:`~loadgen.callers.script.REPLY_TIMEOUT_S` leaves the turn with no onset (the
coordinator reports it as failed). The agent's side of the same turn -- where the
time went: VAD, STT, LLM, TTS, queueing -- is joined later (:mod:`real.ai`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from loadgen.callers.script import REPLY_TIMEOUT_S, Wait, at, until

if TYPE_CHECKING:
    from loadgen.callers.call import UacCall

REPLY_END_SILENCE_S = 0.6  # silence that ends the agent's reply
REPLY_SLACK_S = 3.0  # a reply may run this much beyond its planned length


def turn(call: UacCall, index: int, step: list[Any]) -> Iterator[Wait]:
    """``["turn", caller_ms, agent_ms, wav, speech_ms]``: speak, time the reply, wait its end.

    Appends the turn to ``call.turns``: ``turn``, ``t_speech_end``, ``t_onset``,
    ``voice_to_voice_ms``, ``caller_speech_s``, ``agent_speech_s``, ``t_reply_end``.
    """
    caller_ms, agent_ms, wav, speech_ms = step[1], step[2], step[3], step[4]
    player = call.media.play(wav)
    t0 = time.monotonic()
    speech_end = t0 + speech_ms / 1000.0
    yield at(speech_end)
    tap = call.media.tap
    onset: float | None = None
    limit = speech_end + REPLY_TIMEOUT_S
    if tap is not None:
        yield until(limit, lambda: tap.onset(speech_end) is not None)
        onset = tap.onset(speech_end)
    if onset is not None and tap is not None:
        cap = onset + agent_ms / 1000.0 + REPLY_SLACK_S
        yield until(cap, lambda: tap.quiet_since(onset) >= REPLY_END_SILENCE_S)
    call.media.stop(player)
    call.turns.append({
        "turn": index, "t_speech_end": speech_end, "t_onset": onset,
        "voice_to_voice_ms": (onset - speech_end) * 1e3 if onset else None,
        "caller_speech_s": caller_ms / 1000.0, "agent_speech_s": agent_ms / 1000.0,
        "t_reply_end": time.monotonic() - REPLY_END_SILENCE_S if onset else None,
    })
