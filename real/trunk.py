"""The trunk at the real SIP edge: channels and calls-per-second, enforced by Kamailio.

The real counterpart of :mod:`twin.trunk`. A carrier's trunk admits at most
``trunk.channels`` concurrent calls and ``trunk.cps_limit`` new calls per second;
the proxy (:mod:`real.proxy`) enforces both in ``route[TRUNK]`` of its config
(``real/templates/kamailio.cfg``), under one lock so that several proxy workers
never admit one call too many:

- **channels** -- concurrent dialogs, counted in the dialog-module profile
  ``trunk`` from the admitted INVITE to its BYE; an INVITE beyond the cap is refused
  ``503 Channels Exhausted`` (RFC 3261 section 21.5.4: the service is unavailable,
  here because the trunk is full -- the Erlang-B blocking event);
- **cps_limit** -- admitted attempts per fixed time window, counted in an
  ``htable`` keyed by the window number; beyond it ``503 CPS Limit``. A fractional
  limit uses the shortest window (up to 60 s) holding a whole number of calls
  (:func:`cps_window`: 0.5 cps is 1 call per 2 s window).

Each refusal also carries ``X-Siplab-Rejected-By: trunk.channels`` (or
``trunk.cps_limit``), so the caller names the limit without parsing phrases;
:func:`refused_by` also accepts the reason phrase alone, as a carrier's edge sends it.
"""

from __future__ import annotations

from lab.spec import Trunk

CHANNELS = "trunk.channels"
CPS_LIMIT = "trunk.cps_limit"
REASONS = {"channels exhausted": CHANNELS, "cps limit": CPS_LIMIT}  # 503 reason phrases


def cps_window(cps_limit: float) -> tuple[int, int]:
    """``(window_s, calls_per_window)`` of a fixed-window counter for ``cps_limit``.

    The shortest window of 1..60 s in which ``cps_limit`` admits a whole number of
    calls; failing that 1 s and the rounded rate (at least 1).
    """
    for window_s in range(1, 61):
        calls = cps_limit * window_s
        if calls >= 1 and abs(calls - round(calls)) < 1e-6:
            return window_s, round(calls)
    return 1, max(1, round(cps_limit))


def defines(trunk: Trunk) -> list[str]:
    """The Kamailio ``#!define`` lines that configure ``route[TRUNK]`` for ``trunk``."""
    out = [f"#!define CHANNELS {trunk.channels}"]
    if trunk.cps_limit is not None:
        window_s, per_window = cps_window(trunk.cps_limit)
        out += ["#!define WITH_CPS", f"#!define CPS_WINDOW_S {window_s}",
                f"#!define CPS_PER_WINDOW {per_window}"]
    return out


def refused_by(reason: str, rejected_by: str | None) -> str | None:
    """The trunk limit that refused a call (``trunk.channels``/``trunk.cps_limit``),
    from the proxy's tag or else the 503's reason phrase; None for anything else."""
    return rejected_by or REASONS.get(reason.strip().lower())
