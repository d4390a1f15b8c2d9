"""Giving freed memory back to the operating system (glibc's ``malloc_trim``).

glibc serves large allocations (numpy chunk arrays, chunk records, pickles) with their
own ``mmap`` only below a threshold that it raises to the size of the largest block
freed (up to 32 MiB on 64-bit systems): after the first chunk-sized buffer is freed,
the next ones come from the heap, and a heap fragmented by blocks of several sizes
keeps the memory they free.  A long out-of-core operation would then hold, in resident
memory, far more than it uses.  :func:`trim` returns the free pages of every arena
(``malloc_trim(0)``); the operations call it at their natural pauses (a savepoint
spilling written chunks, see ``core.Unsaved``).  Elsewhere than glibc it does nothing.
"""
import ctypes
import ctypes.util


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_trim = _malloc_trim()


def trim() -> bool:
    """Return the free memory of the C heap to the system; True when some was."""
    return bool(_trim(0)) if _trim is not None else False
