"""Bulk reads of :class:`~neoarray.client.storage.NeoStorage`, beyond ZODB's interfaces:
what arrays and their mapped views ask of it (``neoarray.array``, ``neoarray.vm``).

A mixin: it uses the storage's ``_reads`` (``reads.py``: batches per node, local
reads, views), ``_cache`` (records taken out of it and given back, on loan or for
good) and ``_reductions`` (``reductions.py``: near-data reductions).  A read names
its cache colour, or takes the reader's (:mod:`neoarray.client.colours`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from . import colours


class BulkReadMethods:
    """Many records of one snapshot at once, views of them, records moved out of the
    cache and back, and reductions run where the chunks are."""

    def load_many(self, oids: Sequence[bytes], tid: bytes, colour: str | None = None,
                  align: Callable[[Any], int] | None = None) -> dict[bytes, tuple[bytes, bytes, bytes | None]]:
        """Load many objects as of one snapshot, in batches per storage node.

        Parameters
        ----------
        oids : sequence of bytes
            The objects.
        tid : bytes
            The snapshot: revisions current before ``tid``.
        colour : str, optional
            The cache colour of the loads (default: the reader's).
        align : callable, optional
            ``align(record) -> offset`` of the bytes to align on 64 bytes in the
            records loaded now (array chunk payloads), as :meth:`read_views`.

        Returns
        -------
        dict
            ``{oid: (data, serial, next_serial)}``; an oid with no revision before
            ``tid`` is absent.
        """
        return self._reads.load_many(oids, tid, colour or colours.current(), align)

    def read_views(self, oids: Sequence[bytes], tid: bytes, colour: str | None = None,
                   align: Callable[[Any], int] | None = None) -> AbstractContextManager[dict]:
        """Records of ``oids`` as of ``tid`` for bulk readers, valid in a ``with`` block;
        the parameters are :meth:`load_many`'s.

        Returns
        -------
        context manager
            Yields ``{oid: (data, serial)}``, whose records may be views of the local
            storage node's pages (no copy), valid only inside the block.
        """
        return self._reads.read_views(oids, tid, colour or colours.current(), align)

    def take_record(self, oid: bytes, tid: bytes, colour: str | None = None,
                    movable: Callable[[Any], bool] | None = None,
                    lend: bool = False) -> tuple | None:
        """Take the cached record of ``oid`` as of ``tid`` out of the cache, for a mapped
        view that moves its pages instead of copying them.

        Parameters
        ----------
        oid, tid : bytes
            The object and the snapshot (revisions current before ``tid``).
        colour : str, optional
            The cache colour of the read.
        movable : callable, optional
            ``movable(data) -> bool``: take only such records.
        lend : bool
            Lend it while the cache's records on loan leave room (its bytes stay
            counted in the cache's budget until it comes back or :meth:`end_loan`).

        Returns
        -------
        tuple or None
            ``(data, serial, next_serial, token, loaned)``; None when the cache has no
            such record or anything besides the cache holds it.  Give it back with
            :meth:`give_back_record`.
        """
        return self._cache.take(oid, tid, colour or colours.current(), movable, lend)

    def end_loan(self, record_bytes: int, records: int = 1) -> None:
        """``records`` records lent by :meth:`take_record` (``record_bytes`` in all)
        will not come back (a mapped view wrote into their pages, or was freed)."""
        self._cache.end_loan(record_bytes, records)

    def give_back_record(self, oid: bytes, data: Any, serial: bytes, next_serial: bytes | None,
                         token: int, colour: str | None = None, loaned: bool = False) -> None:
        """Put a record from :meth:`take_record` back into the cache (not if ``oid`` was
        invalidated since it was taken and it was the current revision then).

        Parameters
        ----------
        oid, data, serial, next_serial, token, loaned
            As :meth:`take_record` returned them.
        colour : str, optional
            The cache colour of the record.
        """
        self._cache.put(oid, data, serial, next_serial, token, colour or colours.current(),
                        loaned)

    def reduce_chunks(self, oids: Sequence[bytes], tid: bytes, kernel: str, **kw: Any) -> dict:
        """Reduce array chunks on the storage nodes holding them.

        Parameters
        ----------
        oids : sequence of bytes
            The chunk objects.
        tid : bytes
            The snapshot read.
        kernel : str
            A built-in kernel's name (``sum``, ``moments``, ``histogram``...).
        **kw
            The kernel's parameters and the chunks' layout
            (:meth:`neoarray.client.reductions.Reductions.reduce_chunks`).

        Returns
        -------
        dict
            ``{oid: partial result}``; only partial results cross the network.
        """
        return self._reductions.reduce_chunks(oids, tid, kernel, **kw)
