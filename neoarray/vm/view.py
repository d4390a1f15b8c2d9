"""A mapped window of a persistent array: the loader its page faults call, its resident
and dirty units, and its part in the connection's transactions (see :mod:`neoarray.vm`).

Every method that changes the units runs under the view's lock: faults arrive from any
thread (numpy, BLAS), each holding the GIL while it runs Python, and the lock (which
waits without the GIL) keeps one fault at a time working on the units.  It is
re-entrant: writing back a unit reads the whole items it shares with the next unit,
which may fault that unit in, in the same thread.
"""
from __future__ import annotations

import collections
import functools
import threading
import weakref

import numpy as np
from transaction._transaction import Status

from ..array import fetch
from ..array.chunks import decode_chunk_into
from ..array.errors import ArrayValueError
from ..client import colours

try:
    from .._vmem import Block
except ImportError:         # no native extension: no view is opened anyway
    Block = None

READAHEAD_UNITS_MAX = 8
ARMED_UNITS_MAX = 1024      # the C side's table
# units of the window looked up in the client cache, at most, by one fault that found
# its own unit's record there (see _arm_cached); a look-up that finds little halves the
# next one's, down to ARM_SCAN_UNITS_MIN
ARM_SCAN_UNITS_MAX = 64
ARM_SCAN_UNITS_MIN = 4
# blocks of touched memory a view keeps for its installs (evicted units' pages, and
# blocks touched ahead by a background thread): at most this many, and a quarter of
# the budget (the C side holds 8 at most)
POOL_BLOCKS_MAX = 8
# map an in-place record's pages in one madvise(MADV_POPULATE_READ) before copying: it
# cost more than the page faults it saves here (2 MiB units: 570 against 380 us)
POPULATE_SOURCE = False


class Unit:
    """One resident unit: the chunks it was read from (``(key, Chunk or None)``),
    whether it is dirty (writable, written since its last write-back), and whether it
    maps the shared zero page (its pages are not worth keeping when it goes)."""

    __slots__ = ("deps", "dirty", "lent", "zero")

    def __init__(self, deps):
        self.deps, self.dirty, self.zero = deps, False, False
        self.lent = None        # a page block's record whose pages the unit holds
                                # (see _adopt: its last item says whether on loan)


class _Armed:
    """A unit read ahead whose cached record was armed for the fault handler."""

    __slots__ = ("lent",)

    def __init__(self, lent):
        self.lent = lent


class DirtyBoundError(ArrayValueError):
    """A write fault found the dirty bytes over their bound with nothing to write back."""


