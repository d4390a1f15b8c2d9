"""Process-wide limits of :mod:`neoarray.array`.

All limits carry their unit in their name.  Change them on the module-level
:data:`config` object, or temporarily with :func:`configure`::

    with neoarray.array.configure(fetch_bytes_max=16 << 20):
        total = A.sum()
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

from .errors import ArrayTooLargeError

MIB = 1 << 20


def available_memory_bytes() -> int | None:
    """Return the physical memory currently available, in bytes.

    Uses ``os.sysconf``; returns ``None`` when the platform does not say.
    """
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page_bytes = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    if pages <= 0 or page_bytes <= 0:
        return None
    return pages * page_bytes


@dataclasses.dataclass
class ArrayConfig:
    """Limits used by every array of the process.

    Attributes
    ----------
    memory_bytes_max : int or None
        Largest result materialised in memory (``numpy.asarray(A)``, ``A[...]``,
        reduction outputs), and the bound of the working memory of operations
        that stream through arrays larger than it (stores of expressions, scans,
        sorts, quantiles): a quarter of it for chunks read at once
        (:meth:`fetch_limit_bytes`), a quarter for chunks written and not yet
        spilled to a savepoint (:meth:`unsaved_limit_bytes`), the rest for
        computing.  The client cache has its own bound (``cache_bytes_max`` of
        the storage).  ``None`` means 90% of the available RAM, read at each
        check.
    fetch_bytes_max : int
        Largest amount of decoded chunk bytes held at once by a read, a write
        or a reduction (one batch of chunks); a quarter of ``memory_bytes_max``
        when that is smaller (:meth:`fetch_limit_bytes`).
    fetch_threads_max : int
        Threads of the pool that loads chunk records concurrently.
    compute_threads_max : int
        Threads that read chunk records in place and compute on them
        (reductions, reads, see ``read_in_place``); 1: the calling thread only.
    read_in_place : bool
        Let reductions, reads and writes compute directly on chunk records in
        the storage's own buffers (no copy) when the connection's storage
        offers ``read_views`` (a :class:`neoarray.client.NeoStorage` reading
        a storage node of this host); False: always go through the fetcher.
    chunk_bytes_target : int
        Size aimed at by the default chunk shape.
    chunk_bytes_max : int
        Largest chunk accepted (user-given chunk shapes included).
    default_colour : str
        Cache colour of chunk reads of arrays that name none (``ndarray.colour``);
        see :mod:`neoarray.client.cache`.
    spill_dir : str or None
        Directory of the temporary files of external sorts (``np.sort`` of arrays
        larger than the sort buffer, see :mod:`neoarray.array.ordering`); None: the
        system's temporary directory.
    """

    memory_bytes_max: int | None = None
    fetch_bytes_max: int = 64 * MIB
    fetch_threads_max: int = 8
    compute_threads_max: int = 2
    read_in_place: bool = True
    chunk_bytes_target: int = 4 * MIB
    chunk_bytes_max: int = 256 * MIB
    default_colour: str = "hot"
    spill_dir: str | None = None

    def memory_limit_bytes(self) -> int:
        """Return the effective ``memory_bytes_max`` in bytes."""
        if self.memory_bytes_max is not None:
            return self.memory_bytes_max
        available = available_memory_bytes()
        if available is None:
            return 1 << 62
        return int(available * 0.9)

    def fetch_limit_bytes(self) -> int:
        """Bytes of chunks a read, a write or a reduction holds at once (one batch, or
        the batches in flight): ``fetch_bytes_max``, or a quarter of
        ``memory_bytes_max`` when that is smaller; at least 1."""
        return max(1, min(self.fetch_bytes_max, self.memory_limit_bytes() // 4))

    def unsaved_limit_bytes(self) -> int:
        """Bytes of chunk payloads written into attached arrays in one transaction of a
        connection that are held in memory before a savepoint spills them (see
        ``core.Unsaved``): a quarter of ``memory_bytes_max``; at least 1."""
        return max(1, self.memory_limit_bytes() // 4)


#: The limits of every array of the process (``neoarray.array.config``).
config = ArrayConfig()


def check_memory(nbytes: int, what: str) -> None:
    """Raise :class:`~neoarray.array.errors.ArrayTooLargeError` when ``nbytes`` exceeds
    the memory limit (:meth:`ArrayConfig.memory_limit_bytes` of :data:`config`).

    Parameters
    ----------
    nbytes : int
        Bytes the operation would hold in memory.
    what : str
        What needs them, for the error's message.
    """
    limit = config.memory_limit_bytes()
    if nbytes > limit:
        raise ArrayTooLargeError(
            f"{what} needs {nbytes} bytes in memory, more than memory_bytes_max "
            f"({limit} bytes); select a smaller region or raise "
            "neoarray.array.config.memory_bytes_max")


@contextlib.contextmanager
def configure(**limits: Any) -> Iterator[ArrayConfig]:
    """Temporarily change attributes of :data:`config` (not thread-local).

    Parameters
    ----------
    **limits
        New values of attributes of :class:`ArrayConfig` (``fetch_bytes_max=...``).

    Yields
    ------
    ArrayConfig
        :data:`config`, changed until the ``with`` block ends.

    Raises
    ------
    TypeError
        A name is not an attribute of :class:`ArrayConfig`.
    """
    unknown = set(limits) - {f.name for f in dataclasses.fields(ArrayConfig)}
    if unknown:
        raise TypeError(f"unknown neoarray.array limits: {sorted(unknown)}")
    saved = {name: getattr(config, name) for name in limits}
    for name, value in limits.items():
        setattr(config, name, value)
    try:
        yield config
    finally:
        for name, value in saved.items():
            setattr(config, name, value)
