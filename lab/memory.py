"""Handing freed memory back to the operating system between the phases of a run.

A simulation allocates and frees many small objects; glibc keeps the freed pieces in its
heap, where the large arrays of the next phase (numpy takes them straight from the
kernel) cannot use them, so the peak resident size grows by the fragmentation. Between
phases -- after the simulation, before the tables are written -- :func:`release`
returns what is free (``malloc_trim``); elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Iterator


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, found once (``find_library`` runs ``ldconfig``); None if not found."""
    with contextlib.suppress(OSError):
        name = ctypes.util.find_library("c")
        return ctypes.CDLL(name) if name else None
    return None


def release(collect: bool = True) -> None:
    """Collect garbage (unless not ``collect``), then give free heap memory back to the
    OS (glibc only)."""
    if collect:
        gc.collect()
    with contextlib.suppress(AttributeError, TypeError):
        if (libc := _libc()) is not None:
            libc.malloc_trim(0)


#: glibc's ``M_MMAP_THRESHOLD`` option, and the size from which blocks are pinned to mmap.
_M_MMAP_THRESHOLD = -3
MMAP_FROM_BYTES = 1 << 20


def large_blocks_from_the_kernel() -> None:
    """Give every block of 1 MiB or more its own mapping, returned to the OS when freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so
    after the first few the tables' 16 MB columns come from the heap, and what they
    leave there when freed stays resident: a 2 M-turn run peaked 50 MB higher for it.
    Setting the threshold fixes it (glibc only; elsewhere nothing happens).
    """
    with contextlib.suppress(AttributeError, TypeError):
        if (libc := _libc()) is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_FROM_BYTES)


#: Collector thresholds while a simulation runs (Python's default is (700, 10, 10)).
RUN_THRESHOLDS = (50_000, 50, 100)


@contextlib.contextmanager
def sparse_gc(thresholds: tuple[int, int, int] = RUN_THRESHOLDS) -> Iterator[None]:
    """Run the cyclic collector rarely inside the block, as it is at its end.

    Every calendar wake-up allocates a tuple, so at the default thresholds the
    collector runs every few hundred wake-ups and re-scans the ten thousand live call
    processes each time: a quarter of a busy hour's time (``make bench``). The twin
    makes no reference cycles while it runs (a test collects after a run and finds
    none), so scanning seldom frees nothing later than it would have.
    """
    old = gc.get_threshold()
    gc.freeze()  # what exists before the run is never garbage of the run
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
