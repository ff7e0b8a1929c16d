"""Process-wide tuning for a gateway worker, applied once at start (never in tests' shared process).

Measured with tests/bench on 2 cores:
- freezing the start-up objects and raising the first GC threshold removed most
  collections from the request path: +15% req/s and p99 at c=32 from 22 to 6 ms;
- keeping multi-MB buffers in the heap instead of fresh mmap/munmap for every
  4 MB body halved p50 for 4 MB requests (page faults were the system time).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("gateway")

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
BIG = 64 * 1024 * 1024


def tune_process() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 1_000)
    _keep_big_buffers_in_heap()


def _keep_big_buffers_in_heap() -> None:
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return
    for option, value in ((M_MMAP_THRESHOLD, BIG), (M_TRIM_THRESHOLD, 4 * BIG), (M_TOP_PAD, BIG)):
        if mallopt(option, value) != 1:
            log.debug("mallopt(%d) was refused", option)
