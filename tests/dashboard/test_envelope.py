"""Min/max envelopes computed near the data equal numpy's, unwritten chunks included.

``neoarray.envelopes`` (the per-chunk states and their merge) against numpy on random
blocks, then ``neoarray.array.envelope.envelope`` over arrays committed to a real
cluster of 2 storage nodes (the nodes reduce the chunks), sparse ones and a NaN fill
among them, with the chunks the nodes reduced checked to be all the stored ones.
"""
import numpy as np
import pytest
import transaction
import ZODB
from hypothesis import given, settings
from hypothesis import strategies as st

import neoarray.array as na
from neoarray import envelopes, wire
from neoarray.array.envelope import envelope
from neoarray.errors import RequestRefused
from neoarray.proto import storage_pb2 as spb
from tests.conftest import running_cluster


@st.composite
def spans(draw):
    n = draw(st.integers(1, 300))
    start = draw(st.integers(0, n - 1))
    stop = draw(st.integers(start + 1, n))
    return n, start, stop, draw(st.integers(1, 40)), draw(st.integers(1, 50))


@settings(max_examples=200, deadline=None)
@given(spans(), st.randoms(use_true_random=False))
def test_merged_chunk_states_equal_numpy(span, rnd):
    n, start, stop, buckets, chunk = span
    values = np.array([rnd.uniform(-5, 5) for _ in range(n)])
    env = envelopes.Envelope(start, stop, buckets, values.dtype)
    for offset in range(0, n, chunk):
        block = values[offset:offset + chunk]
        lo, hi = max(offset, start), min(offset + len(block), stop)
        if offset // chunk % 3 == 1:     # an "unwritten" chunk: its items all equal
            values[offset:offset + chunk] = 1.5
            env.add_fill(offset, offset + len(block), 1.5)
        else:
            env.add_state(envelopes.envelope_state(block, offset, start, stop, env.n),
                          max(0, hi - lo))
    starts, mins, maxs = env.result()
    ref = envelopes.reference(values, start, stop, buckets)
    np.testing.assert_array_equal(starts, ref[0])
    np.testing.assert_array_equal(mins, ref[1])
    np.testing.assert_array_equal(maxs, ref[2])
    assert len(mins) == min(buckets, stop - start)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40_000), st.integers(0, 60_000), st.integers(1, 50), st.sampled_from(["<f8", "<i2"]),
       st.booleans(), st.randoms(use_true_random=False))
def test_summarized_states_equal_the_plain_ones(items, offset, buckets, dtype, nans, rnd):
    """A chunk's envelope from its run summary (whole runs) and its edges equals the
    one read from every item, NaNs included, whatever the buckets' widths."""
    rng = np.random.default_rng(rnd.randrange(1 << 30))
    block = (rng.standard_normal(items) * 1000).astype(dtype)
    if nans and block.dtype.kind == "f":
        block[rng.integers(0, items, 3)] = np.nan
    start = rnd.randrange(0, offset + items)
    stop = rnd.randrange(start + 1, offset + items + 50_000)
    n = envelopes.buckets_for(start, stop, buckets)
    plain = envelopes.envelope_state(block, offset, start, stop, n)
    got = envelopes.summarized_state(block, envelopes.summarize(block), offset, start, stop, n)
    assert int(got[0]) == int(plain[0])
    np.testing.assert_array_equal(got[1], plain[1])
    np.testing.assert_array_equal(got[2], plain[2])
    assert got[1].dtype == block.dtype
    whole = envelopes.whole_chunk_state(envelopes.summarize(block), items, offset, start, stop, n)
    if whole is not None:           # the block inside one bucket: from its summary alone
        assert int(whole[0]) == int(plain[0])
        np.testing.assert_array_equal(whole[1], plain[1])
        np.testing.assert_array_equal(whole[2], plain[2])


def test_the_node_keeps_chunk_summaries_within_its_bound():
    from storage_node.summaries import ENTRY_OVERHEAD_BYTES, SummaryCache
    computed = []

    def summary_of(key):
        computed.append(key)
        return envelopes.summarize(np.arange(8 * envelopes.SUMMARY_ITEMS, dtype=float))
    entry = 2 * 8 * 8 + ENTRY_OVERHEAD_BYTES
    cache = SummaryCache(3 * entry)
    for key in [1, 2, 3, 1, 4, 1, 2]:
        cache.get(key, lambda key=key: summary_of(key))
    assert computed == [1, 2, 3, 4, 2]          # 2 was the least recently used when 4 came
    assert cache.bytes <= 3 * entry and (cache.hits, cache.misses) == (2, 5)


