"""Erlang teletraffic formulas: how many trunk channels and how many agents.

Telephony background
--------------------
Traffic intensity is measured in **erlangs**: the mean number of calls in progress,
i.e. the call arrival rate times the mean holding (talk) time. One channel busy all
the time carries 1 erlang; 2 calls per second that each last 90 s offer 180 erlangs.

**Erlang B** (A. K. Erlang, 1917; ITU-T E.520/E.521 dimensioning) is the probability
that a call finds all ``N`` channels of a trunk group busy and is *lost* — the SIP
carrier answers ``503``/``486`` and the caller does not wait. It assumes Poisson
arrivals and blocked-calls-cleared (M/G/N/N); remarkably the result depends on the
holding-time distribution only through its mean. This is the model of
``deployment.trunk.channels``: with the network and proxy at zero delay, the twin's
blocking probability must fall within the confidence interval of :func:`erlang_b`.

**Erlang C** (M/M/N with an infinite queue) is the probability that an arrival
*waits* because all ``N`` servers are busy, e.g. a call-centre queue, or a request
queued for a limited pool of STT/LLM/TTS provider slots. It requires exponential
service times and is only defined for a stable queue (offered load < servers).

Numerics
--------
Erlang B is computed with the classic recursion

    B(0, A) = 1,    B(n, A) = A·B(n-1, A) / (n + A·B(n-1, A)),

which stays in ``[0, 1]`` at every step, never forms ``A**N`` or ``N!``, and so is
stable for ``N`` in the tens of thousands (``N = 10 000`` takes a few milliseconds).
Erlang C is derived from B: ``C = N·B / (N − A·(1 − B))``.
"""

from __future__ import annotations

import math

__all__ = [
    "channels_for_blocking",
    "erlang_b",
    "erlang_c",
    "erlang_c_mean_wait",
    "offered_load",
]


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value}")


def _check_nonnegative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    x = float(value)
    if not math.isfinite(x) or x < 0.0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    return x


def offered_load(rate_per_s: float, mean_hold_s: float) -> float:
    """Offered traffic in erlangs: arrival rate times mean holding time.

    Parameters
    ----------
    rate_per_s : float
        Call (or request) arrival rate, per second, ``>= 0``.
    mean_hold_s : float
        Mean holding time of one call, seconds, ``>= 0``.

    Returns
    -------
    float
        Offered load ``A = rate_per_s * mean_hold_s`` in erlangs.

    Examples
    --------
    >>> offered_load(2.0, 90.0)
    180.0
    """
    rate = _check_nonnegative("rate_per_s", rate_per_s)
    hold = _check_nonnegative("mean_hold_s", mean_hold_s)
    return rate * hold


def erlang_b(channels: int, erlangs: float) -> float:
    """Erlang B blocking probability of a trunk group (M/G/N/N, blocked calls cleared).

    Parameters
    ----------
    channels : int
        Number of channels ``N >= 0`` (concurrent calls the trunk can carry).
    erlangs : float
        Offered load ``A >= 0`` in erlangs.

    Returns
    -------
    float
        Probability that an arriving call finds every channel busy and is lost.
        ``B(0, A) = 1``; ``B(N, 0) = 0`` for ``N > 0``.

    Raises
    ------
    ValueError
        If ``channels`` is not a non-negative integer or ``erlangs`` is negative,
        infinite or NaN.

    Examples
    --------
    >>> round(erlang_b(10, 5.0), 5)
    0.01838
    """
    _check_count("channels", channels, 0)
    a = _check_nonnegative("erlangs", erlangs)
    b = 1.0
    for n in range(1, channels + 1):
        ab = a * b
        b = ab / (n + ab)
    return b


def erlang_c(agents: int, erlangs: float) -> float:
    """Erlang C probability that an arrival has to wait (M/M/N, infinite queue).

    Parameters
    ----------
    agents : int
        Number of servers ``N >= 1`` (agents, provider concurrency slots).
    erlangs : float
        Offered load ``A >= 0`` in erlangs.

    Returns
    -------
    float
        Probability that all servers are busy on arrival. ``1.0`` when
        ``erlangs >= agents`` (the queue is unstable and grows without bound).

    Raises
    ------
    ValueError
        If ``agents`` is not an integer ``>= 1`` or ``erlangs`` is invalid.

    Examples
    --------
    >>> round(erlang_c(2, 1.0), 6)
    0.333333
    """
    _check_count("agents", agents, 1)
    a = _check_nonnegative("erlangs", erlangs)
    if a >= agents:
        return 1.0
    b = erlang_b(agents, a)
    return agents * b / (agents - a * (1.0 - b))


def erlang_c_mean_wait(agents: int, erlangs: float, mean_service_s: float) -> float:
    """Mean time in queue of all arrivals (waiting or not) in an M/M/N queue.

    Parameters
    ----------
    agents : int
        Number of servers ``N >= 1``.
    erlangs : float
        Offered load ``A >= 0`` in erlangs.
    mean_service_s : float
        Mean service time, seconds, ``>= 0``.

    Returns
    -------
    float
        ``W_q = C(N, A) · mean_service_s / (N − A)`` seconds, or ``math.inf`` when
        ``erlangs >= agents``. Arrivals that do wait wait ``mean_service_s / (N − A)``
        on average.

    Raises
    ------
    ValueError
        If any argument is invalid.

    Examples
    --------
    >>> round(erlang_c_mean_wait(2, 1.0, 3.0), 6)
    1.0
    """
    service = _check_nonnegative("mean_service_s", mean_service_s)
    c = erlang_c(agents, erlangs)
    a = float(erlangs)
    if a >= agents:
        return math.inf
    return c * service / (agents - a)


def channels_for_blocking(erlangs: float, target: float) -> int:
    """Smallest number of channels whose Erlang B blocking is at most ``target``.

    This is the trunk-dimensioning inverse of :func:`erlang_b`: "how many channels
    for 1 % blocking at the busy-hour load?". The recursion is walked upward from
    ``N = 0``; every step is one more channel, so the cost is ``O(N)`` — about a
    millisecond for ten thousand channels.

    Parameters
    ----------
    erlangs : float
        Offered load ``A >= 0`` in erlangs.
    target : float
        Acceptable blocking probability, ``0 < target <= 1``.

    Returns
    -------
    int
        Smallest ``N`` with ``erlang_b(N, erlangs) <= target``. With no traffic
        (``erlangs == 0``) no channel is needed and the answer is ``0``.

    Raises
    ------
    ValueError
        If ``erlangs`` is invalid or ``target`` is not in ``(0, 1]``.

    Examples
    --------
    >>> channels_for_blocking(84.06, 0.01)
    100
    """
    a = _check_nonnegative("erlangs", erlangs)
    if isinstance(target, bool) or not isinstance(target, int | float):
        raise ValueError(f"target: must be a probability in (0, 1], got {target!r}")
    t = float(target)
    if not (0.0 < t <= 1.0):
        raise ValueError(f"target: must be a probability in (0, 1], got {target!r}")
    if a == 0.0 or t >= 1.0:
        return 0
    b = 1.0
    n = 0
    while b > t:
        n += 1
        ab = a * b
        b = ab / (n + ab)
    return n
