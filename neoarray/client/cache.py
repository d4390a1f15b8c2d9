"""The client's coloured cache: several revisions per object, one byte budget, colours.

One budget per client (``bytes_max``) is split into named *colours*, each with a
quota (its share of the budget) and an eviction policy suited to its access pattern:

``meta``  (LRU)
    small objects: ZODB loads that name no colour, BTree nodes, array headers.
``hot``   (S3-FIFO: recency and frequency)
    random re-use; one-hit wonders go through a small probation queue, so a burst of
    new objects cannot flush what is read again and again.
``scan``  (FIFO)
    streaming: each record read once; it keeps the latest records only.

Users may add colours (:meth:`ColouredCache.add_colour`), and ``aliases`` map a
name to another colour (``{"scan": "hot"}``: scans share the hot colour; one colour
with every name aliased to it is a plain cache of the whole budget).  A colour under its quota
is never evicted to make room for another: when the budget is full, the victim is
taken from the colour most over its quota.  Unused quota may therefore be borrowed
(a colour grows past its quota while there is room) and is given back under
pressure.  An entry bigger than ``entry_bytes_max`` of its colour (a quarter of the
quota by default) is not kept.

Every read says its colour (:mod:`neoarray.client.colours`); a hit counts for the
colour holding the entry, a miss for the colour asked.  An object lives in one
colour: a ``put`` in another colour moves it there.

Revisions and invalidations (the contract the storage relies on):

- ``get(oid, before)``: the cached revision visible to a snapshot ending before
  ``before`` (``serial < before`` and ``next_serial`` unknown-or-``>= before``), as
  ``(data, serial, next_serial)``, or ``None``.  ``get_serial(oid, serial)`` likewise.
- ``start_load()`` returns a token to pass to ``put`` for an answer fetched after it:
  if ``oid`` was invalidated meanwhile, a "current" answer (``next_serial`` None) is
  not cached, since it may already be stale.
- ``invalidate(oids, tid)``: the current revision of each oid ends at ``tid``.
- The cache owns nothing it returns: data are immutable (``bytes`` or read-only
  buffers).
- ``take(oid, before, movable)``: the visible revision *leaves* the cache and is
  returned with a token, if ``movable(data)`` and nothing but the cache holds it: a
  mapped view moves the pages of such a record into its window instead of copying
  them (``neoarray.vm``), and ``put``s it back (with the token) when it lets them go.
  ``take(..., lend=True)`` *lends* it instead while the records on loan fit
  ``LOANED_SHARE_MAX`` of the budget: its bytes stay counted against the budget
  (``loaned_bytes``: other entries are evicted to keep ``bytes + loaned_bytes`` within
  ``bytes_max``) until it comes back, ``put(..., loaned=True)``, or its holder keeps
  it for good, ``end_loan(record_bytes)``.  A mapped view so holds cached records
  without counting them in its own budget: they are the cache's memory, moved.
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict

REVISIONS_PER_OID_MAX = 8
RECENT_INVALIDATIONS_MAX = 100_000
ENTRY_OVERHEAD_BYTES = 64           # per revision: bookkeeping counted against the budget
GHOSTS_MIN = 1024                   # S3-FIFO: oids remembered after eviction, at least
FREQUENCY_MAX = 3
# records on loan (see take): at most this share of the budget, so that a mapped view
# holding cached records leaves the rest of the cache to other reads
LOANED_SHARE_MAX = 0.5

# an entry: (revisions, bytes counted, colour name); the revisions are a tuple of
# ``(serial, next_serial, data)`` sorted by serial
REVS, SIZE, COLOUR = 0, 1, 2

DEFAULT_COLOURS = (("meta", 0.10, "lru"), ("hot", 0.60, "s3fifo"), ("scan", 0.30, "fifo"))


class CacheConfigError(ValueError):
    """A colour, policy or share that the cache cannot use."""


# -- eviction policies --------------------------------------------------------------
# A policy orders the oids of one colour: ``insert`` a new one, ``hit`` one that was
# read, ``remove`` one dropped by the cache, ``grew(oid, delta)`` when its size
# changed, and ``evict()``: take the next victim out (its oid, or None when empty).
# Policies hold oids and small ints, never an object per entry, and read the sizes
# from the cache's ``entries`` (oid -> ``(revs, size, colour)``): nothing of the cache's
# bookkeeping is an object the garbage collector tracks (see ``ColouredCache``).

class LRUPolicy:
    name = "lru"

    def __init__(self, entries: dict):
        self.order: OrderedDict[bytes, None] = OrderedDict()

    def insert(self, oid):
        self.order[oid] = None

    def hit(self, oid):
        self.order.move_to_end(oid)

    def remove(self, oid):
        del self.order[oid]

    def grew(self, oid, delta):
        pass

    def evict(self):
        return self.order.popitem(last=False)[0] if self.order else None


class FIFOPolicy(LRUPolicy):
    """Insertion order only: reads do not keep an entry longer (streaming data)."""

    name = "fifo"

    def hit(self, oid):
        pass


class S3FIFOPolicy:
    """S3-FIFO (Yang et al., SOSP 2023): a small probation FIFO, a main FIFO, ghosts.

    New objects enter the small queue (a tenth of the colour's bytes); one read again
    before reaching its head moves to the main queue, the others are evicted and
    remembered as ghosts, and a ghost that comes back enters the main queue directly.
    The main queue gives entries read since their last pass another round (a 2-bit
    frequency).  Each queue maps an oid to its frequency.
    """

    name = "s3fifo"
    SMALL_SHARE = 0.10

    def __init__(self, entries: dict):
        self.entries = entries
        self.small: OrderedDict[bytes, int] = OrderedDict()
        self.main: OrderedDict[bytes, int] = OrderedDict()
        self.ghosts: OrderedDict[bytes, None] = OrderedDict()
        self.small_bytes = self.main_bytes = 0

    def insert(self, oid):
        size = self.entries[oid][SIZE]
        if oid in self.ghosts:      # evicted recently, wanted again: not a one-hit wonder
            del self.ghosts[oid]
            self.main[oid] = 0
            self.main_bytes += size
        else:
            self.small[oid] = 0
            self.small_bytes += size

    def hit(self, oid):
        queue = self.small
        freq = queue.get(oid)
        if freq is None:
            queue = self.main
            freq = queue[oid]
        if freq < FREQUENCY_MAX:
            queue[oid] = freq + 1       # an update keeps its place

    def remove(self, oid):
        if oid in self.small:
            del self.small[oid]
            self.small_bytes -= self.entries[oid][SIZE]
        else:
            del self.main[oid]
            self.main_bytes -= self.entries[oid][SIZE]

    def grew(self, oid, delta):
        if oid in self.small:
            self.small_bytes += delta
        else:
            self.main_bytes += delta

    def _remember(self, oid):
        self.ghosts[oid] = None
        while len(self.ghosts) > max(GHOSTS_MIN, len(self.small) + len(self.main)):
            self.ghosts.popitem(last=False)

    def evict(self):
        entries = self.entries
        while self.small or self.main:
            total = self.small_bytes + self.main_bytes
            if self.small and (self.small_bytes >= self.SMALL_SHARE * total or not self.main):
                oid, freq = self.small.popitem(last=False)
                size = entries[oid][SIZE]
                self.small_bytes -= size
                if freq > 0:
                    self.main[oid] = 0
                    self.main_bytes += size
                    continue
                self._remember(oid)
                return oid
            oid, freq = self.main.popitem(last=False)
            if freq > 0:
                self.main[oid] = freq - 1
                continue
            self.main_bytes -= entries[oid][SIZE]
            return oid
        return None


POLICIES = {p.name: p for p in (LRUPolicy, FIFOPolicy, S3FIFOPolicy)}


class Colour:
    """One colour: its share of the budget, its policy and its statistics."""

    def __init__(self, name: str, share: float, policy: str, copy_local: bool, entries: dict):
        if not name or not isinstance(name, str):
            raise CacheConfigError(f"a colour needs a non-empty name, not {name!r}")
        if not (isinstance(share, (int, float)) and share > 0):
            raise CacheConfigError(f"colour {name!r}: share must be > 0, not {share!r}")
        if policy not in POLICIES:
            raise CacheConfigError(f"colour {name!r}: unknown policy {policy!r} "
                                   f"(known: {', '.join(sorted(POLICIES))})")
        self.name = name
        self.share = float(share)
        self.policy_name = policy
        self.policy = POLICIES[policy](entries)
        self.copy_local = copy_local
        self.quota_bytes = 0
        self.bytes = 0
        self.objects = 0
        self.hits = self.misses = self.evictions = 0

    @property
    def entry_bytes_max(self) -> int:
        return self.quota_bytes // 4

    def stats(self) -> dict:
        return {"policy": self.policy_name, "quota_bytes": self.quota_bytes, "bytes": self.bytes,
                "borrowed_bytes": max(0, self.bytes - self.quota_bytes), "objects": self.objects,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "hit_rate": self.hits / max(1, self.hits + self.misses),
                "copy_local": self.copy_local}


def parse_colours(spec) -> list[tuple[str, float, str]]:
    """Colours from ``"name:share:policy,..."`` or an iterable of such triples."""
    if spec is None:
        return list(DEFAULT_COLOURS)
    if isinstance(spec, str):
        out = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            fields = part.split(":")
            if len(fields) != 3:
                raise CacheConfigError(f"cache colour {part!r}: expected name:share:policy")
            try:
                share = float(fields[1])
            except ValueError:
                raise CacheConfigError(f"cache colour {part!r}: share {fields[1]!r} is not a number") from None
            out.append((fields[0], share, fields[2]))
        return out
    return [tuple(c) for c in spec]


class ColouredCache:
    """A multi-revision object cache of ``bytes_max`` bytes split into colours.

    Its bookkeeping is one dict, ``entries``, of oid -> ``(revs, size, colour)``: the
    revisions (a tuple of ``(serial, next_serial, data)`` sorted by serial), the bytes
    counted and the colour's name, a tuple replaced when any of them changes; and the
    colours' policies, which hold oids and ints.  Bytes, ints, strings and tuples of
    them: the garbage collector stops tracking them once it has seen them.  An object
    per entry would make every full collection of the process walk one more object
    per cached record (a client that committed 80,000 new objects spent 36 ms in each
    full collection, two thirds of it on the cache's entries); three dicts instead of
    one would make a hit look up three (a fifth slower with 200,000 records).
    """

    def __init__(self, bytes_max: int, colours=None, default_colour: str = "meta", aliases=None):
        if bytes_max < 0:
            raise CacheConfigError(f"cache_bytes_max must be >= 0, not {bytes_max}")
        self.bytes_max = bytes_max
        self.bytes = 0
        self.loaned_bytes = 0       # records lent by take(lend=True), still counted
        self._loans_ended: list[int] = []      # bytes of loans ended (see end_loan)
        self.lock = threading.Lock()
        self.entries: dict[bytes, tuple] = {}
        self.colours: dict[str, Colour] = {}
        self.aliases: dict[str, str] = {}
        for name, share, policy in parse_colours(colours):
            self._add(name, share, policy)
        if not self.colours:
            raise CacheConfigError("the cache needs at least one colour")
        self.aliases = dict(aliases or {})
        for alias, target in self.aliases.items():
            if alias in self.colours or target not in self.colours:
                raise CacheConfigError(f"cache colour alias {alias!r} -> {target!r}: the alias must "
                                       f"not be a colour and the target must be one")
        if self.aliases.get(default_colour, default_colour) not in self.colours:
            raise CacheConfigError(f"default colour {default_colour!r} is not one of "
                                   f"{', '.join(self.colours)}")
        self.default_colour = self.aliases.get(default_colour, default_colour)
        self._rebalance()
        self.seq = 0
        self.recent: OrderedDict[bytes, int] = OrderedDict()    # oid -> seq of last invalidation
        self.floor = 0    # loads started before this seq cannot tell: not cached as current

    # -- colours ----------------------------------------------------------------------
    def _add(self, name, share, policy, copy_local=None):
        if name in self.colours or name in self.aliases:
            raise CacheConfigError(f"colour {name!r} is defined twice")
        if copy_local is None:
            copy_local = policy != "fifo"
        self.colours[name] = Colour(name, share, policy, copy_local, self.entries)

    def _rebalance(self):
        total = sum(c.share for c in self.colours.values())
        for c in self.colours.values():
            c.quota_bytes = int(self.bytes_max * c.share / total)

    def add_colour(self, name: str, share: float, policy: str = "lru", copy_local: bool | None = None) -> None:
        """Add a colour with ``share`` (a weight: quotas are shares of the budget)."""
        with self.lock:
            self._add(name, share, policy, copy_local)
            self._rebalance()
            self._evict()

    def colour(self, name: str | None) -> Colour:
        """The colour called ``name`` (the default for None); an unknown name is an error."""
        name = name or self.default_colour
        try:
            return self.colours[self.aliases.get(name, name)]
        except KeyError:
            raise CacheConfigError(f"unknown cache colour {name!r} (known: {', '.join(self.colours)})") from None

    def keeps_local_copies(self, name: str | None) -> bool:
        """Whether records read in place from a local node are copied into colour ``name``."""
        c = self.colour(name)
        return c.copy_local and c.entry_bytes_max > 0

    # -- reads ------------------------------------------------------------------------
    def get(self, oid: bytes, before: bytes, colour: str | None = None):
        with self.lock:
            entry = self.entries.get(oid)
            if entry is not None:
                for serial, nxt, data in reversed(entry[REVS]):
                    if serial < before and (nxt is None or nxt >= before):
                        return self._hit(oid, entry, (data, serial, nxt))
            self.colour(colour).misses += 1
            return None

    def get_serial(self, oid: bytes, serial: bytes, colour: str | None = None):
        with self.lock:
            entry = self.entries.get(oid)
            if entry is not None:
                for s, nxt, data in entry[REVS]:
                    if s == serial:
                        return self._hit(oid, entry, (data, s, nxt))
            self.colour(colour).misses += 1
            return None

    def take(self, oid: bytes, before: bytes, colour: str | None = None, movable=None,
             lend: bool = False):
        """Remove the revision of ``oid`` visible before ``before`` and return it as
        ``(data, serial, next_serial, token, loaned)``, or None: when there is none,
        when ``movable(data)`` is false, or when anything besides the cache holds
        ``data`` (a reader that got it from :meth:`get` and still uses it).  Give it
        back with ``put(oid, data, serial, next_serial, token, colour, loaned)``.
        ``lend``: lend it (``loaned`` True: its bytes stay counted, see the module's
        docstring) when the records on loan leave room for it, else take it."""
        with self.lock:
            entry = self.entries.get(oid)
            if entry is None:
                self.colour(colour).misses += 1
                return None
            revs = entry[REVS]
            for index, rev in enumerate(revs):
                if rev[0] < before and (rev[1] is None or rev[1] >= before):
                    break
            else:
                self.colour(colour).misses += 1
                return None
            serial, nxt, data = rev
            del rev, entry
            # references: the revision's tuple, ``data``, and getrefcount's argument
            if (movable is not None and not movable(data)) or sys.getrefcount(data) > 3:
                return None
            c = self.colours[self.entries[oid][COLOUR]]
            c.hits += 1
            revs = revs[:index] + revs[index + 1:]
            size = len(data) + ENTRY_OVERHEAD_BYTES
            self._set(oid, c, revs, -size)
            if not revs:
                c.policy.remove(oid)
                self._drop(oid, c, evicted=False)
            self._settle_loans()
            loaned = lend and self.loaned_bytes + size <= self.bytes_max * LOANED_SHARE_MAX
            if loaned:
                self.loaned_bytes += size
            return data, serial, nxt, self.seq, loaned

    def end_loan(self, record_bytes: int, records: int = 1) -> None:
        """``records`` records of ``record_bytes`` in all lent by :meth:`take` will not
        come back: their bytes no longer count (from the cache's next operation on: this
        takes no lock, since a finalizer may call it anywhere, even in a thread holding
        the lock)."""
        self._loans_ended.append(record_bytes + records * ENTRY_OVERHEAD_BYTES)

    def _settle_loans(self) -> None:
        """Loans ended by :meth:`end_loan` no longer count (``lock`` held)."""
        while self._loans_ended:
            self.loaned_bytes = max(0, self.loaned_bytes - self._loans_ended.pop())

    def _hit(self, oid, entry, found):
        c = self.colours[entry[COLOUR]]
        c.hits += 1
        c.policy.hit(oid)
        return found

    # -- writes -----------------------------------------------------------------------
    def start_load(self) -> int:
        with self.lock:
            return self.seq

    def put(self, oid: bytes, data, serial: bytes, next_serial: bytes | None,
            token: int | None = None, colour: str | None = None, loaned: bool = False) -> None:
        """Cache ``data`` as the revision ``serial`` of ``oid``; ``loaned``: a record
        :meth:`take` lent, back (its loan ends, whether it is kept or not)."""
        with self.lock:
            if loaned:
                self._loans_ended.append(len(data) + ENTRY_OVERHEAD_BYTES)
                self._settle_loans()
            self._put(oid, data, serial, next_serial, token, colour)

    def _put(self, oid, data, serial, next_serial, token, colour, evict: bool = True) -> None:
        """``put`` with ``lock`` held; ``evict=False``: the caller makes room."""
        size = len(data) + ENTRY_OVERHEAD_BYTES
        c = self.colour(colour)
        if next_serial is None and token is not None and self._invalidated_since(oid, token):
            return
        entry = self.entries.get(oid)
        if entry is not None:
            old = entry[REVS]
            for index, rev in enumerate(old):
                if rev[0] == serial:
                    if next_serial is not None:
                        self.entries[oid] = ((*old[:index], (serial, next_serial, rev[2]), *old[index + 1:]),
                                             entry[SIZE], entry[COLOUR])
                    return
            if entry[COLOUR] != c.name:
                self._move(oid, c)
        if size > c.entry_bytes_max:
            return
        if entry is None:
            self._new_entry(oid, c)
            old = ()
        revs = sorted((*old, (serial, next_serial, data)), key=lambda r: r[0])
        delta = size
        while len(revs) > REVISIONS_PER_OID_MAX:
            delta -= len(revs.pop(0)[2]) + ENTRY_OVERHEAD_BYTES
        self._set(oid, c, tuple(revs), delta)
        if evict:
            self._evict()

    def _new_entry(self, oid, c) -> None:
        """An empty entry of ``oid`` in colour ``c``, held and known to its policy."""
        self.entries[oid] = ((), 0, c.name)
        c.objects += 1
        c.policy.insert(oid)

    def _set(self, oid, c, revs, delta):
        """``oid``'s revisions become ``revs``, its size grows by ``delta`` (in ``c``)."""
        entry = self.entries[oid]
        self.entries[oid] = (revs, entry[SIZE] + delta, entry[COLOUR])
        c.bytes += delta
        self.bytes += delta
        c.policy.grew(oid, delta)

    def _move(self, oid, to):
        entry = self.entries[oid]
        old = self.colours[entry[COLOUR]]
        size = entry[SIZE]
        old.policy.remove(oid)
        old.bytes -= size
        old.objects -= 1
        self.entries[oid] = (entry[REVS], size, to.name)
        to.bytes += size
        to.objects += 1
        to.policy.insert(oid)

    def _drop(self, oid, c, evicted: bool):
        """Forget ``oid`` (its policy already let it go)."""
        size = self.entries.pop(oid)[SIZE]
        c.bytes -= size
        c.objects -= 1
        self.bytes -= size
        if evicted:
            c.evictions += 1

    def _invalidated_since(self, oid, token) -> bool:
        return token < self.floor or self.recent.get(oid, -1) > token

    def _evict(self) -> None:
        """Make room (for the entries and the records on loan): victims come from the
        colour most over its quota."""
        self._settle_loans()
        while self.bytes + self.loaned_bytes > self.bytes_max and self.bytes > 0:
            c = max((c for c in self.colours.values() if c.bytes > 0),
                    key=lambda c: c.bytes - c.quota_bytes)
            oid = c.policy.evict()
            if oid is None:      # nothing left to evict there: accounting says otherwise
                raise AssertionError(f"cache colour {c.name} holds {c.bytes} bytes and no entry")
            self._drop(oid, c, evicted=True)

    def invalidate(self, oids, tid: bytes) -> None:
        with self.lock:
            self._invalidate(oids, tid)

    def _invalidate(self, oids, tid: bytes) -> None:
        """``invalidate`` with ``lock`` held."""
        self.seq += 1
        recent, entries = self.recent, self.entries
        for oid in oids:
            recent[oid] = self.seq
            recent.move_to_end(oid)
            entry = entries.get(oid)
            if entry is not None and any(nxt is None and serial < tid for serial, nxt, _ in entry[REVS]):
                entries[oid] = (tuple((serial, tid if nxt is None and serial < tid else nxt, data)
                                      for serial, nxt, data in entry[REVS]), entry[SIZE], entry[COLOUR])
        while len(recent) > RECENT_INVALIDATIONS_MAX:
            self.floor = recent.popitem(last=False)[1]

    def committed(self, written, tid: bytes, colour: str | None = None) -> None:
        """This client committed ``tid``: for each ``(oid, data)`` of ``written``, older
        revisions of ``oid`` end at ``tid`` and ``data`` (None: not kept) becomes its
        revision at ``tid``; under one hold of the lock, making room once at the end
        (a commit of many new objects puts an entry each, without the checks a load's
        ``put`` needs), so the cache may hold one transaction's records over its budget
        for that while: the transaction holds them anyway."""
        with self.lock:
            self._invalidate([oid for oid, _ in written], tid)
            c = self.colour(colour)
            name, policy, entry_max, entries = c.name, c.policy, c.entry_bytes_max, self.entries
            added = 0
            for oid, data in written:
                if data is None:
                    continue
                size = len(data) + ENTRY_OVERHEAD_BYTES
                if oid in entries or size > entry_max:
                    self._put(oid, data, tid, None, None, colour, evict=False)
                    continue
                # a new object, or one this cache did not hold: _new_entry and _set at once
                entries[oid] = (((tid, None, data),), size, name)
                policy.insert(oid)
                c.objects += 1
                added += size
            c.bytes += added
            self.bytes += added
            self._evict()

    def forget(self, oid: bytes) -> None:
        with self.lock:
            entry = self.entries.get(oid)
            if entry is not None:
                c = self.colours[entry[COLOUR]]
                c.policy.remove(oid)
                self._drop(oid, c, evicted=False)

    def clear(self) -> None:
        with self.lock:
            self.seq += 1
            for oid, entry in list(self.entries.items()):
                c = self.colours[entry[COLOUR]]
                c.policy.remove(oid)
                self._drop(oid, c, evicted=False)
            self.recent.clear()
            self.floor = self.seq

    def stats(self) -> dict:
        """Totals, and ``colours``: per colour policy, quota, bytes, hits, misses, evictions."""
        with self.lock:
            self._settle_loans()
            colours = {name: c.stats() for name, c in self.colours.items()}
            hits = sum(c["hits"] for c in colours.values())
            misses = sum(c["misses"] for c in colours.values())
            return {"hits": hits, "misses": misses,
                    "evictions": sum(c["evictions"] for c in colours.values()),
                    "bytes": self.bytes, "bytes_max": self.bytes_max, "objects": len(self.entries),
                    "loaned_bytes": self.loaned_bytes,
                    "colours": colours}
