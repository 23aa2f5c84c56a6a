"""glibc heap setting for training steps: freed activations go back to the OS, not into RSS."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
# glibc's starting threshold. Left alone, glibc raises it to the size of each freed mmap block,
# up to 32 MiB (AFTER), so a training pass's activations (1-3 MiB tensors on SmolLM2) soon come
# from the heap, where freed blocks stay resident and fragment: make tune peaked at 2.9-3.0 GB
# RSS where about 1.9 GB was live. Held here, they are mapped and unmapped (at the price of
# fresh pages, page faults, for each).
MMAP_THRESHOLD = 128 * 1024
AFTER = 32 * 1024 * 1024


@cache
def _libc() -> Any:
    """glibc's functions, or None elsewhere (macOS, musl): then these helpers do nothing."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


@contextmanager
def bounded_heap() -> Iterator[None]:
    """Within (a training step): blocks of MMAP_THRESHOLD bytes and more are mapped and unmapped.
    After: free heap pages go back to the OS, and the threshold is fixed at 32 MiB, the ceiling
    of glibc's own adjustment, which a torch process reaches, so other work (a bare loop timed
    beside this one, generation in the same server) allocates as it would have."""
    libc = _libc()
    if libc is None or not libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        yield
        return
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, AFTER)
        libc.malloc_trim(0)
