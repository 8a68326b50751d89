"""The agent's text to speech: its replies and IVR menu prompts, as telephone audio.

Synthesis is eSpeak NG's (:mod:`lab.speech`, shared with the caller's prompts):
fast, offline and deterministic. A reply or prompt is then fitted to its planned
length (``agent_speech_s``, or a DTMF step's ``prompt_s``, carried in the
``X-Siplab-Plan`` header, :mod:`real.plan_header`) so the real agent speaks as long
as the twin's, and handed to the call's playout as PCM16 8 kHz bytes.
"""

from __future__ import annotations

import numpy as np

from lab.speech import espeak_binary, fit, synthesize_pcm

__all__ = ["espeak_binary", "prompt_pcm", "reply_pcm"]


def reply_pcm(text: str, seconds: float | None) -> bytes:
    """The spoken ``text`` fitted to ``seconds`` (natural length if None), PCM16 bytes."""
    return np.asarray(fit(synthesize_pcm(text), seconds), dtype="<i2").tobytes()


def prompt_pcm(digits: str, prompt_s: float | None) -> bytes:
    """The IVR menu prompt for ``digits``, fitted to ``prompt_s`` (natural length if None)."""
    spoken = " ".join(digits.replace("*", " star ").replace("#", " pound ").split())
    return reply_pcm(f"You pressed {spoken}. Please hold while I look that up.", prompt_s)
