"""The daemon's heap: big blocks go back to the system when freed.

glibc's malloc serves a block of at least its mmap threshold (128 KiB at first) from a mapping
of its own, unmapped when freed. But freeing such a block raises the threshold to the block's
size (up to 32 MiB), and from then on blocks that size come from the heap of the thread's
arena, where a freed block stays resident. scrypt is one: each check of an HTTP password or
token (gateway.web.auth) takes 16 MiB, on a thread of the default executor, and each thread
may have its own arena. Measured on the demo (`bench footprint`'s `demo_rss_growth_mb`): 17 MB
more after the pay station's first calls; in a plain process, 16 MiB more for each thread that
checks one.

A fixed threshold keeps the first behaviour for good: a block of `BIG_BLOCK` or more is always
its own mapping, and freeing it returns it. Smaller ones (a 1080p camera frame is 6 MiB) stay
in the arenas, reused from frame to frame without a page fault each time.
"""

from __future__ import annotations

import ctypes

import structlog

log = structlog.get_logger(__name__)

BIG_BLOCK = 8 * 1024 * 1024  # bytes
M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h)


def return_big_blocks(threshold: int = BIG_BLOCK) -> bool:
    """Fix glibc's mmap threshold at `threshold` for this process; False where the C library
    has no mallopt (musl) or refuses it, and nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not done:
        log.warning("memory.threshold_refused", threshold=threshold)
    return done
