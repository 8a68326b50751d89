"""Locust's load shape from an experiment's load profile, as a pure function of time.

A Locust user of siplab (:mod:`loadgen.locustfile`) is one caller placing the
experiment's calls back to back, so ``u`` users carry ``u`` calls at once and offer
``u / call_s`` calls per second, ``call_s`` being a call's mean length from INVITE
to the end of its BYE. By Little's law the profile's rate λ(t) (:class:`lab.profiles.Profile`)
needs ``ceil(λ(t) · call_s)`` users at time ``t``. :class:`UserShape` says that,
capped by ``--users`` and spawned at ``--spawn-rate`` (Locust's
``LoadTestShape.tick`` returns ``(users, spawn_rate)`` about once a second, and
``None`` ends the test).

The experiment asks for the shape by its arrivals: ``ramp``, ``steps``, ``burst``
and ``diurnal`` vary over time and get it (:func:`wants_shape`); ``poisson``,
``constant`` and ``replay`` run ``--users`` users for ``--run-time``.

No Locust here: this module is imported by tests and notebooks, where ``import
locust`` (gevent's monkey-patching) must not happen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lab import spec as S
from lab.plan import Talk, Turn, make_plan
from lab.profiles import Profile

TIME_VARYING = (S.RampArrivals, S.StepsArrivals, S.BurstArrivals, S.DiurnalArrivals)
SIGNALLING_S = 0.2  # INVITE/200/ACK and BYE/200 through the loopback SUT, with margin
STEP_S = 1.0  # a feature step (DTMF prompt, MESSAGE, hold, transfer) beyond its media
PLAN_SAMPLE = 2000  # planned calls averaged for a call's mean length


def wants_shape(exp: S.Experiment) -> bool:
    """True when the experiment's arrivals vary over time (ramp, steps, burst, diurnal)."""
    return isinstance(exp.load.arrivals, TIME_VARYING)


def mean_call_s(exp: S.Experiment, base_dir: Path | None = None) -> float:
    """A call's expected length from INVITE to BYE's answer: its planned media, the
    agent's answer delay, per AI turn the reply latency (VAD hangover, STT, time to
    first token, TTS first byte), per feature step ~1 s, plus the signalling."""
    ai = exp.deployment.ai
    turn_s = (ai.vad_ms.mean + ai.stt.latency_ms.mean + ai.llm.ttft_ms.mean
              + ai.tts.ttfb_ms.mean) / 1000.0
    plan = make_plan(exp, 0, base_dir)
    n = min(len(plan), PLAN_SAMPLE)
    if n == 0:
        return exp.deployment.agent.answer_ms / 1000.0 + SIGNALLING_S
    total = 0.0
    for i in range(n):
        cp = plan[i]
        total += cp.talk_s + sum(turn_s if isinstance(s, Turn) else STEP_S
                                 for s in cp.steps if not isinstance(s, Talk))
    return total / n + exp.deployment.agent.answer_ms / 1000.0 + SIGNALLING_S


@dataclass(frozen=True)
class UserShape:
    """Users over time for a profile: ``ceil(λ(t) · call_s)``, at most ``max_users``.

    Parameters
    ----------
    profile
        The experiment's arrival rate λ(t) over ``[0, duration_s)``.
    call_s
        A call's mean length (:func:`mean_call_s`).
    max_users
        The cap (``--users``); None: none.
    spawn_rate
        Users started (or stopped) per second (``--spawn-rate``).
    """

    profile: Profile
    call_s: float
    max_users: int | None = None
    spawn_rate: float = 1.0

    @classmethod
    def of(cls, exp: S.Experiment, base_dir: Path | None = None, *,
           max_users: int | None = None, spawn_rate: float = 1.0) -> UserShape:
        """The shape of ``exp``'s load profile."""
        return cls(Profile(exp.load.arrivals, exp.duration_s, base_dir),
                   mean_call_s(exp, base_dir), max_users, spawn_rate)

    def users_at(self, elapsed_s: float) -> int | None:
        """Users to run ``elapsed_s`` into the test; None once the profile has ended."""
        rate = self.profile.tick(elapsed_s)
        if rate is None:
            return None
        users = math.ceil(rate * self.call_s - 1e-9)
        return min(users, self.max_users) if self.max_users is not None else users

    def tick(self, elapsed_s: float) -> tuple[int, float] | None:
        """Locust's ``(users, spawn_rate)`` at ``elapsed_s``; None ends the test."""
        users = self.users_at(elapsed_s)
        return None if users is None else (users, self.spawn_rate)
