"""Gives the C heap's free memory back to the system after a list.

An informer's list allocates far more than it keeps: a page decoded whole, its
objects copied into the cache as compact JSON, their adds queued. Once the
page is gone, glibc's allocator keeps the pages it freed for later use, so a
process that lists once at start-up would carry that high-water mark for life
(bench/WHERE_THE_TIME_GOES.md, Sharding). `malloc_trim(0)` returns the free
pages in the middle of the heap too, not only at its top. It walks the whole
heap (a few milliseconds for 100,000 cached objects), so it is called once per
sync, never per object or event.

Only where glibc is the C library (asked through `confstr`, the call through
ctypes); elsewhere (musl, macOS) `release_free_memory` does nothing. Python's
own allocator (objects of 512 bytes or less) keeps its arenas regardless: one
goes back only when every object in it is freed.
"""

import ctypes
import os
import sys
from collections.abc import Callable


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    if sys.platform != "linux":
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (ValueError, OSError, AttributeError):
        return None  # not glibc
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _glibc_malloc_trim()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; False where that cannot be done."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
