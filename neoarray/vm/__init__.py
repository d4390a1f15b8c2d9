"""A real ``numpy.ndarray`` over a persistent array, through virtual memory: the one
module that binds ``native/`` (the C extension ``neoarray._vmem``).

``with A.mapped(region, writable=False) as v:`` gives a ``numpy.ndarray`` over a window
of ``A`` (anywhere in an array of any shape, an exabyte one included) whose pages are
read from ``A``'s chunks on first touch; ``numpy.asarray(A, copy=False)`` gives one over
the whole array when it fits the address space.  Any numpy, scipy or scikit-learn code
runs on it unchanged.

How a page gets its bytes
-------------------------
The region is anonymous memory reserved with ``MAP_NORESERVE``.  Under
**userfaultfd** it is registered for missing-page faults with
``UFFD_FEATURE_SIGBUS``: a touch of a missing page raises SIGBUS *in the thread that
touched it*, instead of waking a handler thread.  Under the **mprotect fallback** (no
privilege needed; ``mode="mprotect"`` or ``NEOARRAY_VM_MODE=mprotect``), the region is
``PROT_NONE`` and the touch raises SIGSEGV, in the same thread.  Either way the C
handler takes the GIL (``PyGILState_Ensure``: nothing to do when the faulting thread
holds it already) and calls the view's loader, which reads whole chunks through the
array's own paths (client cache, co-located LMDB, network: :mod:`neoarray.array.fetch`),
then installs the unit at once: a staging block is filled out of sight and moved into
place with ``mremap`` (under both mechanisms), so another thread sees a whole unit or
a fault, never a half-copied page.  Staging blocks come from a small pool per view,
of memory already touched: the pages of evicted units (moved out whole, 2 MiB
aligned, so that a unit of huge pages stays one: moving it in or out is one
page-table entry per 2 MiB), and blocks a background thread touches ahead while the
budget has room (the first touch of fresh memory costs milliseconds per 2 MiB in a
VM).  Compressed chunks (numcodecs) are decompressed straight into the staging block.

Raw chunks the client holds are not copied at all.  The client keeps a chunk record
whose payload is whole pages (256 KiB or more) in a *page block*
(``neoarray._vmem.Block``): the payload on pages of its own, 2 MiB aligned when that
large (huge pages), the record's few bytes before and after it on the pages around.
Records received from the network are read straight into one (the data plane places a
record by its first bytes: ``FrameReader(page_blocks=True)``), and those read in a
co-located node's LMDB are copied into one when the cache keeps them.  A fault on a
unit whose record the cache holds so *takes* it out of the cache
(``ColouredCache.take``: only when no reader holds it) and moves its payload's pages
into the unit (``Region.adopt``: one ``mremap``, one page-table entry per 2 MiB);
when the unit is evicted clean its pages move back into the block
(``Region.give_back``) and the record returns to the cache (not as current if its
object was invalidated meanwhile).  A write into such a unit keeps the pages for the
view: the cache no longer has them, so neither it nor another connection sees the
write before commit.  Why moves: on this VM, mapping the 512 pages of a 2 MiB
``memfd`` range costs more than a copy (``MAP_POPULATE`` or ``MADV_POPULATE_READ``
~200 us, or ~140 us of minor faults later; unmapping it ~60 us), against ~100 us for a
2 MiB ``memcpy`` between warm buffers and ~20 us to move a huge page in or out
(``mprotect`` and ``mremap``; a fresh 2 MiB block of huge pages filled by ``memcpy``:
~0.2 ms, of fresh 4 KiB pages: 2-3 ms).  Shared memory gets no huge pages here
(``shmem_enabled`` is ``never``), so sharing the cache's pages with the view would mean
4 KiB pages; moving them keeps one owner at a time, and no page is shared across a
``fork``.

Units whose records the cache holds are *armed* rather than installed:
``Region.arm`` makes a block's payload read-only and puts it in a table (1024 entries
per view) that the signal handler reads before it takes the GIL; a read of an armed
unit moves its pages in right there (atomics and one ``mremap``: no Python, no GIL),
a write or a failure goes to the Python loader, and the loader moves what the handler
mapped into its books at its next call (``take_mapped``).  Units read ahead are
armed, and so, once a fault finds its own unit's record in the cache, are the
window's other units whose records the cache holds (``_arm_cached``: 64 looked up at
most per such fault, going round the window), so that reads of cached chunks *in any
order* reach Python about once per view.  The cache *lends* those records
(``take(lend=True)``): their bytes stay counted in the cache's budget, up to half of
it, and not in the view's (the cache's memory, moved, not more of it: the process
holds at most the cache's bound plus the view's); records taken past that share
count in the view's budget, as every record did before.  Armed units return to the
cache when the connection moves to a newer snapshot, at abort, savepoint rollback,
``A[...] = x``, eviction (those counted in the view's budget) and close; a write
into a lent unit ends its loan (the pages are the view's, freed with it).

The first read of a record (received from the network, or copied from the co-located
LMDB into a page block for the cache) lands in *warm* pages where it can: a freed
page block (a record the cache evicted or dropped) is kept, up to
:func:`block_pool` ``bytes_max`` (32 MiB by default), for the next block of the same
geometry, instead of new memory whose first touch costs 0.7-8 ms per 2 MiB here.

Why in the faulting thread: the loader needs Python, and a numpy inner loop may fault
while it *holds* the GIL (not every loop releases it).  A separate userfaultfd handler
thread would wait for the GIL that the blocked faulting thread holds: a deadlock.  In
the faulting thread the GIL is either held already (then Python runs right there, as
a callback would) or taken like any C extension thread does; while the loader waits on
I/O, the fetch path releases the GIL as usual.  Threads (numpy's, BLAS's) faulting at
once queue on the view's lock, which waits without the GIL; the first loads, the others
find the unit in.  One residual hazard, shared by every Python callback from C: a
thread that holds the GIL *while waiting for* another thread that faults (numpy
releases the GIL around BLAS calls, so numpy's own calls do not).

A fault cannot raise a Python exception into the code that touched the page: if
loading fails (the storage is gone, a write into a read-only view), the error is
printed and the process stops (``abort``) with a message saying why; so does a touch
in a ``fork`` child (its views are made ``PROT_NONE`` at fork: a child never sees
stale pages, or zeros where userfaultfd is not inherited) or of a closed view.  Faults
outside every view go to the SIGSEGV/SIGBUS handler installed before ours (Python's
``faulthandler``, say).  A system call given an unloaded page (``v.tofile(f)``) gets
``EFAULT`` instead of a fault: touch the pages first (``v.copy()``).

Units, memory and writes
------------------------
One fault loads one *unit*: a whole chunk when chunks are contiguous runs of the window
(1-D arrays, and chunks spanning every inner axis: their bytes go straight into the
pages), else a power-of-two number of pages near the chunk size, filled from the chunks
covering it (:mod:`.geometry`); a forward scan also loads the next few chunks in the
same batch.  Unwritten chunks of fill 0 map the kernel's shared zero page (no memory;
the huge zero page for units of whole 2 MiB pages, all mapped in one call).
Clean units beyond ``budget_bytes`` are given back (``MADV_DONTNEED``, or a fresh
``PROT_NONE`` mapping), oldest first.  In a writable view, units are read-only until
written: the write faults, the unit turns writable and dirty; dirty bytes beyond
``dirty_bytes_max`` are written early into the transaction (as ``A[...] = v`` would,
spilling to a savepoint when large).  ``transaction.commit()`` writes the dirty units as
new chunk revisions through the array's own write path (a chunk left all fill is
removed; a concurrent writer of the same chunk gets ``ConflictError``); ``abort()``
drops them.  A view joins its transaction at its first dirty page: a savepoint keeps a
copy of its dirty units (at most ``dirty_bytes_max``), and the savepoint's
``rollback()`` gives them back their bytes of then and drops every other unit, which
faults in again from the chunks the connection rolled back.  When the connection moves
to a newer snapshot, units read from chunks that changed are dropped and fault again.

Measured here (2 shared cores in a VM, Linux 6.18,
``benchmarks/native_bench.py --mib 256 --fault-mib 32``; the last figures from three
runs alternated with the design before them, under a load of 8-10 from other users:
noisy to +-50% and more), per 2 MiB of 2 MiB chunks touched in random order, the
chunks in the client's cache: 37-50 us with room in the budget for all of them (before
cached units were armed in any order: 59-335 us, medians 65-82), 35-60 us with a
budget of 4 units (records on loan: nothing to evict; before, each fault also evicted
a unit: 91-542 us, medians 98-159); one touch in 16 reaches the Python loader
(before: 10 to 16 in 16); 4 MiB chunks 25-42 us per 2 MiB (before: 40-67 us, one run
844); 1 MiB chunks, which move as 4 KiB pages (half a huge page cannot move as one
entry), 57-111 us (before: 218-1348 us); 256 KiB chunks 0.2-1.2 ms, medians ~0.3 ms
(before 0.5-16 ms, medians 0.9-2.4 ms).  The parts: one ``mremap`` in the handler
(~20 us; a frozen block's pages are read-only already: no ``mprotect``), the signal,
and the first fault's Python loader, which arms the others.  Past the cache's share
for loans, faults go through the loader and evict as before (~100-180 us).
wendelin.core published 270-290 us per 2 MiB.  A chunk read from the co-located LMDB
for the first time costs 0.7-1.2 ms per 2 MiB (copied into a page block for the
cache, and checksummed; before: 0.8-2.2 ms), over the network 2.1-11 ms (no better
than before, 2.2-7.8 ms: the transfer dominates); warm page blocks from the pool help
where blocks are not huge pages (first reads of 256 KiB chunks: 2.2-6.3 ms per 2 MiB,
before 5.8-17.7 ms; 1 MiB chunks 1.6-3.5 ms, before 2.5-8 ms): a fresh 2 MiB block of
huge pages costs one page fault already.  A chunk of a detached array (in process
memory: always copied) 0.35-0.9 ms; a unit of unwritten chunks of fill 0 17-31 us.
A full ``numpy.sum`` over a view runs at 1.1-1.9 GB/s, 1.1-2.9x ``A[...].sum()`` in
the same runs, units read ahead armed so that most faults never reach Python, with
peak RSS 62-68 MiB for a 64 MiB budget; writing back every page at commit runs at
0.77-1.18x ``A[...] = x; commit()``.
A co-located client's RSS also counts the node's LMDB pages it reads in place (file
pages, shared with the page cache).

Limits: Linux only (x86-64 tells reads from writes in one fault; elsewhere a write into
a clean page faults twice); a window must fit the address space (``address_bytes_max``,
64 TiB); at most 4096 views open at once.  ``A[...] = v`` drops the clean units of
open views that read the chunks it writes (their dirty units keep their writes, which
their write-back puts over the chunk at commit).
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from ..array.config import config
from ..array.errors import ArrayTooLargeError, ArrayValueError
from . import geometry
from .view import MappedView

try:
    from .. import _vmem
except ImportError as exc:      # built by `pip install -e .` (setup.py); absent off Linux
    _vmem = None
    _import_error = str(exc)

ADDRESS_BYTES_MAX = 1 << 46
MODES = ("uffd", "mprotect")


class MappingUnavailableError(ArrayValueError, OSError):
    """Neither userfaultfd nor the mprotect fallback can map a view here."""


def available() -> dict:
    """What works here: ``{'uffd': bool, 'uffd_reason': str, 'mprotect': bool,
    'page_bytes': int}`` (all false without the extension)."""
    if _vmem is None:
        return {"uffd": False, "uffd_reason": f"native extension missing ({_import_error})",
                "mprotect": False, "page_bytes": 4096}
    return _vmem.probe()


def block_pool(bytes_max: int | None = None) -> dict:
    """The pool of warm page blocks (freed blocks kept for the next records of the same
    geometry): ``{'bytes_max', 'bytes', 'blocks', 'reused', 'fresh'}`` (``reused``,
    ``fresh``: blocks made from the pool or from new memory since the process started).
    ``bytes_max`` sets its bound in bytes (0: no pool)."""
    if _vmem is None:
        raise MappingUnavailableError(
            f"page blocks need neoarray's native extension, not built here ({_import_error})")
    if bytes_max is not None and (not isinstance(bytes_max, int) or bytes_max < 0):
        raise ArrayValueError(f"block_pool(bytes_max={bytes_max!r}): give a number of bytes, "
                              "0 (no pool) or more")
    return _vmem.block_pool(bytes_max)


def choose_mode(mode: str | None = None) -> str:
    """The fault mechanism used: ``mode``, else ``$NEOARRAY_VM_MODE``, else userfaultfd
    when allowed, else mprotect."""
    mode = mode or os.environ.get("NEOARRAY_VM_MODE") or None
    if mode is not None and mode not in MODES:
        raise ArrayValueError(f"mode {mode!r} is not one of {MODES}")
    if _vmem is None:
        raise MappingUnavailableError(
            "mapped views need neoarray's native extension, which is not built here "
            f"({_import_error}); reinstall with a C compiler on Linux (pip install -e .), "
            "or read selections with A[...]")
    found = _vmem.probe()
    if mode == "uffd" and not found["uffd"]:
        raise MappingUnavailableError(f"mode 'uffd' asked, but {found['uffd_reason']}; "
                                      "use mode='mprotect'")
    return mode or ("uffd" if found["uffd"] else "mprotect")


def _region_factory(mode):
    code = _vmem.MODE_UFFD if mode == "uffd" else _vmem.MODE_MPROTECT

    def make(nbytes, loader, writable):
        return _vmem.Region(nbytes, loader, code, writable)
    return make


def open_view(array, region=None, writable=False, *, mode=None, budget_bytes=None,
              dirty_bytes_max=None) -> MappedView:
    """A :class:`MappedView` of ``array[region]`` (see :meth:`ndarray.mapped`); the caller
    closes it."""
    chosen = choose_mode(mode)
    start, stop, _ = geometry.parse_window(region, array.shape)
    window = geometry.Window(array.shape, array.chunks, array.order, array.itemsize,
                             start, stop, _vmem.PAGE_BYTES)
    if window.region_bytes > ADDRESS_BYTES_MAX:
        raise ArrayTooLargeError(
            f"a window of shape {window.shape} needs {window.region_bytes} bytes of address "
            f"space, more than address_bytes_max ({ADDRESS_BYTES_MAX}); map a smaller window: "
            "A.mapped((slice(start, stop), ...))")
    budget = config.memory_limit_bytes() // 4 if budget_bytes is None else int(budget_bytes)
    dirty = budget // 2 if dirty_bytes_max is None else int(dirty_bytes_max)
    return MappedView(array, window, _region_factory(chosen), writable, budget, dirty)


@contextlib.contextmanager
def mapped(array, region=None, writable=False, **options):
    """``with mapped(A, region) as v``: the window as a numpy array (see
    :meth:`neoarray.array.ndarray.mapped`)."""
    _, _, dropped = geometry.parse_window(region, array.shape)
    view = open_view(array, region, writable, **options)
    try:
        result = view.numpy()
        if dropped:
            result = result[tuple(0 if ax in dropped else slice(None) for ax in range(array.ndim))]
        yield result
    finally:
        result = None
        view.close()


def whole(array, dtype=None):
    """``numpy.asarray(A, copy=False)``: a read-only numpy array over all of ``A``,
    unmapped when the last numpy array over it is freed."""
    if dtype is not None and array.dtype != dtype:
        raise ArrayValueError(
            f"numpy.asarray(A, dtype={dtype}, copy=False) would need a copy (A's dtype is "
            f"{array.dtype}); leave out dtype or copy")
    try:
        view = open_view(array)
    except ArrayTooLargeError as exc:
        raise ArrayTooLargeError(
            f"numpy.asarray(A, copy=False): the array ({array.nbytes} bytes) does not fit the "
            f"address space ({ADDRESS_BYTES_MAX} bytes); map a window of it instead: "
            "with A.mapped((slice(start, stop), ...)) as v: ...") from exc
    return np.asarray(_Owner(view))


class _Owner:
    """What a whole-array numpy array is a view of: it keeps the mapped view alive, and
    the view unmaps when the last numpy array over it is freed."""

    def __init__(self, view):
        self.view = view
        self.__array_interface__ = view.numpy().__array_interface__