def test_bad_spans_are_refused():
    with pytest.raises(ValueError, match="0 <= start < stop"):
        envelopes.Envelope(5, 5, 10, float)
    with pytest.raises(ValueError, match="1 to 65536 buckets"):
        envelopes.Envelope(0, 5, 0, float)
    env = envelopes.Envelope(0, 10, 3, float)
    env.add_fill(0, 5, 1.0)
    with pytest.raises(ValueError, match="holds 5 of the 10 items"):
        env.result()


def _commit(db, name, array):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()[name] = array
    tm.commit()
    conn.close()


def _count_reduced(db):
    """Count the oids the nodes reduced with the envelope kernel (wraps reduce_chunks)."""
    seen = []
    original = db.storage.reduce_chunks

    def counting(oids, tid, kernel, **kw):
        out = original(oids, tid, kernel, **kw)
        if kernel == envelopes.KERNEL:
            seen.extend(out)
        return out
    db.storage.reduce_chunks = counting
    return seen


@pytest.mark.parametrize("dtype,fill", [("<f8", np.nan), ("<f8", 0.0), ("<i4", -7), ("<f4", 2.5)])
def test_sparse_arrays_equal_numpy(db, dtype, fill):
    rng = np.random.default_rng(abs(hash((dtype, str(fill)))) % 2**32)
    n, chunk = 10_000, 256
    a = na.full((n,), fill, dtype=dtype, chunks=(chunk,))
    expected = np.full(n, fill, dtype=dtype)
    for _ in range(12):              # scattered written regions: most chunks stay unwritten
        lo = int(rng.integers(0, n - 300))
        hi = lo + int(rng.integers(1, 300))
        values = (rng.standard_normal(hi - lo) * 100).astype(dtype)
        a[lo:hi] = values
        expected[lo:hi] = values
    name = f"sparse-{dtype}-{fill}"
    _commit(db, name, a)
    reduced = _count_reduced(db)
    conn = db.open(transaction.TransactionManager())
    try:
        stored = conn.root()[name]
        keys = list(stored.chunk_keys())
        for start, stop, buckets in [(0, n, 100), (0, n, 7), (1234, 5678, 1000),
                                     (300, 301, 5), (0, n, 65536), (9_990, n, 3)]:
            got = envelope(stored, start, stop, buckets)
            ref = envelopes.reference(expected, start, stop, buckets)
            for g, r in zip(got, ref):
                np.testing.assert_array_equal(g, r)
            assert got[1].dtype == np.dtype(dtype)
        assert len(set(reduced)) == len(keys) > 0    # every stored chunk reduced on the nodes
    finally:
        conn.close()


def test_wide_buckets_are_drawn_from_the_nodes_summaries_and_follow_rewrites(db):
    """Buckets of many runs come from the summaries the nodes keep per chunk revision:
    the same answer as numpy, again when asked again, and a rewritten chunk is
    summarized anew."""
    n, chunk = 6 * 65_536, 65_536
    values = np.random.default_rng(5).standard_normal(n)
    _commit(db, "long", na.asarray(values, chunks=(chunk,)))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        arr = conn.root()["long"]
        for _ in range(2):          # the second time from kept summaries
            for start, stop, buckets in [(0, n, 12), (1_000, n - 999, 5), (70_000, 300_000, 3)]:
                got = envelope(arr, start, stop, buckets)
                ref = envelopes.reference(values, start, stop, buckets)
                for g, r in zip(got, ref):
                    np.testing.assert_array_equal(g, r)
        arr[100_000:100_010] = 1e9          # a new revision of the second chunk
        values[100_000:100_010] = 1e9
        tm.commit()
        got = envelope(arr, 0, n, 12)
        assert got[2].max() == 1e9
        np.testing.assert_array_equal(got[2], envelopes.reference(values, 0, n, 12)[2])
    finally:
        conn.close()


def test_envelope_after_append_sees_new_data(db):
    a = na.zeros((1000,), chunks=(100,))
    _commit(db, "growing", a)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        arr = conn.root()["growing"]
        before = envelope(arr, buckets=10)
        arr.append(np.arange(500, dtype=float))
        tm.commit()
        after = envelope(arr, buckets=10)
        assert before[2].max() == 0 and after[2].max() == 499
        np.testing.assert_array_equal(after[2], envelopes.reference(
            np.concatenate([np.zeros(1000), np.arange(500.0)]), 0, 1500, 10)[2])
    finally:
        conn.close()