class MappedView:
    """The pages of one window of ``array`` (see :func:`neoarray.vm.mapped`)."""

    def __init__(self, array, window, region_factory, writable, budget_bytes, dirty_bytes_max):
        self.array, self.window, self.writable = array, window, writable
        self.budget_bytes = max(budget_bytes, window.unit_bytes)
        self.dirty_bytes_max = max(dirty_bytes_max, window.unit_bytes)
        self.units: collections.OrderedDict[int, Unit] = collections.OrderedDict()
        self.written: set[int] = set()          # units written back in this transaction
        self.dirty_bytes = 0
        self.faults = self.loads = self.evictions = self.write_backs = 0
        self.zero_loads = 0                     # loads that mapped the shared zero page
        self.adoptions = 0                      # loads that moved a cached block's pages in
        self.fast_loads = 0                     # armed units the fault handler mapped
        self.eager_arms = 0                     # units armed by _arm_cached
        self.cache_hits = 0                     # units found in the client cache by a load
        # units whose cached records were armed for the fault handler (read ahead, see
        # _adopt, or found in the cache, see _arm_cached)
        self.armed: collections.OrderedDict[int, Unit] = collections.OrderedDict()
        self._armed_max = ARMED_UNITS_MAX
        # units (resident or armed) holding a record the cache lent: its bytes count in
        # the cache's budget, not in the view's (the cache's memory, moved)
        self.loaned = 0
        # what this view holds on loan, per storage: ``{id: [storage, record bytes,
        # records]}``; a view freed without close() ends its loans (weakref.finalize)
        self._loans: dict[int, list] = {}
        weakref.finalize(self, _end_loans, self._loans)
        self._arm_cursor = 0                    # the next unit _arm_cached looks at
        self._arm_scan = ARM_SCAN_UNITS_MAX     # how many it looks at, next time
        self._lock = threading.RLock()     # a write-back may fault in a unit next door
        self._fill_units: dict[int, bytes] = {}
        self._hooked = None                     # the transaction holding our commit hook
        self._joined = None                     # the transaction we joined (savepoints)
        self._jar = array._p_jar
        ref = weakref.ref(self)

        def loader(offset, is_write):
            view = ref()
            if view is None:
                raise ArrayValueError("a page fault in a view whose array view was freed")
            view._fault(offset, is_write)
        self.region = region_factory(window.region_bytes, loader, writable)
        self._bytes = np.frombuffer(self.region, dtype=np.uint8)
        self._pool_blocks = max(1, min(POOL_BLOCKS_MAX, self.budget_bytes // 4 // window.unit_bytes))
        self._prefilling = None
        self._writing_back = False
        views = array.__dict__.get("_v_views")
        if views is None:
            views = array._v_views = weakref.WeakSet()
        views.add(self)
        if self._jar is not None:
            _watch(self._jar, self)
            self._jar.transaction_manager.registerSynch(self)

    # ------------------------------------------------------------------ numpy array

    def numpy(self):
        """The window as a numpy array over the region (read-only unless writable)."""
        w = self.window
        flat = self._bytes[:w.nbytes].view(self.array.dtype)
        return flat.reshape(w.shape, order=w.order)

    # ------------------------------------------------------------------ faults

    def _fault(self, offset, is_write):
        """Load or dirty the unit at ``offset``.  ``is_write``: 1 a write, 0 a read, -1
        not known (a write into a clean resident page then faults a second time and is
        taken as a write)."""
        unit = offset // self.window.unit_bytes
        with self._lock:
            self.faults += 1
            self._sync_armed()
            if unit in self.armed:      # a write, or the handler could not map it
                self._unarm(unit)
            state = self.units.get(unit)
            if state is None:
                hits = self.cache_hits
                self._load(unit, is_write == 1 and self.writable)
                if is_write == 1 and self.writable:
                    self._dirty(unit, self.units[unit])
                if self.cache_hits > hits:
                    self._arm_cached()      # the cache holds this array's chunks: more?
            elif not state.dirty and is_write != 0:
                if not self.writable:
                    raise ArrayValueError("a write into a read-only mapped view")
                self._dirty(unit, state)
            # else another thread put the unit in while this one waited for the lock
            self.units.move_to_end(unit)
            self._evict_over_budget(unit)
            if self.loads > self.zero_loads + self.adoptions and (
                    self._own_units() + self.region.pooled) * self.window.unit_bytes < self.budget_bytes:
                self._refill()      # not before the view holds data: zero pages cost nothing

    def _own_units(self):
        """Units (resident or armed) counted in the view's budget: all but those holding
        a record on loan from the cache."""
        return len(self.units) + len(self.armed) - self.loaned

    def _refill(self):
        """Have a background thread touch fresh blocks for the next installs (the first
        touch of fresh memory costs milliseconds per 2 MiB in a VM: off the fault path),
        as many as the budget has room for beside the resident units, up to the pool's
        bound.  Once the budget is full (a scan's steady state), evicted units' pages
        refill the pool instead."""
        size = self.window.unit_bytes
        room = (self.budget_bytes - self._own_units() * size) // size
        blocks = min(self._pool_blocks, room)
        if blocks <= self.region.pooled or (
                self._prefilling is not None and not self._prefilling.done()):
            return
        self._prefilling = fetch._sized_pool("neoarray-vm-prefill", 1).submit(
            self.region.prefill, size, blocks)

    def _dirty(self, unit, state):
        if state.dirty:
            return
        size = self.window.unit_bytes
        if self.dirty_bytes + size > self.dirty_bytes_max:
            self._write_back()      # early write into the transaction, as A[...] = v would
        self.region.protect(unit * size, size, True)
        state.dirty, state.zero = True, False
        self._end_lent(state, False)    # written: the pages are the view's (the block is freed)
        self.dirty_bytes += size
        self._hook()

    def _load(self, unit, writable):
        w = self.window
        if w.slab:
            units = [unit] + [u for u in range(unit + 1, min(unit + 1 + self._readahead(unit), w.units))
                              if u not in self.units and u not in self.armed]
            self._evict_over_budget(unit, len(units) * w.unit_bytes)     # room first
            self._load_slabs(units, writable)
        else:
            self._evict_over_budget(unit, w.unit_bytes)
            self._load_boxes(unit, writable)

    def _arm_cached(self):
        """Arm the window's units whose raw chunk records the client cache holds in page
        blocks: a later read of one, in any order, is then mapped by the fault handler
        itself, without Python (a random-order read of cached chunks costs the move in,
        not the loader).  The records are lent by the cache (their bytes stay counted in
        its budget, up to its share for loans) or, past that, taken while the view's
        budget has room; they go back when unarmed (eviction, a newer snapshot, abort,
        close).  Called by a fault that found its own unit's record in the cache; looks
        at ``ARM_SCAN_UNITS_MAX`` units at most, going round the window from where the
        last call stopped, while the table of armed units has entries; when under a
        quarter of the units it looks up are armed (the cache holds few of the window's
        chunks), the next call looks at half as many."""
        w, size = self.window, self.window.unit_bytes
        if len(self.armed) >= self._armed_max or not w.slab or self.array.codec is not None \
                or Block is None:
            return
        source = fetch.view_source(self.array._p_jar)
        if source is None:
            return
        _jar, read_views, before = source
        storage = getattr(read_views, "__self__", None)
        if getattr(storage, "take_record", None) is None:
            return
        with colours.reading_as(self.array.colour):
            colour = colours.current()
        tree, movable = self.array._tree, _movable(size)
        looked, armed = 0, self.eager_arms
        scan = min(self._arm_scan, w.units)
        while len(self.armed) < self._armed_max and looked < scan:
            unit = self._arm_cursor
            self._arm_cursor = (unit + 1) % w.units
            looked += 1
            if unit in self.units or unit in self.armed:
                continue
            key = w.slab_key(unit)
            chunk = tree.get(key)
            if chunk is None or not fetch._is_loadable_ghost(chunk):
                continue
            lent = _take_lent(storage, chunk._p_oid, before, colour, movable)
            if lent is None:
                continue
            if (not lent[7] and (self._own_units() + 1) * size > self.budget_bytes) \
                    or not self.region.arm(unit * size, lent[2]):
                # no room (the cache's loans full, and the view's budget), the table
                # full, or the block held after all
                _give_back(lent)
                return
            state = self.armed[unit] = Unit([(key, chunk)])
            self._set_lent(state, lent)
            self.eager_arms += 1
        if (self.eager_arms - armed) * 4 < looked:
            self._arm_scan = max(ARM_SCAN_UNITS_MIN, self._arm_scan // 2)
        else:
            self._arm_scan = ARM_SCAN_UNITS_MAX

    def _readahead(self, unit):
        """More units to load with ``unit`` when the faults walk forward."""
        if unit == 0 or (unit - 1) not in self.units:
            return 0
        return min(READAHEAD_UNITS_MAX, self.budget_bytes // (8 * self.window.unit_bytes))

    def _load_slabs(self, units, writable):
        array, w, tree = self.array, self.window, self.array._tree
        found = [(u, w.slab_key(u)) for u in units]
        found = [(u, key, tree.get(key)) for u, key in found]
        stored = [(u, chunk) for u, _, chunk in found if chunk is not None]
        done = self._install_in_place(stored, units[0] if writable else -1, units[0]) if stored else {}
        rest = [(u, chunk) for u, chunk in stored if u not in done]
        payloads = _fetch([c for _, c in rest], array.colour) if rest else []
        data = dict(zip((u for u, _ in rest), payloads))
        for u, key, chunk in found:
            zero = False
            if chunk is None:
                zero = self._install_fill(u, writable and u == units[0])
            elif u in data and array.codec is None:
                self.region.install(u * w.unit_bytes, data[u], writable and u == units[0])
            elif u in data:     # decompressed straight into the staging unit
                self.region.install_filled(
                    u * w.unit_bytes, w.unit_bytes,
                    functools.partial(decode_chunk_into, data[u], array._codec_obj()),
                    writable and u == units[0])
            lent = done.get(u)
            if type(lent) is _Armed:        # read ahead: mapped by the handler when read
                state = self.armed[u] = Unit([(key, chunk)])
                self._set_lent(state, lent.lent)
                continue
            state = self.units[u] = Unit([(key, chunk)])
            state.zero = zero
            self._set_lent(state, lent)
            self.loads += 1

    def _install_in_place(self, stored, writable_unit, first_unit):
        """Install the raw chunks of ``stored`` (``(unit, Chunk)``) without going through
        the fetcher, where the connection reads a snapshot of a storage with
        ``read_views`` (a :class:`~neoarray.client.NeoStorage`).

        A record the client cache holds in a page block (``neoarray._vmem.Block``: its
        payload on pages of its own) is *taken* from the cache and its pages moved into
        the unit (``Region.adopt``: no copy); they go back to the block, and the block
        to the cache, when the unit is evicted clean (:meth:`_drop`).  Other records
        are read in place: a co-located node's LMDB pages, copied once into the unit
        (or, when the colour keeps local copies, once into a page block of the cache,
        which is then moved in), and records received from the network copied from
        where they were received (``align=None``: no copy to align them first).
        Return ``{unit: lent}`` of the units done (``lent``: what :meth:`_drop` needs
        to give the pages back, or None; an ``_Armed`` for a unit read ahead of
        ``first_unit`` whose block was armed for the fault handler instead, which maps
        it without Python when it is read); the others go through the fetcher."""
        array, size = self.array, self.window.unit_bytes
        if array.codec is not None:
            return {}
        ghosts = [(u, c) for u, c in stored if fetch._is_loadable_ghost(c)]
        source = fetch.view_source(array._p_jar) if ghosts else None
        if source is None:
            return {}
        _jar, read_views, before = source
        storage = getattr(read_views, "__self__", None)
        take = getattr(storage, "take_record", None)
        done = {}
        if take is not None and Block is not None:
            with colours.reading_as(array.colour):
                colour = colours.current()
            for u, chunk in ghosts:
                lent = self._adopt(storage, colour, chunk._p_oid, before, u, u == writable_unit,
                                   arm=u != first_unit)
                if lent is not False:
                    done[u] = lent
                    self.cache_hits += 1
            ghosts = [(u, c) for u, c in ghosts if u not in done]
            if not ghosts:
                return done
        blocks = []
        with colours.reading_as(array.colour), read_views(
                [c._p_oid for _, c in ghosts], before, align=None) as views:
            for u, chunk in ghosts:
                hit = views.get(chunk._p_oid)
                if take is not None and hit is not None and _block_of(hit[0]) is not None:
                    blocks.append((u, chunk))       # in the cache now: moved in below
                    del hit                         # (only the cache may hold it then)
                    continue
                view = None if hit is None else fetch.payload_view(hit[0])
                if view is not None and len(view) == size:
                    self.region.install(u * size, view, u == writable_unit, POPULATE_SOURCE)
                    done[u] = None
                del view, hit
            del views
        for u, chunk in blocks:
            lent = self._adopt(storage, colour, chunk._p_oid, before, u, u == writable_unit,
                               arm=u != first_unit)
            if lent is not False:
                done[u] = lent
        return done

    def _adopt(self, storage, colour, oid, before, unit, writable, arm=False):
        """Move the cached page block of ``oid`` into ``unit``: the lent record
        (what :meth:`_drop` gives back), None if the unit was installed by a copy
        (the block could not move), or False if the cache has no such block.  ``arm``
        (a unit read ahead): arm it for the fault handler instead while the table of
        armed units has room (an ``_Armed``)."""
        size = self.window.unit_bytes
        lent = _take_lent(storage, oid, before, colour, _movable(size))
        if lent is None:
            return False
        block = lent[2]
        if arm and self._armed_max:
            if len(self.armed) >= self._armed_max:
                self._unarm(next(iter(self.armed)))     # the oldest armed unit
            if self.region.arm(unit * size, block):
                return _Armed(lent)
        if self.region.adopt(unit * size, block, writable):
            self.adoptions += 1
            return lent
        view = fetch.payload_view(memoryview(block).toreadonly())
        self.region.install(unit * size, view, writable, POPULATE_SOURCE)
        del view
        _give_back(lent)
        return None

    def _load_boxes(self, unit, writable):
        array, w, tree = self.array, self.window, self.array._tree
        first, end, skip = w.unit_items(unit)
        boxes = list(w.boxes(first, end))
        deps = [(key, tree.get(key)) for box in boxes for key in w.chunk_keys(box)]
        self.units[unit] = Unit(deps)
        self.loads += 1
        if all(chunk is None for _, chunk in deps):
            self.units[unit].zero = self._install_fill(unit, writable)
            return
        items = np.empty(end - first, dtype=array.dtype)
        position = 0
        for box in boxes:
            block = array[tuple(slice(a, b) for a, b in box)]
            count = block.size
            items[position:position + count] = block.ravel(order=w.order)
            position += count
        raw = np.zeros(w.unit_bytes, dtype=np.uint8)
        got = items.view(np.uint8)[skip:skip + w.unit_bytes]
        raw[:got.size] = got
        self.region.install(unit * w.unit_bytes, raw, writable)

    def _install_fill(self, unit, writable):
        """Put the fill value in ``unit``; return whether that is the zero page."""
        size = self.window.unit_bytes
        fill = self.array._fill
        if not any(fill):
            self.region.install_zero(unit * size, size)     # the shared zero page
            self.zero_loads += 1
            if writable:
                self.region.protect(unit * size, size, True)
            return True
        phase = unit * size % len(fill)
        raw = self._fill_units.get(phase)
        if raw is None:
            raw = self._fill_units[phase] = (fill * (size // len(fill) + 2))[phase:phase + size]
        self.region.install(unit * size, raw, writable)
        return False

    def _evict_over_budget(self, keep, incoming_bytes=0):
        """Give back the oldest clean units (but ``keep``) until the units counted in the
        budget (resident or armed, but for those on loan from the cache: see
        :meth:`_own_units`) and ``incoming_bytes`` fit it (armed units go first, back
        to the cache)."""
        size = self.window.unit_bytes
        resident = self._own_units() * size + incoming_bytes
        if resident + self.region.pooled * size > self.budget_bytes:
            # pooled blocks fit beside the units or go (units moved in need none)
            self.region.trim_pool(max(0, self.budget_bytes - resident) // size)
        if resident <= self.budget_bytes:
            return
        for unit in [u for u, state in self.armed.items() if not _on_loan(state)]:
            if resident <= self.budget_bytes:
                break
            self._unarm(unit)
            if unit not in self.units:      # (else the handler had mapped it: resident)
                resident -= size
        # the oldest units that count (not a copy of all of them at every fault)
        victims = []
        for unit, state in self.units.items():
            if resident <= self.budget_bytes:
                break
            if unit != keep and not state.dirty and not _on_loan(state):
                victims.append(unit)
                resident -= size
        for unit in victims:
            self._drop(unit)
            self.evictions += 1

    def _drop(self, unit):
        """Give a unit's pages back: its next touch loads it again."""
        state = self.units.pop(unit, None)
        if state is None:
            return
        size = self.window.unit_bytes
        if state.dirty:
            self.dirty_bytes -= size
        if state.lent is not None:
            # the pages of a cached record: back to their block, and it to the cache
            self._end_lent(state, self.region.give_back(unit * size, state.lent[2]))
            return
        # keep the pages for the next install (warm memory): the pool's bound at most
        recycle = not state.zero and self.region.pooled < self._pool_blocks
        self.region.evict(unit * size, size, recycle)

    def _set_lent(self, state, lent):
        state.lent = lent
        if lent is not None and lent[7]:
            self.loaned += 1
            loan = self._loans.setdefault(id(lent[0]), [lent[0], 0, 0])
            loan[1] += len(lent[2])
            loan[2] += 1

    def _end_lent(self, state, back):
        """The unit lets its cached record go: ``back`` to the cache (its block at home),
        or kept for good (its pages written, or lost): its loan, if any, ends."""
        if state.lent is None:
            return
        lent, state.lent = state.lent, None
        storage, block, loaned = lent[0], lent[2], lent[7]
        if loaned:
            self.loaned -= 1
            loan = self._loans[id(storage)]
            loan[1] -= len(block)
            loan[2] -= 1
            if not loan[2]:
                del self._loans[id(storage)]
        if back:
            _give_back(lent)
        elif loaned:
            storage.end_loan(len(block))

    def _sync_armed(self):
        """Armed units the fault handler mapped since the last look become resident."""
        if not self.armed:
            return
        size = self.window.unit_bytes
        for offset, _block, _mapped in self.region.take_mapped():
            unit = offset // size
            self.units[unit] = self.armed.pop(unit)
            self.fast_loads += 1

    def _unarm(self, unit):
        """Take ``unit`` out of the table of armed units: resident if the handler mapped
        it meanwhile, else its record goes back to the cache."""
        state = self.armed.pop(unit)
        got = self.region.disarm(unit * self.window.unit_bytes)
        if got is not None and got[2]:
            self.units[unit] = state
            self.fast_loads += 1
        elif got is not None:
            self._end_lent(state, True)

    def _unarm_all(self):
        for unit in list(self.armed):
            self._unarm(unit)

    # ------------------------------------------------------------------ writes

    def _write_back(self):
        """Write the dirty units into the array (its chunks, in the current transaction,
        by the array's own write path); they become clean, read-only pages."""
        self._writing_back = True
        try:
            self._write_dirty()
        finally:
            self._writing_back = False

    def chunk_written(self, key):
        """Chunk ``key`` of the array was written (``A[...] = x``, or another view's
        write-back): clean units read from it fault again.  Dirty ones keep this view's
        writes, which its write-back puts over the chunk at commit."""
        if self._writing_back:
            return
        with self._lock:
            if self.region.closed:
                return
            self._sync_armed()
            self._unarm_all()
            for unit, state in list(self.units.items()):
                if not state.dirty and any(k == key for k, _ in state.deps):
                    self._drop(unit)

    def _write_dirty(self):
        w, array = self.window, self.array
        size = w.unit_bytes
        for unit, state in list(self.units.items()):
            if not state.dirty:
                continue
            raw = self._bytes[unit * size:(unit + 1) * size]
            if w.slab:
                key = w.slab_key(unit)
                block = raw.view(array.dtype).reshape(array.chunks, order=w.order)
                array._store_chunk(key, block, array._tree.get(key))
            else:
                self._write_boxes(unit, raw)
            self.region.protect(unit * size, size, False)
            state.dirty = False
            self.dirty_bytes -= size
            self.written.add(unit)
            self.write_backs += 1

    def _write_boxes(self, unit, raw):
        w, array = self.window, self.array
        first, end, _ = w.unit_items(unit)
        # items cut by the unit's edges are written whole, from the view's bytes
        lo = first * w.itemsize
        items = self._bytes[lo:lo + (end - first) * w.itemsize].view(array.dtype)
        position = 0
        for box in w.boxes(first, end):
            shape = tuple(b - a for a, b in box)
            count = int(np.prod(shape))
            array[tuple(slice(a, b) for a, b in box)] = items[position:position + count].reshape(
                shape, order=w.order)
            position += count

    def flush(self):
        """Write the dirty pages into the array now (commit does it by itself)."""
        with self._lock:
            self._write_back()

    def _hook(self):
        if self._jar is None:
            return
        txn = self._jar.transaction_manager.get()
        if self._hooked is not txn:
            txn.addBeforeCommitHook(self.flush)
            self._hooked = txn
        if self._joined is not txn:
            txn.join(_ViewResource(self))      # for savepoints: see _ViewResource
            self._joined = txn

    # ------------------------------------------------------------------ savepoints

    def _savepoint_state(self):
        """What a savepoint keeps of the view: a copy of each dirty unit (bytes, chunks
        read), and the units written back so far in the transaction."""
        with self._lock:
            if self.region.closed:
                return None
            size = self.window.unit_bytes
            dirty = {unit: (self._bytes[unit * size:(unit + 1) * size].tobytes(), state.deps)
                     for unit, state in self.units.items() if state.dirty}
            return dirty, set(self.written)

    def _roll_back(self, saved):
        """Back to a savepoint: every resident unit goes (the clean ones fault in again
        from the chunks, which the connection rolls back), and the units dirty at the
        savepoint get their bytes of then, dirty again.  ``saved`` None: the view was
        clean at the savepoint (it joined the transaction later)."""
        with self._lock:
            if self.region.closed:
                return
            self._sync_armed()
            self._unarm_all()
            for unit in list(self.units):
                self._drop(unit)
            self.written = set()
            if saved is None:
                return
            dirty, written = saved
            size = self.window.unit_bytes
            self.written = set(written)
            for unit, (raw, deps) in dirty.items():
                self.region.install(unit * size, raw, True)
                state = self.units[unit] = Unit(deps)
                state.dirty = True
                self.dirty_bytes += size
            if dirty:
                self._hook()

    # ------------------------------------------------------------------ transactions
    # a synchronizer of the connection's transaction manager (weakly held by it)

    def beforeCompletion(self, txn):
        pass

    def newTransaction(self, txn):
        pass

    def afterCompletion(self, txn):
        with self._lock:
            self._hooked = self._joined = None
            if self.region.closed:
                return
            self._sync_armed()
            if txn.status is not Status.COMMITTED:
                self._unarm_all()
            if txn.status is Status.COMMITTED:
                self.written.clear()
                return
            for unit in list(self.written) + [u for u, s in self.units.items() if s.dirty]:
                self._drop(unit)        # aborted: the snapshot's bytes fault in again
            self.written.clear()

    def invalidated(self, oids):
        """The connection moved to a newer snapshot; ``oids`` changed (None: all may
        have).  Units read from a changed chunk, or from a chunk then unwritten that is
        now written, are dropped."""
        with self._lock:
            if self.region.closed:
                return
            self._sync_armed()
            self._unarm_all()       # armed records are of the snapshot left behind
            tree = self.array._tree
            for unit, state in list(self.units.items()):
                if state.dirty:
                    continue        # the commit conflicts instead
                if oids is None or any(
                        (chunk is None and tree.get(key) is not None)
                        or (chunk is not None and chunk._p_oid in oids)
                        for key, chunk in state.deps):
                    self._drop(unit)

    # ------------------------------------------------------------------ teardown

    def close(self):
        """Write dirty pages into the array (a detached array has no commit to do it) and
        unmap (at once, or when the last numpy array over the window goes)."""
        if self.region.closed:
            return
        if self.writable:
            self.flush()
        with self._lock:
            self._sync_armed()
            self._unarm_all()
            for unit in [u for u, state in self.units.items() if state.lent is not None]:
                self._drop(unit)        # cached records' pages back to the cache
            self.units.clear()
            self._bytes = None
            self.region.close()
        if self._jar is not None:
            self._jar.transaction_manager.unregisterSynch(self)

    def stats(self):
        """Counters: faults, loads, evictions, write-backs, resident and dirty bytes."""
        with self._lock:
            self._sync_armed()
        return {"faults": self.faults, "loads": self.loads, "evictions": self.evictions,
                "adoptions": self.adoptions, "fast_loads": self.fast_loads,
                "armed": len(self.armed), "eager_arms": self.eager_arms,
                "loaned_bytes": self.loaned * self.window.unit_bytes,
                "pooled_bytes": 0 if self.region.closed else self.region.pooled * self.window.unit_bytes,
                "write_backs": self.write_backs, "dirty_bytes": self.dirty_bytes,
                "resident_bytes": len(self.units) * self.window.unit_bytes,
                "unit_bytes": self.window.unit_bytes}


class _ViewResource:
    """A view's part in its transaction, joined at its first dirty page: only for
    savepoints (commit writes the dirty pages through the before-commit hook, and
    ``afterCompletion`` drops them at abort).  A savepoint keeps a copy of the dirty
    units (as many bytes as are dirty: bounded by ``dirty_bytes_max``); its
    ``rollback()`` brings the view's pages back to then.  Rolling back a savepoint taken
    before the view joined calls :meth:`abort`: every page goes back to the chunks."""

    def __init__(self, view):
        self._view = weakref.ref(view)
        self.transaction_manager = view._jar.transaction_manager

    def abort(self, txn):
        view = self._view()
        if view is not None:
            view._joined = None     # rolled back to before it joined (or aborted)
            view._roll_back(None)

    def savepoint(self):
        view = self._view()
        internal = view is None or view._writing_back     # a spill during our write-back
        return _ViewSavepoint(view, None if internal else view._savepoint_state())

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        pass

    def tpc_finish(self, txn):
        pass

    def tpc_abort(self, txn):
        pass

    def sortKey(self):
        return f"~neoarray.vm.view:{id(self)}"


class _ViewSavepoint:
    """What ``transaction.savepoint()`` keeps of a view (see :class:`_ViewResource`)."""

    def __init__(self, view, saved):
        self._view = None if view is None else weakref.ref(view)
        self._saved = saved

    def rollback(self):
        view = None if self._view is None else self._view()
        if view is not None:
            view._roll_back(self._saved)


def _fetch(chunks, colour):
    """The payloads of ``chunks``, loaded on this thread: the fault waits for them
    anyway, and a hand-off to the read-ahead thread costs more than it saves.  Chunks
    in memory (a detached array's, or loaded already) are read as the default fetcher
    reads them (no ghost among them: nothing to load), without its set-up."""
    fetcher = fetch.get_fetcher()
    if type(fetcher) is fetch.StorageChunkFetcher and not any(
            c._p_changed is None for c in chunks):
        return [c.payload for c in chunks]
    with colours.reading_as(colour):
        return fetcher.fetch(chunks)


def _watch(jar, view):
    """Have ``view`` told of the oids each new snapshot of ``jar`` invalidates: the
    connection's storage instance reports them by ``poll_invalidations``, which the
    connection calls when it moves to a newer transaction; the pickle cache is
    invalidated first, so the view's tree lookups see the new snapshot."""
    storage = jar._storage
    views = getattr(storage, "_neoarray_views", None)
    if views is None:
        views = weakref.WeakSet()
        original = storage.poll_invalidations

        def poll_invalidations():
            oids = original()
            changed = None if oids is None else set(oids)     # the cache empties the list
            if changed:
                jar._cache.invalidate(list(changed))
            if changed is None or changed:
                for v in list(views):
                    v.invalidated(changed)
            return oids
        storage.poll_invalidations = poll_invalidations
        storage._neoarray_views = views
    views.add(view)



def _end_loans(loans):
    """A view is freed: the records it held on loan will not come back (their pages
    went with its region)."""
    for storage, record_bytes, records in loans.values():
        storage.end_loan(record_bytes, records)
    loans.clear()


def _take_lent(storage, oid, before, colour, movable):
    """Take (or borrow) the cached page block of ``oid`` as of ``before`` when
    ``movable``: ``(storage, oid, block, serial, next_serial, token, colour, on loan)``
    (a unit's ``lent``), or None when the cache holds no such block."""
    got = storage.take_record(oid, before, colour, movable, lend=True)
    if got is None:
        return None
    record, serial, next_serial, token, loaned = got
    block = record.obj
    record.release()        # the cache's view: the block moves if nothing else holds one
    del record
    return (storage, oid, block, serial, next_serial, token, colour, loaned)


def _give_back(lent):
    """Return the record of ``lent`` (see :func:`_take_lent`) to the cache."""
    storage, oid, block, serial, next_serial, token, colour, loaned = lent
    storage.give_back_record(oid, memoryview(block).toreadonly(), serial, next_serial, token, colour, loaned)


def _on_loan(state):
    """Whether a unit holds a record on loan from the cache (not in the view's budget)."""
    return state.lent is not None and state.lent[7]


def _block_of(record):
    """The page block under ``record`` (a memoryview of a ``Block``), or None."""
    return record.obj if isinstance(record, memoryview) and type(record.obj) is Block else None


def _movable(unit_bytes):
    """Whether a cached record is a page block whose payload is one unit."""
    def movable(record):
        block = _block_of(record)
        return block is not None and block.payload_bytes == unit_bytes and not block.lent
    return movable
