"""The client's revision cache against a model: a dict of every revision ever stored."""
from hypothesis import given, settings
from hypothesis import strategies as st

from neoarray.client.cache import RevisionCache
from neoarray.ids import p64

ops = st.lists(st.tuples(st.sampled_from(["commit", "load", "load_before"]),
                         st.integers(0, 4), st.integers(1, 40)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops, st.integers(200, 5000))
def test_cache_never_returns_a_wrong_revision(script, budget):
    """Whatever is evicted, a hit is always the revision a snapshot should see."""
    cache = RevisionCache(budget)
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


def test_a_load_racing_an_invalidation_is_not_cached_as_current():
    cache = RevisionCache(1 << 20)
    token = cache.start_load()
    cache.invalidate([p64(1)], p64(5))        # arrives while the load is in flight
    cache.put(p64(1), b"old", p64(3), None, token)
    assert cache.get(p64(1), p64(9)) is None
    cache.put(p64(1), b"old", p64(3), p64(5), token)   # with its end: safe to keep
    assert cache.get(p64(1), p64(4)) == (b"old", p64(3), p64(5))


def test_budget_is_respected():
    cache = RevisionCache(10_000)
    for i in range(100):
        cache.put(p64(i), b"x" * 500, p64(1), None)
    stats = cache.stats()
    assert stats["bytes"] <= 10_000 and stats["evictions"] > 0
