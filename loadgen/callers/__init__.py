"""The callers: pjsua2 user agent clients that place, script and measure real calls.

Parent side (the coordinator's process): :mod:`loadgen.callers.pool` (the pool of
caller processes) and :mod:`loadgen.callers.jobs` (a plan's steps and spoken
prompts). Caller process (``python -m loadgen.callers.worker``), along the twin's
layers: :mod:`~loadgen.callers.sip` (the message trace per Call-ID),
:mod:`~loadgen.callers.media` (ear, mouth, RTP statistics),
:mod:`~loadgen.callers.turns` (speak, time the reply),
:mod:`~loadgen.callers.features` (DTMF, MESSAGE, hold, transfer),
:mod:`~loadgen.callers.script` (steps as waits) and :mod:`~loadgen.callers.call`
(the ``pj.Call`` tying them together). Only the caller process imports pjsua2.
"""
