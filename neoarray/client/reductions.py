"""Near-data reductions: array chunks reduced on the storage nodes holding them.

A client names a built-in kernel and chunks by oid; the nodes answer small partial
states (``storage_node/service.py``, "Near-data reductions"), so only those cross the
network.  ``Reductions`` batches the oids per node with a readable cell of their
partition, sends batches to different nodes in parallel, and sends again to another
readable cell the oids of a batch whose node did not answer.
"""
from __future__ import annotations

import collections.abc
import logging

from ..errors import ChecksumError, ClusterUnavailable
from . import calls

log = logging.getLogger("neoarray.client")


class Reductions:
    """Reductions over ``link`` (routing and stubs), batches run on ``pool``."""

    def __init__(self, link, pool, rpc_timeout_s: float, reduce_oids_per_batch_max: int,
                 reduce_attempts_max: int):
        self.link, self.pool = link, pool
        self.rpc_timeout_s = rpc_timeout_s
        self.reduce_oids_per_batch_max = reduce_oids_per_batch_max
        self.reduce_attempts_max = reduce_attempts_max

    def reduce_chunks(self, oids, tid, kernel, *, dtype, acc, chunk_shape, order, extents,
                      codec=None, bins=None, lo=None, hi=None, span=None, offsets=None) -> dict:
        """Reduce array chunks on the storage nodes holding them: ``{oid: (state, serial)}``.

        ``state`` is ``neoarray.kernels.block_state(kernel, block, acc, bins, lo, hi)``
        of ``block``, the in-bounds part (``extents[i]``, one size per axis) of the
        chunk ``oids[i]`` as of ``tid`` (its newest revision with a tid below ``tid``,
        like :meth:`load_many`; None: the newest), its items of ``dtype`` laid out as
        ``chunk_shape`` in ``order`` ('C'/'F') and encoded with ``codec`` (None,
        ``('zlib', level)`` or ``('numcodecs', config)``: the nodes need numcodecs
        then); ``serial`` is the revision reduced.  ``kernel`` is one of
        ``neoarray.kernels.BLOCK_STATES`` (``bins``, ``lo`` and ``hi`` for
        ``histogram``), or ``neoarray.envelopes.KERNEL`` (1-d chunks; ``bins``
        buckets over ``span``, ``(start, stop)``, and ``offsets``, the index of each
        chunk's first item, a list or a mapping like ``extents``); ``extents`` may also
        be a mapping from oid to extent.

        Oids absent from the result were not reduced (no revision before ``tid``,
        deleted, not a raw chunk record of that shape, no readable copy answered):
        the caller computes them itself, and its loads raise what ZODB raises.
        Always over gRPC, for nodes on this host too (no local reads): only the
        partial states cross the network.  Oids go in batches of at most
        ``reduce_oids_per_batch_max`` to one node with a readable cell of their
        partition, batches to different nodes in parallel; the oids of a batch whose
        node is unavailable (or failed a checksum) are sent to another readable cell,
        up to ``reduce_attempts_max`` nodes per oid.  ``RequestRefused`` for a request
        the nodes refuse (the message says why).
        """
        oids = list(oids)
        if isinstance(extents, collections.abc.Mapping):
            extent_of = {oid: extents[oid] for oid in oids}
        elif len(extents) != len(oids):
            raise ValueError(f"{len(extents)} extents for {len(oids)} oids: one extent per oid")
        else:
            extent_of = dict(zip(oids, extents))
        oids = list(extent_of)          # each oid once
        if offsets is None:
            offset_of = {}
        elif isinstance(offsets, collections.abc.Mapping):
            offset_of = {oid: int(offsets[oid]) for oid in oids}
        else:
            offset_of = dict(zip(extent_of, (int(o) for o in offsets)))
        template = calls.reduce_template(tid, kernel, dtype, acc, chunk_shape, order,
                                         codec, bins, lo, hi, span)
        out: dict = {}
        tried: dict[bytes, set] = {oid: set() for oid in oids}
        todo = oids
        for _ in range(self.reduce_attempts_max):
            batches = self._reduce_batches(todo, tried)
            if not batches:
                break
            jobs = [(batch, self.pool.submit(self._reduce_batch, nid, batch, template, extent_of,
                                             offset_of))
                    for nid, batch in batches]
            todo = []
            for batch, job in jobs:
                try:
                    out.update(job.result())
                except (ClusterUnavailable, ChecksumError) as exc:
                    log.debug("reduce of %d chunks failed: %s", len(batch), exc)
                    todo.extend(batch)
        return out

    def _reduce_batches(self, oids, tried) -> list:
        """``[(node, oids)]``: each oid to a readable cell not tried yet, in batches."""
        groups: dict[int, list] = {}
        for oid in oids:
            cells = [nid for nid in self.link.readable(self.link.partition(oid))
                     if nid not in tried[oid]]
            if cells:
                tried[oid].add(cells[0])
                groups.setdefault(cells[0], []).append(oid)
        size = max(1, self.reduce_oids_per_batch_max)
        return [(nid, group[i:i + size]) for nid, group in groups.items()
                for i in range(0, len(group), size)]

    def _reduce_batch(self, nid, oids, template, extent_of, offset_of) -> dict:
        """``{oid: (state, serial)}`` of the chunks that node ``nid`` reduced."""
        from .. import kernels  # Numba: imported by the first reduction only

        chunks = calls.reduce(self.link.storage(nid), template, oids, extent_of, offset_of, self.rpc_timeout_s,
                              f"reduce on S{nid}")
        wanted, out = set(oids), {}
        for oid, state, serial in chunks:
            if oid not in wanted:
                continue
            try:
                out[oid] = (kernels.decode_state(state), serial)
            except ValueError as exc:     # left to the caller, who computes it
                log.warning("S%d sent a malformed state for oid 0x%s: %s", nid, oid.hex(), exc)
        return out
