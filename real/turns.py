"""AI turns of a real run: the caller's ear joined to the agent's clock, as turns.parquet rows.

Voice-to-voice latency is what the caller hears: from the end of its own speech
to the first audible frame of the agent's reply, both stamped by the caller
process (:mod:`real.uac_worker`). The agent (:mod:`real.voice_agent`) logs, per
turn, where its share of that time went -- ``vad_ms`` (the endpointer's hangover:
silence it waits for before it declares the end of speech), ``stt_ms``,
``llm_ms``, ``tts_ms`` and ``queue_ms`` (waits for provider slots). Both sides
stamp ``time.monotonic()``, one clock for every process of the machine, and
name the turn by the plan's call id (the ``X-Siplab-Plan`` header,
:mod:`real.plan_header`) and its index in the call, so the join needs no
translation. Whatever the agent's stages do not explain is ``network_ms``:
the media path both ways (RTP packetisation, the impairment relay, the
caller's jitter buffer) and the VAD's own detection lag -- the twin's
``network_ms`` plus what a real endpointer adds.

A turn the agent never answered (no reply heard, or no agent record) keeps its
row, with NaN parts, and ``failed = True`` when no reply was heard.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from real.agent_pool import read_records

PARTS = ("vad_ms", "stt_ms", "llm_ms", "tts_ms", "queue_ms")
WAITS = ("stt_wait_ms", "llm_wait_ms", "tts_wait_ms")
AgentTurns = dict[tuple[int, int], dict[str, Any]]


def agent_turns(workdir: Path) -> AgentTurns:
    """The voice agents' turn records (``agent<k>.jsonl``, ``ev: "turn"``) of a run,
    keyed by (plan call id, turn index)."""
    out: AgentTurns = {}
    for path in sorted(Path(workdir).glob("agent*.jsonl")):
        for rec in read_records(path, "turn"):
            if rec.get("call") is not None and rec.get("turn") is not None:
                out[(int(rec["call"]), int(rec["turn"]))] = rec
    return out


def _num(value: Any) -> float:
    return float(value) if value is not None else math.nan


def turn_row(caller: dict[str, Any], agent: dict[str, Any] | None, run_start: float
             ) -> dict[str, Any]:
    """One turns.parquet row from the caller's turn and the agent's record of it.

    Parameters
    ----------
    caller
        The caller's turn: ``call_id``, ``turn``, ``t_speech_end``,
        ``voice_to_voice_ms`` (None when no reply was heard), ``caller_speech_s``,
        ``agent_speech_s``.
    agent
        The agent's ``turn`` record, or None.
    run_start
        ``time.monotonic()`` of the run's time 0.
    """
    a = agent or {}
    v2v = _num(caller.get("voice_to_voice_ms"))
    parts = {k: _num(a.get(k)) for k in PARTS}
    network = v2v - sum(parts.values())  # NaN unless every part is known
    return {
        "call_id": int(caller["call_id"]), "turn": int(caller["turn"]),
        "start_s": float(caller["t_speech_end"]) - run_start,
        "voice_to_voice_ms": v2v, **parts, "network_ms": network,
        **{k: _num(a.get(k)) for k in WAITS},
        "caller_speech_s": float(caller["caller_speech_s"]),
        "agent_speech_s": float(caller["agent_speech_s"]),
        "llm_tokens": _num(a.get("llm_tokens")),
        "retries": 0, "failed": math.isnan(v2v), "barge_in": False,
    }


def turn_rows(caller_turns: list[dict[str, Any]], workdir: Path, run_start: float
              ) -> list[dict[str, Any]]:
    """Every caller turn joined to the agent's record of it (by plan call id, turn)."""
    agent = agent_turns(workdir)
    return [turn_row(t, agent.get((int(t["call_id"]), int(t["turn"]))), run_start)
            for t in caller_turns]
