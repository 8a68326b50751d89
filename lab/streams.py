"""Random streams: one root seed, one independent named stream per component.

``numpy.random.SeedSequence(seed)`` is the root; each component draws from a
generator keyed by (replication, name), e.g. ``("arrivals")`` or ``("net.up")``.
Adding draws in one layer therefore never shifts another layer's draws, which
gives common random numbers across A/B variants and across backends: the twin
and the real backend dial the same calls at the same times with the same holds.
"""

from __future__ import annotations

import zlib

import numpy as np


class Streams:
    """Named, reproducible numpy Generators for one replication."""

    def __init__(self, seed: int, replication: int = 0) -> None:
        self.seed = int(seed)
        self.replication = int(replication)

    def rng(self, name: str) -> np.random.Generator:
        """A fresh Generator for ``name``; the same name always gives the same stream."""
        key = (self.replication, zlib.crc32(name.encode()))
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))
