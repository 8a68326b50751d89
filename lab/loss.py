"""Packet loss: independent (Bernoulli) or bursty (Gilbert–Elliott), one model for both backends.

The twin rates each call's voice from this model (:mod:`twin.media`), and the real
backend's RTP impairment relay (:mod:`real.network`) drops real datagrams with it, so the
two lose packets alike.

**Gilbert–Elliott** (Gilbert 1960, Elliott 1963): a Good and a Bad state; per packet
``p_gb`` = P(Good → Bad), ``p_bg`` = P(Bad → Good); loss probability ``loss_good`` /
``loss_bad`` in each. Stationary loss ``π_B·loss_bad + π_G·loss_good`` with
``π_B = p_gb/(p_gb + p_bg)``; for the plain Gilbert model (0 and 1) the mean burst is
``1/p_bg`` and the burst ratio ``BurstR = 1/(p_gb + p_bg)``. Independent loss ``p`` is
``LossModel(0, 1, p, p)``. ``network.burst: {mean_burst_packets: L}`` is the planner's
form: the Gilbert model with ``p_bg = 1/L`` and the mean loss ``network.loss``.

**Burst ratio** (ITU-T G.113 Appendix I, the E-model's ``BurstR``): the observed mean
length of loss bursts over the mean length expected for random loss at the same rate,
``1/(1 − p)``: 1 for independent loss, > 1 when losses cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lab.spec import Network

__all__ = ["LossChain", "LossModel", "burst_ratio", "gilbert_elliott"]


@dataclass(frozen=True)
class LossModel:
    """A Gilbert–Elliott chain; independent loss ``p`` is ``LossModel(0, 1, p, p)``."""

    p_gb: float
    p_bg: float
    loss_good: float
    loss_bad: float

    @classmethod
    def from_network(cls, net: Network) -> LossModel:
        b = net.burst
        if b is None:
            return cls(0.0, 1.0, net.loss, net.loss)
        if b.mean_burst_packets is not None:
            p_bg = 1.0 / b.mean_burst_packets
            return cls(net.loss / (1.0 - net.loss) * p_bg, p_bg, 0.0, 1.0)
        assert b.p_gb is not None and b.p_bg is not None  # the spec guarantees one form
        return cls(b.p_gb, b.p_bg, b.loss_good, b.loss_bad)

    @property
    def independent(self) -> bool:
        return self.loss_good == self.loss_bad

    @property
    def pi_bad(self) -> float:
        total = self.p_gb + self.p_bg
        return self.p_gb / total if total > 0 else 0.0

    def stats(self, extra: float = 0.0) -> tuple[float, float]:
        """Stationary loss and burst ratio, with independent ``extra`` loss on top.

        A burst starts at a loss after a non-loss: mean burst = P(loss)/P(start), and
        BurstR = mean burst · (1 − P(loss)).
        """
        e_g = 1.0 - (1.0 - self.loss_good) * (1.0 - extra)
        e_b = 1.0 - (1.0 - self.loss_bad) * (1.0 - extra)
        pi_b = self.pi_bad
        pi_g = 1.0 - pi_b
        p_loss = pi_g * e_g + pi_b * e_b
        next_g = (1.0 - self.p_gb) * e_g + self.p_gb * e_b  # P(loss next | Good now)
        next_b = self.p_bg * e_g + (1.0 - self.p_bg) * e_b
        p_start = pi_g * (1.0 - e_g) * next_g + pi_b * (1.0 - e_b) * next_b
        if p_start <= 1e-15 or p_loss >= 1.0:
            return p_loss, 1.0
        return p_loss, p_loss / p_start * (1.0 - p_loss)


    def stats_array(self, extra: NDArray[np.float64]
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """:meth:`stats` for many values of ``extra`` at once (the same arithmetic)."""
        e_g = 1.0 - (1.0 - self.loss_good) * (1.0 - extra)
        e_b = 1.0 - (1.0 - self.loss_bad) * (1.0 - extra)
        pi_b = self.pi_bad
        pi_g = 1.0 - pi_b
        p_loss = pi_g * e_g + pi_b * e_b
        next_g = (1.0 - self.p_gb) * e_g + self.p_gb * e_b
        next_b = self.p_bg * e_g + (1.0 - self.p_bg) * e_b
        p_start = pi_g * (1.0 - e_g) * next_g + pi_b * (1.0 - e_b) * next_b
        with np.errstate(divide="ignore", invalid="ignore"):
            burst = p_loss / p_start * (1.0 - p_loss)
        return p_loss, np.where((p_start <= 1e-15) | (p_loss >= 1.0), 1.0, burst)


class LossChain:
    """A :class:`LossModel` stepped one packet at a time (a live stream, e.g. the relay).

    The chain starts in its stationary law; uniforms come from ``rng`` in batches of
    ``batch`` (drawn last to first), so a packet costs a list pop, not a numpy call.
    """

    def __init__(self, model: LossModel, rng: np.random.Generator, batch: int = 512) -> None:
        self.model = model
        self.rng = rng
        self.batch = batch
        self._u: list[float] = []
        self.bad = bool(rng.random() < model.pi_bad)

    def _uniform(self) -> float:
        if not self._u:
            self._u = self.rng.random(self.batch).tolist()
        return self._u.pop()

    def lost(self) -> bool:
        """Step the chain by one packet and draw that packet's loss."""
        m = self.model
        if m.independent:
            return m.loss_good > 0.0 and self._uniform() < m.loss_good
        if self.bad:
            self.bad = self._uniform() >= m.p_bg
        else:
            self.bad = self._uniform() < m.p_gb
        return self._uniform() < (m.loss_bad if self.bad else m.loss_good)


