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
import gc


def release() -> None:
    """Collect garbage, then give free heap memory back to the OS (glibc only)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError, TypeError):
        name = ctypes.util.find_library("c")
        if name:
            ctypes.CDLL(name).malloc_trim(0)
