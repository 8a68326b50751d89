"""What the coordinator hands a caller for one call: its script and spoken prompts.

A :class:`lab.plan.CallPlan` becomes the caller process's JSON steps
(:func:`job_steps`, times in ms; see :mod:`loadgen.callers.worker`)::

    ["talk", ms]                              wait (the call's talk time)
    ["turn", caller_ms, agent_ms, wav, speech_ms]  speak the prompt, time the reply
    ["dtmf", digits, prompt_ms]               RFC 4733 digits, then the IVR prompt
    ["msg", text]                             RFC 3428 MESSAGE in the dialog
    ["hold", ms]                              RFC 3264 hold, then resume
    ["xfer", target, ms]                      accept the agent's REFER (RFC 3515)

The caller speaks real audio in a turn: a WAV per planned utterance length
(:class:`PromptBook`), so the agent's VAD, STT and endpointing work on speech.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.plan import CallPlan, Dtmf, Message, OnHold, Talk, Transfer, Turn


class PromptBook:
    """The caller's spoken prompts: one WAV per planned utterance length (10 ms steps).

    Speech is espeak-ng's (:func:`lab.speech.caller_speech`), synthesised once per run
    and cut to each length, followed by the trailing silence
    (:data:`lab.speech.TRAILING_SILENCE_S`) the agent's endpointer needs.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._speech: Any = None

    def prompt(self, seconds: float) -> tuple[str, int]:
        """``(wav path, speech ms)`` of an utterance of ``seconds``."""
        import numpy as np

        from lab import speech

        ms = max(10, round(seconds * 100) * 10)
        path = self.directory / f"caller_{ms:06d}ms.wav"
        if not path.exists():
            if self._speech is None:
                self._speech = speech.synthesize_pcm(speech.CALLER_TEXT, 8000)
            pcm = np.concatenate([speech.caller_speech(ms / 1000.0, 8000, self._speech),
                                  speech.silence(speech.TRAILING_SILENCE_S, 8000)])
            self.directory.mkdir(parents=True, exist_ok=True)
            speech.write_wav(path, pcm, 8000)
        return str(path), ms


def job_steps(plan: CallPlan, prompts: PromptBook | None) -> list[list[Any]]:
    """The call's script as the caller's JSON steps (times in ms).

    Without ``prompts`` a turn is a silent wait of its planned length (no speech).
    """
    out: list[list[Any]] = []
    for step in plan.steps:
        if isinstance(step, Talk):
            out.append(["talk", step.hold_s * 1000.0])
        elif isinstance(step, Turn):
            if prompts is None:
                out.append(["talk", (step.caller_speech_s + step.agent_speech_s) * 1000.0])
                continue
            wav, speech_ms = prompts.prompt(step.caller_speech_s)
            out.append(["turn", step.caller_speech_s * 1000.0, step.agent_speech_s * 1000.0,
                        wav, speech_ms])
        elif isinstance(step, Dtmf):
            out.append(["dtmf", step.digits, step.prompt_s * 1000.0])
        elif isinstance(step, Message):
            out.append(["msg", step.text])
        elif isinstance(step, OnHold):
            out.append(["hold", step.hold_s * 1000.0])
        elif isinstance(step, Transfer):
            out.append(["xfer", step.target, step.talk_s * 1000.0])
    return out