def gilbert_elliott(n: int, p_gb: float, p_bg: float, loss_good: float, loss_bad: float,
                    rng: np.random.Generator) -> NDArray[np.bool_]:
    """``n`` packets' loss flags from a Gilbert–Elliott chain started in its stationary law.

    The chain is built from alternating state sojourns (geometric lengths), so it is
    vectorised; independent loss (``loss_good == loss_bad``) skips the chain.
    """
    if loss_good == loss_bad:
        return rng.random(n) < loss_good
    total = p_gb + p_bg
    bad = bool(rng.random() < (p_gb / total if total > 0 else 0.0))
    lengths: list[NDArray[np.int64]] = []
    covered = 0
    while covered < n:
        pairs = max(8, int(n * (p_gb * p_bg) / max(total, 1e-12)) + 8)
        stay_first = _sojourns(p_bg if bad else p_gb, pairs, n, rng)
        stay_other = _sojourns(p_gb if bad else p_bg, pairs, n, rng)
        chunk = np.column_stack([stay_first, stay_other]).ravel()
        lengths.append(chunk)
        covered += int(chunk.sum())
    runs = np.concatenate(lengths)
    flags = np.resize(np.array([bad, not bad]), runs.size)
    state_bad = np.repeat(flags, runs)[:n]
    return rng.random(n) < np.where(state_bad, loss_bad, loss_good)


def _sojourns(p_leave: float, size: int, n: int, rng: np.random.Generator
              ) -> NDArray[np.int64]:
    if p_leave <= 0.0:
        return np.full(size, n, dtype=np.int64)
    return np.minimum(rng.geometric(p_leave, size), n).astype(np.int64)


def burst_ratio(lost: NDArray[np.bool_]) -> float:
    """Measured BurstR (G.113 Appendix I): mean loss-run length × (1 − loss fraction).

    1.0 when nothing (or everything) is lost.
    """
    lost = np.asarray(lost, dtype=bool)
    k = int(lost.sum())
    if k == 0 or k == lost.size:
        return 1.0
    starts = int(lost[0]) + int(np.count_nonzero(lost[1:] & ~lost[:-1]))
    return k / starts * (1.0 - k / lost.size)
