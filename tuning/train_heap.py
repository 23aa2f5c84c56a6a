"""glibc heap settings for training: freed activations go back to the OS, not into a high RSS."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from functools import cache
from typing import Any

log = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
# glibc's starting threshold. Left alone, glibc raises it to the size of each freed mmap block,
# up to 32 MiB, so a training pass's activations (1-3 MiB tensors on SmolLM2) soon come from the
# heap, where freed blocks stay resident and fragment: peak RSS 2.9-3.0 GB where the live peak is
# about 1.9 GB (make tune's data, 512-token passes). Fixed here, they are mapped and unmapped.
MMAP_THRESHOLD = 128 * 1024


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


def bound_heap() -> bool:
    """Serve blocks of MMAP_THRESHOLD bytes and more by mmap for the rest of the process (the
    allocation pattern of a training run); returns whether it was applied."""
    libc = _libc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not applied:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; the heap keeps glibc's defaults")
    return applied


def release_heap() -> None:
    """Give free heap pages back to the OS (between training steps)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