def test_nodes_refuse_bad_envelope_requests(db, neo):
    storage = db.storage
    nid = storage._link.readable(0)[0]
    stub = storage._link.storage(nid)
    base = {"kernel": "envelope", "dtype": "<f8", "acc_dtype": "<f8", "order": "C", "bins": 4,
                "span_start": 0, "span_stop": 100}
    for bad, message in [({"chunk_shape": [10, 10]}, "1-d chunks"),
                         ({"chunk_shape": [10], "bins": 0}, "1 <= bins"),
                         ({"chunk_shape": [10], "span_start": 50, "span_stop": 50}, "span_start < span_stop"),
                         ({"chunk_shape": [10], "span_stop": 1 << 60}, "span_stop <=")]:
        request = spb.ReduceRequest(**{**base, **bad})
        with pytest.raises(RequestRefused, match=message):
            wire.call(stub.Reduce, request, 10.0, "reduce")
    oid = b"\0" * 7 + b"\1"          # the same chunk many times: a reply many times the span
    request = spb.ReduceRequest(**{**base, "chunk_shape": [100], "bins": 100, "oids": [oid] * 50,
                                   "extents": [spb.ChunkExtent(sizes=[100], offset=0)] * 50})
    with pytest.raises(RequestRefused, match="envelope chunks overlap"):
        wire.call(stub.Reduce, request, 10.0, "reduce")


def test_uncommitted_changes_and_unstored_arrays_are_computed_here(db):
    values = np.arange(3000, dtype=float)
    a = na.full((3000,), 5.0, chunks=(100,))
    a[:2000] = values[:2000]
    expected = np.concatenate([values[:2000], np.full(1000, 5.0)])
    got = envelope(a, 0, 3000, 30)                   # never stored: no node holds it
    np.testing.assert_array_equal(got[2], envelopes.reference(expected, 0, 3000, 30)[2])
    _commit(db, "changing", a)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        stored = conn.root()["changing"]
        stored[100:200] = -1.0                      # not committed: the nodes hold the old chunk
        expected[100:200] = -1.0
        got = envelope(stored, 0, 3000, 30)
        np.testing.assert_array_equal(got[1], envelopes.reference(expected, 0, 3000, 30)[1])
    finally:
        tm.abort()
        conn.close()


def test_a_chunk_that_fails_its_checksum_is_never_summarized(tmp_path):
    """A node verifies a chunk revision before it summarizes it: bit rot in a stored
    chunk makes the envelope fail with the checksum named, never draw the rotten
    values (a clean chunk beside it is still summarized)."""
    from neoarray.kv import LMDBStore
    from neoarray.records import PARTITION, RECORD_HEAD, record_tail
    for cluster in running_cluster(tmp_path / "c", partitions=4):
        db = ZODB.DB(cluster.open_storage(local_reads=False))
        try:
            values = np.arange(2 * 65_536, dtype=float)
            _commit(db, "rot", na.asarray(values, chunks=(65_536,)))
            conn = db.open(transaction.TransactionManager())
            arr = conn.root()["rot"]
            oid = arr._tree[(0,)]._p_oid
            tid = arr._tree[(0,)]._p_serial
            conn.close()
        finally:
            db.close()
        cluster.kill_storage(0)
        kv = LMDBStore(cluster.storage_dir(0))
        with kv.write() as txn:
            record = txn.get("obj", PARTITION.pack(int.from_bytes(oid, "big") % 4) + oid + tid)
            key = record_tail(record[0], record, RECORD_HEAD.size)[1]
            rotten = bytearray(txn.get("data", key))
            rotten[-1] ^= 0xFF
            txn.put("data", key, bytes(rotten))
        kv.sync()
        kv.close()
        cluster.start_storage(0)
        db = ZODB.DB(cluster.open_storage(local_reads=False))
        try:
            conn = db.open(transaction.TransactionManager())
            arr = conn.root()["rot"]
            with pytest.raises(Exception, match="checksum"):
                envelope(arr, 0, len(values), 4)
            got = envelope(arr, 65_536, len(values), 4)      # the sound chunk alone
            np.testing.assert_array_equal(got[2], envelopes.reference(values, 65_536, len(values), 4)[2])
            conn.close()
        finally:
            db.close()
