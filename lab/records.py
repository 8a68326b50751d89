"""The records every backend writes: one flat record per call attempt, AI turn and feature step.

As in Ciw's data record, each record is one flat row, declared once here: the twin
fills them from its event loop, the real backend from measured SIP messages and RTP
statistics, and analysis reads them without knowing which backend wrote them. The
Arrow schemas of ``calls.parquet``, ``turns.parquet`` and ``steps.parquet`` are derived
from these declarations (field order = column order, ``Int32`` = a 32-bit column), so a
column added here appears in both backends' tables with the same name, place and type.

Times are seconds of the run's clock (``_s``) or milliseconds (``_ms``); a quantity a
backend could not observe is NaN (floats) or None (strings).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union

import pyarrow as pa

__all__ = [
    "CALL_COLUMNS", "CALL_SCHEMA", "LLM_CAUSE", "NO_REPLY", "OUTCOMES", "STEP_COLUMNS",
    "STEP_SCHEMA", "TIMESERIES_BASE", "TURN_COLUMNS", "TURN_SCHEMA", "CallRecord", "Int32",
    "StepRecord", "TurnRecord", "arrow_schema", "columns",
]

#: An integer stored as a 32-bit Arrow column (counts, codes, indices).
Int32 = Annotated[int, pa.int32()]

#: How a call attempt ended: 2xx; 503 for want of a trunk channel (the Erlang-B event);
#: refused by another layer (CPS cap, proxy backlog, media capacity, security); no
#: final answer or any other failure (408 on Timer B, a component that died, ...).
OUTCOMES = ("answered", "blocked", "failed", "rejected")

#: A turn's ``cause`` when its LLM request failed is this prefix and the request's cause
#: (``llm.http_401``, ``llm.http_503``, ``llm.timeout``, ``llm.bad_json``, ...).
LLM_CAUSE = "llm."
#: A turn's ``cause`` when the caller heard no reply.
NO_REPLY = "no_reply"


@dataclass(slots=True)
class CallRecord:
    """One call attempt: the INVITE that opens it to the response or BYE that ends it."""

    call_id: int  # the plan's call number, from 0 in start order
    replication: Int32
    scenario: str
    source_ip: str
    start_s: float  # planned (and actual) INVITE time
    outcome: str  # one of OUTCOMES
    final_code: Int32  # final SIP status of the INVITE (0: none ever came)
    rejected_by: str | None  # the refusing layer: trunk.channels, trunk.cps_limit, proxy, ...
    setup_ms: float  # INVITE sent -> 200 OK at the caller
    pdd_ms: float  # post-dial delay: INVITE sent -> first 18x
    invite_tx: Int32  # INVITE transmissions, Timer A retransmissions included
    duration_s: float  # 200 OK -> BYE sent (talk time)
    turns: Int32  # AI turns planned
    mos: float  # E-model MOS of the caller's ear
    cost_usd: float
    end_s: float  # the caller's last transaction ended
    admit_s: float  # the trunk took a channel (NaN: never, or not observable)
    release_s: float  # the trunk freed it
    rtp_loss: float  # packet loss the caller's ear saw (network + late), fraction
    mouth_to_ear_ms: float  # one-way delay of the caller's ear, for the E-model


@dataclass(slots=True)
class TurnRecord:
    """One AI conversation turn: the caller stops speaking -> the agent's reply is heard."""

    call_id: int
    replication: Int32
    turn: Int32  # position in the call's script
    voice_to_voice_ms: float  # caller stops speaking -> first agent audio at the caller
    vad_ms: float  # endpointing: silence the VAD waits for
    stt_ms: float  # final transcript, after any wait for a slot
    llm_ms: float  # time to first token
    tts_ms: float  # time to first audio byte
    network_ms: float  # media path both ways (packetisation, network, jitter buffer)
    queue_ms: float  # waits for provider slots and 429 backoff, all stages
    start_s: float  # when the caller stopped speaking
    stt_wait_ms: float
    llm_wait_ms: float
    tts_wait_ms: float
    caller_speech_s: float  # planned utterance
    agent_speech_s: float  # planned reply, as played
    llm_tokens: float
    retries: Int32  # requests refused with 429 and retried
    failed: bool  # a stage gave up or its request failed (canned fallback), or no reply
    barge_in: bool  # the caller talked over the reply
    cause: str  # why it failed ("" when fine): ``llm.http_401``, ``llm.timeout``, ...


@dataclass(slots=True)
class StepRecord:
    """One call-feature step: DTMF, MESSAGE, hold/resume or blind transfer."""

    call_id: int
    replication: Int32
    step: int  # position in the call's script
    kind: str  # dtmf, message, on_hold, transfer
    start_s: float
    duration_ms: float  # until the step's answer (prompt heard, 200 OK, NOTIFY 200)
    ok: bool


#: Per-second series: these columns, then one ``<layer>_utilization`` column per layer.
TIMESERIES_BASE = ("t_s", "replication", "active_calls", "arrivals", "blocked", "rejected")

_ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}


def _arrow_type(hint: Any) -> pa.DataType:
    if typing.get_origin(hint) is Annotated:
        _base, *extra = typing.get_args(hint)
        return next(x for x in extra if isinstance(x, pa.DataType))
    if typing.get_origin(hint) in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _arrow_type(inner)
    return _ARROW[hint]


def arrow_schema(record: type) -> pa.Schema:
    """The Arrow schema of a record type: its fields, in order, with their types."""
    hints = typing.get_type_hints(record, include_extras=True,
                                  globalns=vars(sys.modules[record.__module__]))
    return pa.schema([(f.name, _arrow_type(hints[f.name])) for f in dataclasses.fields(record)])


def columns(record: type, without: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The column names of a record type, in order (less ``without``)."""
    return tuple(f.name for f in dataclasses.fields(record) if f.name not in without)


CALL_SCHEMA = arrow_schema(CallRecord)
TURN_SCHEMA = arrow_schema(TurnRecord)
STEP_SCHEMA = arrow_schema(StepRecord)
CALL_COLUMNS = columns(CallRecord)
TURN_COLUMNS = columns(TurnRecord)
STEP_COLUMNS = columns(StepRecord)
