"""The client's coloured cache against a model: a dict of every revision ever stored."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from neoarray.client.cache import CacheConfigError, ColouredCache, parse_colours
from neoarray.ids import p64, u64

ops = st.lists(st.tuples(st.sampled_from(["commit", "load", "load_before"]),
                         st.integers(0, 4), st.integers(1, 40)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops, st.integers(200, 5000))
def test_cache_never_returns_a_wrong_revision(script, budget):
    """Whatever is evicted, a hit is always the revision a snapshot should see."""
    cache = ColouredCache(budget, [("only", 1, "lru")], default_colour="only")
    history: dict[bytes, list[tuple[bytes, bytes]]] = {}   # oid -> [(serial, data)]
    last = 0
    for op, o, back in script:
        oid = p64(o)
        if op == "commit":
            last += 1
            tid = p64(last)
            data = b"%d@%d" % (o, last) * (back % 7 + 1)
            history.setdefault(oid, []).append((tid, data))
            cache.invalidate([oid], tid)
            cache.put(oid, data, tid, None)
            continue
        before = p64(last + 1) if op == "load" else p64(max(1, last + 1 - back))
        hit = cache.get(oid, before)
        visible = [(s, d) for s, d in history.get(oid, []) if s < before]
        if hit is None:
            continue
        assert visible, "a hit for an object with no visible revision"
        data, serial, nxt = hit
        assert (serial, data) == visible[-1]
        later = [s for s, _ in history[oid] if s > serial]
        assert nxt == (later[0] if later else None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 400)), min_size=1, max_size=12),
                max_size=25),
       st.integers(200, 3000), st.sampled_from(["lru", "fifo", "s3fifo"]))
def test_a_committed_transaction_is_cached_as_its_revisions(commits, budget, policy):
    """``committed`` (a client's own commit of many objects, room made once at the end)
    keeps the cache within its budget and never answers a wrong revision, whatever is
    evicted; a record larger than an entry may be is not kept."""
    cache = ColouredCache(budget, [("only", 1, policy)], default_colour="only")
    history: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for last, written in enumerate(commits, start=1):
        tid = p64(last)
        batch = {p64(o): b"%d@%d;" % (o, last) * (size // 8) for o, size in written}
        for oid, data in batch.items():
            history.setdefault(oid, []).append((tid, data))
        cache.committed(list(batch.items()) + [(p64(99), None)], tid)
        assert cache.stats()["bytes"] <= budget
        for oid, revisions in history.items():
            hit = cache.get(oid, p64(last + 1))
            if hit is not None:
                assert (hit[1], hit[0]) == revisions[-1] and hit[2] is None
            for serial, data in revisions[:-1]:
                old = cache.get(oid, p64(u64(serial) + 1))
                if old is not None:
                    assert old[0] == data and old[2] == next(s for s, _ in revisions if s > serial)
        assert cache.get(p64(99), p64(last + 1)) is None


class CacheAgainstStore(RuleBasedStateMachine):
    """Loads through the cache (miss: ask the model store, put with a load token)
    interleaved with commits, invalidations arriving late, colour changes, clears."""

    COLOURS = ("meta", "hot", "scan", "mine")

    @initialize(budget=st.integers(300, 6000))
    def setup(self, budget):
        self.cache = ColouredCache(budget)
        self.history: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self.last = 0
        self.inflight = []          # (oid, token, answer) of loads not yet put
        self.has_mine = False

    def visible(self, oid, before):
        revs = [(s, d) for s, d in self.history.get(oid, []) if s < before]
        if not revs:
            return None
        serial, data = revs[-1]
        later = [s for s, _ in self.history[oid] if s > serial]
        return data, serial, (later[0] if later else None)

    def colour(self, c):
        return c if c != "mine" or self.has_mine else "hot"

    @rule(o=st.integers(0, 7), size=st.integers(1, 300))
    def commit(self, o, size):
        self.last += 1
        oid, tid = p64(o), p64(self.last)
        data = (b"%d@%d;" % (o, self.last) * size)[:size]
        self.history.setdefault(oid, []).append((tid, data))
        self.cache.invalidate([oid], tid)

    @rule(o=st.integers(0, 7), back=st.integers(0, 6), c=st.sampled_from(COLOURS),
          late=st.booleans())
    def load(self, o, back, c, late):
        oid = p64(o)
        before = p64(max(1, self.last + 1 - back))
        c = self.colour(c)
        hit = self.cache.get(oid, before, c)
        want = self.visible(oid, before)
        if hit is not None:
            assert want is not None and hit == want
            return
        if want is None:
            return
        token = self.cache.start_load()
        if late:      # the answer arrives after later commits: the token must protect it
            self.inflight.append((oid, token, want, c))
        else:
            self.cache.put(oid, want[0], want[1], want[2], token, c)

    @precondition(lambda self: self.inflight)
    @rule()
    def answer_arrives(self):
        oid, token, (data, serial, nxt), c = self.inflight.pop(0)
        self.cache.put(oid, data, serial, nxt, token, c)

    @precondition(lambda self: not self.has_mine)
    @rule()
    def add_colour(self):
        self.cache.add_colour("mine", 0.2, "s3fifo")
        self.has_mine = True

    @rule()
    def clear(self):
        self.cache.clear()

    @invariant()
    def accounting(self):
        if not hasattr(self, "cache"):
            return
        stats = self.cache.stats()
        assert stats["bytes"] <= stats["bytes_max"]
        assert stats["bytes"] == sum(c["bytes"] for c in stats["colours"].values())
        assert stats["objects"] == sum(c["objects"] for c in stats["colours"].values())
        assert sum(c["quota_bytes"] for c in stats["colours"].values()) <= stats["bytes_max"]
        for oid, entry in self.cache.entries.items():      # every cached revision is true
            for serial, nxt, data in entry[0]:
                revs = dict(self.history[oid])
                assert revs[serial] == data
                later = [s for s in revs if s > serial]
                assert nxt is None or nxt == min(later)


TestCacheAgainstStore = CacheAgainstStore.TestCase
TestCacheAgainstStore.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


def test_a_load_racing_an_invalidation_is_not_cached_as_current():
    cache = ColouredCache(1 << 20)
    token = cache.start_load()
    cache.invalidate([p64(1)], p64(5))        # arrives while the load is in flight
    cache.put(p64(1), b"old", p64(3), None, token)
    assert cache.get(p64(1), p64(9)) is None
    cache.put(p64(1), b"old", p64(3), p64(5), token)   # with its end: safe to keep
    assert cache.get(p64(1), p64(4)) == (b"old", p64(3), p64(5))


def test_budget_is_respected():
    cache = ColouredCache(10_000, [("meta", 1, "lru")])
    for i in range(100):
        cache.put(p64(i), b"x" * 500, p64(1), None)
    stats = cache.stats()
    assert stats["bytes"] <= 10_000 and stats["evictions"] > 0


def hot_hit_rate(cache, scan_colour, rounds=20, hot_objects=40, record=b"h" * 1000):
    """Read a hot set again and again while unique records stream through ``scan_colour``."""
    tid, before = p64(1), p64(2)
    hits = reads = 0
    scan_oid = 10_000
    for _ in range(rounds):
        for i in range(hot_objects):
            reads += 1
            if cache.get(p64(i), before, "hot") is not None:
                hits += 1
            else:
                cache.put(p64(i), record, tid, None, cache.start_load(), "hot")
            for _ in range(5):      # five scanned records per hot read
                scan_oid += 1
                cache.put(p64(scan_oid), b"s" * 1000, tid, None, cache.start_load(), scan_colour)
    return hits / reads


def test_a_scan_does_not_evict_the_hot_set():
    budget = 200_000      # hot quota 120 kB: room for the 40 kB hot set
    coloured = hot_hit_rate(ColouredCache(budget), "scan")
    plain = hot_hit_rate(ColouredCache(budget, [("hot", 1, "lru")], default_colour="hot"), "hot")
    assert coloured >= 0.95          # only the first round misses
    assert plain < 0.5               # one LRU of the same size loses the hot set to the scan


def test_a_colour_borrows_free_space_and_gives_it_back():
    cache = ColouredCache(100_000)    # meta 10 kB, hot 60 kB, scan 30 kB
    tid = p64(1)
    for i in range(80):             # 80 kB of scan: beyond its quota, while there is room
        cache.put(p64(1000 + i), b"s" * 936, tid, None, None, "scan")
    scan = cache.stats()["colours"]["scan"]
    assert scan["bytes"] > scan["quota_bytes"] and scan["borrowed_bytes"] > 0
    for i in range(55):             # hot fills its quota: scan gives back what it borrowed
        cache.put(p64(i), b"h" * 936, tid, None, None, "hot")
    stats = cache.stats()["colours"]
    assert stats["hot"]["objects"] == 55 and stats["hot"]["evictions"] == 0
    assert stats["scan"]["evictions"] > 0
    assert cache.stats()["bytes"] <= 100_000


def test_hot_colour_keeps_what_is_read_again():
    """S3-FIFO: a stream of records read once does not push out records read twice."""
    cache = ColouredCache(50_000, [("hot", 1, "s3fifo")], default_colour="hot")
    tid, before = p64(1), p64(2)
    for i in range(20):
        cache.put(p64(i), b"f" * 936, tid, None)
        cache.get(p64(i), before)                 # read again: frequent
    for i in range(1000, 1400):                   # 400 kB of one-hit wonders
        cache.put(p64(i), b"o" * 936, tid, None)
    assert all(cache.get(p64(i), before) is not None for i in range(20))


def test_objects_move_to_the_colour_they_are_put_in():
    cache = ColouredCache(1 << 20)
    cache.put(p64(1), b"a", p64(1), None, None, "meta")
    cache.put(p64(1), b"b", p64(2), None, None, "hot")
    stats = cache.stats()["colours"]
    assert stats["meta"]["objects"] == 0 and stats["hot"]["objects"] == 1
    assert cache.get(p64(1), p64(3), "scan") == (b"b", p64(2), None)
    assert cache.get(p64(1), p64(2), "scan") == (b"a", p64(1), None)
    stats = cache.stats()["colours"]
    assert stats["hot"]["hits"] == 2 and stats["scan"]["misses"] == 0


def test_statistics_per_colour():
    cache = ColouredCache(1 << 20)
    cache.put(p64(1), b"x" * 100, p64(1), None, None, "hot")
    assert cache.get(p64(1), p64(2), "hot") is not None
    assert cache.get(p64(2), p64(2), "hot") is None
    assert cache.get(p64(3), p64(2)) is None
    stats = cache.stats()
    hot = stats["colours"]["hot"]
    assert (hot["hits"], hot["misses"], hot["objects"], hot["policy"]) == (1, 1, 1, "s3fifo")
    assert hot["bytes"] == 100 + 64 and hot["hit_rate"] == 0.5
    assert stats["colours"]["meta"]["misses"] == 1
    assert (stats["hits"], stats["misses"]) == (1, 2)


def test_bad_colours_are_refused_with_their_name():
    with pytest.raises(CacheConfigError, match="unknown policy 'mru'"):
        ColouredCache(1000, "meta:1:mru")
    with pytest.raises(CacheConfigError, match="share 'x' is not a number"):
        ColouredCache(1000, "meta:x:lru")
    with pytest.raises(CacheConfigError, match="expected name:share:policy"):
        ColouredCache(1000, "meta:1")
    with pytest.raises(CacheConfigError, match="share must be > 0"):
        ColouredCache(1000, "meta:0:lru")
    with pytest.raises(CacheConfigError, match="defined twice"):
        ColouredCache(1000, "meta:1:lru,meta:2:lru")
    with pytest.raises(CacheConfigError, match="default colour 'meta'"):
        ColouredCache(1000, "hot:1:lru")
    cache = ColouredCache(1000)
    with pytest.raises(CacheConfigError, match="unknown cache colour 'warm'"):
        cache.get(p64(1), p64(2), "warm")
    assert parse_colours(" a:1:lru , b:2:fifo ") == [("a", 1.0, "lru"), ("b", 2.0, "fifo")]


def test_aliases_share_a_colour():
    cache = ColouredCache(1 << 20, [("all", 1, "lru")], default_colour="meta",
                          aliases={"meta": "all", "hot": "all", "scan": "all"})
    cache.put(p64(1), b"x", p64(1), None, None, "scan")
    assert cache.get(p64(1), p64(2), "hot") == (b"x", p64(1), None)
    assert cache.stats()["colours"]["all"]["hits"] == 1
    with pytest.raises(CacheConfigError, match="alias 'x' -> 'nowhere'"):
        ColouredCache(1000, aliases={"x": "nowhere"})


def test_take_removes_the_revision_unless_another_holder_uses_it():
    """A mapped view takes a record out of the cache (to move its pages) and puts it back
    with the token: only when nothing else holds it, and not as current once invalidated."""
    cache = ColouredCache(10_000, [("only", 1, "lru")], default_colour="only")
    record = bytearray(b"x" * 100)
    cache.put(p64(1), record, p64(1), None)
    del record

    def take_while_held():
        held = cache.get(p64(1), p64(5))[0]         # a reader still uses it
        got = cache.take(p64(1), p64(5))
        return got is None and held is not None
    assert take_while_held()
    refused = cache.take(p64(1), p64(5), movable=lambda data: False)
    assert refused is None
    data, serial, next_serial, token, loaned = cache.take(p64(1), p64(5))
    assert (bytes(data), serial, next_serial, loaned) == (b"x" * 100, p64(1), None, False)
    assert cache.get(p64(1), p64(5)) is None and cache.bytes == 0
    cache.put(p64(1), data, serial, next_serial, token)        # given back
    assert cache.get(p64(1), p64(5))[0] is data
    del data
    data, serial, next_serial, token, _ = cache.take(p64(1), p64(5))
    cache.invalidate([p64(1)], p64(3))          # a newer revision meanwhile
    cache.put(p64(1), data, serial, next_serial, token)
    assert cache.get(p64(1), p64(5)) is None and cache.bytes == 0


def test_a_lent_record_stays_counted_until_it_comes_back():
    """``take(lend=True)`` lends a record while the records on loan fit half the budget:
    its bytes still count, so new entries evict others instead of growing the memory
    held; back with ``put(loaned=True)``, or gone for good with ``end_loan``."""
    from neoarray.client.cache import ENTRY_OVERHEAD_BYTES
    entry = 1000 + ENTRY_OVERHEAD_BYTES
    cache = ColouredCache(4 * entry, [("only", 1, "lru")], default_colour="only")
    for oid in (1, 2, 3, 4):
        cache.put(p64(oid), bytes([oid]) * 1000, p64(1), None)
    lent = [cache.take(p64(oid), p64(5), lend=True) for oid in (1, 2, 3)]
    assert [got[4] for got in lent] == [True, True, False]     # half the budget on loan
    assert cache.stats()["loaned_bytes"] == 2 * entry and cache.bytes == entry
    cache.put(p64(5), b"5" * 1000, p64(1), None)
    cache.put(p64(6), b"6" * 1000, p64(1), None)                # evicts 4: the loans count
    assert cache.get(p64(4), p64(5)) is None and cache.get(p64(6), p64(5)) is not None
    assert cache.bytes + cache.loaned_bytes <= cache.bytes_max
    data, serial, next_serial, token, _ = lent[0]
    cache.put(p64(1), data, serial, next_serial, token, loaned=True)    # back
    assert cache.loaned_bytes == entry and cache.get(p64(1), p64(5))[0] is data
    cache.end_loan(len(lent[1][0]))             # kept by its holder for good
    assert cache.stats()["loaned_bytes"] == 0
    assert cache.bytes <= cache.bytes_max


@pytest.mark.parametrize("policy", ["lru", "fifo", "s3fifo"])
def test_cached_records_leave_the_garbage_collector_alone(policy):
    """The cache's bookkeeping is dicts of bytes, ints, strings and tuples of them,
    which the collector stops tracking once it has seen them: a client holding a
    million cached records does not make each full collection walk a million more
    objects.  Counted as the collector counts: the objects it tracks."""
    import gc
    cache = ColouredCache(1 << 24, [("only", 1, policy)], default_colour="only")
    cache.committed([(p64(oid), b"r%d" % oid) for oid in range(1, 1001)], p64(10))
    cache.put(p64(1), b"older", p64(5), p64(10))            # a second revision
    cache.invalidate([p64(2)], p64(20))                     # a revision given its end
    for oid in range(1, 301):                               # hits move entries along
        cache.get(p64(oid), p64(30))
    gc.collect()        # a tuple is untracked once its items are: an outer one made
    gc.collect()        # before an inner one was seen waits for the next collection
    before = len(gc.get_objects())
    cache.committed([(p64(oid), b"s%d" % oid) for oid in range(1001, 21001)], p64(40))
    for oid in range(1001, 3001):
        cache.get(p64(oid), p64(50))
    gc.collect()
    gc.collect()
    assert len(gc.get_objects()) - before < 100         # 20,000 more entries, no tracked object each
    for oid in (1, 2, 3, 1001):
        revs = cache.entries[p64(oid)][0]
        assert not gc.is_tracked(cache.entries[p64(oid)]) and not gc.is_tracked(revs), oid
        assert not any(gc.is_tracked(r) for r in revs), oid
    assert [r[:2] for r in cache.entries[p64(1)][0]] == [(p64(5), p64(10)), (p64(10), None)]
    assert cache.entries[p64(2)][0][0][:2] == (p64(10), p64(20))
    assert cache.get(p64(5000), p64(50)) == (b"s5000", p64(40), None)
