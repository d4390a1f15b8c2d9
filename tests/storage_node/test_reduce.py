"""Near-data reductions: storage nodes reduce the array chunks they hold (``Reduce``).

A real cluster (local processes), arrays written through ZODB, and
``NeoStorage.reduce_chunks`` compared with ``kernels.block_state`` computed here on
the same blocks and with numpy itself; snapshots, records that are not chunks,
refused requests, a node lost mid-way, and what crosses the network.
"""
import math
import pickle
import signal
import zlib

import numpy as np
import pytest
import transaction
import ZODB

import neoarray.array as na
from neoarray import kernels, payload, wire
from neoarray.array import layout
from neoarray.array.chunks import Chunk
from neoarray.array.reductions import _acc_dtype
from neoarray.errors import LimitExceeded, RequestRefused
from neoarray.ids import MAX_TID, Z64, p64, u64
from neoarray.proto import storage_pb2 as spb
from storage_node.node import Limits as NodeLimits
from storage_node.reduce import check_reduce_request
from tests.conftest import running_cluster

KERNEL_ACC = {"sum": "sum", "prod": "prod", "moments": "var", "count_nonzero": "count_nonzero"}
HIST = {"bins": 7, "lo": -2.0, "hi": 2.5}


@pytest.fixture(scope="module")
def neo(tmp_path_factory):
    """One cluster for the module: 2 storage nodes, no replicas, so chunks spread."""
    yield from running_cluster(tmp_path_factory.mktemp("reduce"), storages=2)


@pytest.fixture
def db(neo):
    database = ZODB.DB(neo.open_storage())
    yield database
    transaction.abort()
    database.close()


def store(db, name, array):
    """Commit ``array`` under ``name``; return the tid of the commit."""
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        conn.root()[name] = array
        tm.commit()
    finally:
        conn.close()
    return db.storage.lastTransaction()


def chunks_of(db, name):
    """``[(key, oid, extent)]`` of the stored chunks of the array ``name``, and the array."""
    conn = db.open(transaction.TransactionManager())
    array = conn.root()[name]
    out = [(key, chunk._p_oid, layout.chunk_extent(key, array.shape, array.chunks))
           for key, chunk in array._tree.items()]
    return out, array, conn


def acc_for(kernel, dtype):
    return _acc_dtype(KERNEL_ACC.get(kernel, kernel), np.dtype(dtype), None)


def reduce_array(db, array, found, kernel, before=MAX_TID, **kw):
    """``reduce_chunks`` over the chunks ``found`` of ``array``."""
    extra = HIST if kernel == "histogram" else {}
    return db.storage.reduce_chunks(
        [oid for _k, oid, _e in found], before, kernel, dtype=array.dtype,
        acc=kw.pop("acc", acc_for(kernel, array.dtype)), chunk_shape=array.chunks,
        order=array.order, extents=[e for _k, _o, e in found], codec=array.codec, **extra, **kw)


def local_block(data, key, array):
    """The in-bounds block of chunk ``key``, laid out in memory as the node sees it."""
    full = np.full(array.chunks, array.fill_value, dtype=array.dtype, order=array.order)
    region = tuple(slice(j * c, (j + 1) * c) for j, c in zip(key, array.chunks))
    part = data[region]
    full[tuple(slice(0, n) for n in part.shape)] = part
    return full[tuple(slice(0, n) for n in part.shape)]


def close(a, b, dtype):
    rtol = 1e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol, equal_nan=True)


def check_state(kernel, got, block, acc):
    """``got`` (from a node) against ``block_state`` here and against numpy."""
    want = kernels.block_state(kernel, block, acc, **(HIST if kernel == "histogram" else {}))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.asarray(g).dtype == np.asarray(w).dtype, (kernel, g, w)
        if kernel in ("sum", "moments") and np.asarray(w).dtype.kind in "fc":
            close(g, w, block.dtype)
        else:
            np.testing.assert_array_equal(g, w)
    with np.errstate(all="ignore"):
        check_numpy(kernel, got, block, acc)


def check_numpy(kernel, got, block, acc):
    if kernel in ("sum", "prod"):
        close(got[0], getattr(np, kernel)(block, dtype=acc), block.dtype)
    elif kernel in ("min", "max", "any", "all", "count_nonzero"):
        np.testing.assert_array_equal(got[0], getattr(np, kernel)(block))
    elif kernel in ("argmin", "argmax"):
        assert got[1] == getattr(np, kernel)(block)
        np.testing.assert_array_equal(got[0], block.reshape(-1)[got[1]])
    elif kernel == "moments":
        assert got[0] == block.size
        close(got[1], np.mean(block, dtype=acc), block.dtype)
        close(got[2], np.var(block, dtype=acc) * block.size, block.dtype)
    else:
        items = block.view(np.uint8) if block.dtype == bool else block
        counts = np.histogram(items, HIST["bins"], range=(HIST["lo"], HIST["hi"]))[0]
        np.testing.assert_array_equal(got[0], counts)


def values(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype == bool:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        return rng.integers(-50, 50, size=shape).astype(dtype)
    if dtype.kind == "c":
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


CASES = [("float64", "C", None), ("float32", "F", None), ("int32", "C", "zlib"),
         ("bool", "F", None), ("complex128", "C", None), ("float64", "F", "zlib"),
         ("float64", "C", "blosc"), ("int16", "F", "zstd"), ("complex64", "C", "lz4")]


@pytest.mark.parametrize(("dtype", "order", "codec"), CASES)
def test_reduce_matches_block_state_and_numpy(db, dtype, order, codec):
    rng = np.random.default_rng(7)
    data = values(rng, (10, 7), dtype)
    if np.dtype(dtype).kind == "f":
        data[9, 6] = np.nan      # in an edge chunk
        data[1, 1] = data[2, 0]  # a tie in a whole chunk
    store(db, "a", na.asarray(data, chunks=(4, 3), order=order, codec=codec))
    found, array, conn = chunks_of(db, "a")
    try:
        assert len(found) == 9 and any(e != (4, 3) for _k, _o, e in found)
        for kernel in kernels.BLOCK_STATES:
            if kernel == "histogram" and np.dtype(dtype).kind == "c":
                continue
            acc = acc_for(kernel, dtype)
            states = reduce_array(db, array, found, kernel)
            assert set(states) == {oid for _k, oid, _e in found}, kernel
            for key, oid, _extent in found:
                state, serial = states[oid]
                assert serial == db.storage.loadBefore(oid, MAX_TID)[1]
                check_state(kernel, state, local_block(data, key, array), acc)
    finally:
        conn.close()


def test_reduce_reads_the_snapshot_before_tid(db):
    first = store(db, "s", na.asarray(np.arange(12.0), chunks=4))
    found, _array, conn = chunks_of(db, "s")
    conn.close()
    tm = transaction.TransactionManager()
    c = db.open(tm)
    c.root()["s"][:] = np.arange(12.0) * 10
    tm.commit()
    c.close()
    found_new, array, conn = chunks_of(db, "s")
    conn.close()
    assert [o for _k, o, _e in found] == [o for _k, o, _e in found_new]
    old = reduce_array(db, array, found, "sum", before=p64(u64(first) + 1))
    new = reduce_array(db, array, found, "sum")
    assert [old[o][0][0] for _k, o, _e in found] == [6.0, 22.0, 38.0]
    assert [new[o][0][0] for _k, o, _e in found] == [60.0, 220.0, 380.0]
    assert all(old[o][1] == first and new[o][1] > first for _k, o, _e in found)
    assert reduce_array(db, array, found, "sum", before=p64(u64(first) - 5)) == {}


class NotAChunk:
    """A class whose records could look like chunk records but for their class."""


def test_payload_parsing_on_nodes():
    """What a node accepts as a chunk record, and codec decoding with bounded output."""
    state = pickle.dumps(b"\1" * 16, 3)
    chunk = pickle.dumps(Chunk, 3) + state
    assert payload.record_class(chunk) == payload.CHUNK_CLASS
    assert bytes(payload.chunk_payload_view(chunk)) == b"\1" * 16
    other = pickle.dumps(NotAChunk, 3) + state
    assert payload.payload_view(other) is not None and payload.chunk_payload_view(other) is None
    assert payload.chunk_payload_view(pickle.dumps(Chunk, 3) + pickle.dumps(None, 3)) is None
    packed = zlib.compress(b"x" * 1000)
    assert payload.decode_payload(packed, None) is packed
    assert payload.decode_payload(packed, ("zlib", 6)) == b"x" * 1000
    assert len(payload.decode_payload(packed, ("zlib", 6), 1000)) == 1000
    assert len(payload.decode_payload(packed, ("zlib", 6), 10)) == 11      # stops early
    with pytest.raises(zlib.error, match="truncated"):
        payload.decode_payload(packed[:-3], ("zlib", 6), 1000)
    with pytest.raises(ValueError, match="unknown codec"):
        payload.decode_payload(packed, ("lz4", 1))


def call_reduce(db, oids, **fields):
    """One ``Reduce`` call to the node holding the first oid's partition."""
    storage = db.storage
    nid = storage._link.readable(storage._link.partition(oids[0]))[0]
    request = spb.ReduceRequest(oids=oids, before=MAX_TID, **fields)
    return wire.call(storage._link.storage(nid).Reduce, request, 30.0, "reduce")


def test_records_that_are_not_chunks(db):
    store(db, "n", na.asarray(np.arange(8.0), chunks=4))
    found, array, conn = chunks_of(db, "n")
    conn.close()
    chunk = found[0][1]
    base = {"kernel": "sum", "dtype": "<f8", "acc_dtype": "<f8", "chunk_shape": [4], "order": "C"}
    for oid, status in [(Z64, spb.ReducedChunk.NOT_A_CHUNK),
                        (array._p_oid, spb.ReducedChunk.NOT_A_CHUNK),
                        (chunk, spb.ReducedChunk.REDUCED),
                        (p64(u64(chunk) + 4 * 10**6), spb.ReducedChunk.NO_OBJECT)]:
        reply = call_reduce(db, [oid], extents=[spb.ChunkExtent(sizes=[4])], **base)
        assert [(c.oid, c.status) for c in reply.chunks] == [(oid, status)]
    # the size or the codec does not match the record: the client computes it itself
    wrong = dict(base, chunk_shape=[8])
    reply = call_reduce(db, [chunk], extents=[spb.ChunkExtent(sizes=[8])], **wrong)
    assert reply.chunks[0].status == spb.ReducedChunk.NOT_A_CHUNK
    reply = call_reduce(db, [chunk], extents=[spb.ChunkExtent(sizes=[4])], codec="zlib", **base)
    assert reply.chunks[0].status == spb.ReducedChunk.NOT_A_CHUNK
    got = db.storage.reduce_chunks([Z64, array._p_oid, chunk], MAX_TID, "max", dtype="f8",
                                   acc="f8", chunk_shape=(4,), order="C",
                                   extents=[(4,), (4,), (4,)])
    assert list(got) == [chunk] and got[chunk][0] == (3.0,)


def test_deleted_chunk_is_absent(db):
    store(db, "d", na.asarray(np.arange(8.0) + 1, chunks=4))
    found, array, conn = chunks_of(db, "d")
    conn.close()
    tm = transaction.TransactionManager()
    c = db.open(tm)
    c.root()["d"][:4] = 0.0     # all fill: the chunk is dropped (its record: a tombstone)
    tm.commit()
    c.close()
    got = reduce_array(db, array, found, "sum")
    assert list(got) == [found[1][1]] and got[found[1][1]][0] == (26.0,)


BAD_REQUESTS = [
    ({"kernel": "__import__('os').system"}, "storage nodes run only the built-in kernels"),
    ({"dtype": "not-a-dtype"}, "bad item dtype 'not-a-dtype'"),
    ({"dtype": "|O"}, "not object or structured"),
    ({"dtype": "[('a', '<i4')]"}, "bad item dtype|not object or structured"),
    ({"acc_dtype": "|V8"}, "accumulator dtype '|V8'"),
    ({"order": "K"}, "order must be 'C' or 'F'"),
    ({"codec": "lz4"}, "unknown codec 'lz4'"),
    ({"codec": "zlib", "codec_level": 12}, "zlib level"),
    ({"kernel": "histogram"}, "the histogram kernel needs 1 <= bins"),
    ({"kernel": "histogram", "bins": 4, "lo": 3.0, "hi": 1.0}, "lo <= hi"),
    ({"kernel": "histogram", "dtype": "<c16", "acc_dtype": "<c16", "bins": 2, "hi": 1.0},
     "histogram needs bool, integer or float items"),
    ({"chunk_shape": [4, 0], "extents": [spb.ChunkExtent(sizes=[4, 1])]}, "bad chunk shape"),
    ({"extents": [spb.ChunkExtent(sizes=[5])]}, r"extent \(5,\) does not fit the chunk shape \(4,\)"),
    ({"extents": [spb.ChunkExtent(sizes=[2, 2])]}, "does not fit the chunk shape"),
    ({"extents": []}, "0 extents for 1 oids"),
    ({"codec": "numcodecs", "codec_config": '{"id": "pickle"}'}, "unknown numcodecs codec"),
    ({"codec": "numcodecs", "codec_config": "not json"}, "is JSON text"),
    ({"codec": "numcodecs", "codec_config": '{"id": "zstd", "nope": 1}'}, "bad numcodecs codec config"),
]
GOOD_REQUEST = {"kernel": "sum", "dtype": "<f8", "acc_dtype": "<f8", "chunk_shape": [4],
                "order": "C", "extents": [spb.ChunkExtent(sizes=[4])]}


@pytest.mark.parametrize(("fields", "message"), BAD_REQUESTS)
def test_bad_requests_are_refused(db, fields, message):
    """Through a node: refused as INVALID_ARGUMENT, with the core's message."""
    with pytest.raises(RequestRefused, match=message):
        call_reduce(db, [p64(8)], **{**GOOD_REQUEST, **fields})


@pytest.mark.parametrize(("fields", "message"), BAD_REQUESTS)
def test_the_reduce_core_refuses_bad_requests_without_io(fields, message):
    request = spb.ReduceRequest(oids=[p64(8)], **{**GOOD_REQUEST, **fields})
    with pytest.raises(RequestRefused, match=message):
        check_reduce_request(request, NodeLimits())


def test_the_reduce_core_orders_a_good_request():
    request = spb.ReduceRequest(oids=[p64(8), p64(9)], before=p64(5), **{
        **GOOD_REQUEST, "extents": [spb.ChunkExtent(sizes=[4]), spb.ChunkExtent(sizes=[2], offset=4)]})
    order = check_reduce_request(request, NodeLimits())
    assert order.oids == [p64(8), p64(9)] and order.before == p64(5)
    assert order.extents == [(4,), (2,)] and order.offsets == [0, 4]
    assert order.spec.kernel == "sum" and order.spec.chunk_shape == (4,) and order.spec.raw_bytes == 32
    with pytest.raises(LimitExceeded, match="reduce_oids_per_batch_max=1"):
        check_reduce_request(request, NodeLimits(reduce_oids_per_batch_max=1))


def test_client_refusals(db):
    storage = db.storage
    common = {"chunk_shape": (4,), "order": "C", "extents": [(4,)]}
    with pytest.raises(RequestRefused, match="storage nodes run only the built-in kernels"):
        storage.reduce_chunks([p64(1)], MAX_TID, "median", dtype="f8", acc="f8", **common)
    with pytest.raises(RequestRefused, match="not object or structured"):
        storage.reduce_chunks([p64(1)], MAX_TID, "sum", dtype=object, acc=object, **common)
    with pytest.raises(ValueError, match="1 extents for 2 oids"):
        storage.reduce_chunks([p64(1), p64(2)], MAX_TID, "sum", dtype="f8", acc="f8", **common)


def test_too_many_oids_are_refused(neo):
    storage = neo.open_storage(reduce_oids_per_batch_max=1000)
    try:
        oids = [p64(4 * i + (1 << 40)) for i in range(300)]  # one partition, no object
        with pytest.raises(RequestRefused, match="300 oids in one reduce, "
                                                 "reduce_oids_per_batch_max=256"):
            storage.reduce_chunks(oids, MAX_TID, "sum", dtype="f8", acc="f8", chunk_shape=(4,),
                                  order="C", extents=[(4,)] * len(oids))
    finally:
        storage.close()
    storage = neo.open_storage()      # the default batches fit the nodes' limit
    try:
        assert storage.reduce_chunks(oids, MAX_TID, "sum", dtype="f8", acc="f8",
                                     chunk_shape=(4,), order="C",
                                     extents=[(4,)] * len(oids)) == {}
    finally:
        storage.close()


def test_reducing_moves_far_less_than_the_chunks(neo, db):
    chunk_shape = (128, 1024)      # 1 MiB of float64
    n = 6
    data = np.random.default_rng(3).normal(size=(128 * n, 1024))
    store(db, "big", na.asarray(data, chunks=chunk_shape))
    found, array, conn = chunks_of(db, "big")
    conn.close()
    assert len(found) == n
    wire.reset_traffic()
    states = reduce_array(db, array, found, "moments")
    moved = wire.traffic()
    assert len(states) == n
    assert moved["calls"] >= 1
    assert moved["sent_bytes"] + moved["received_bytes"] < n * 2048 < n * (1 << 20) // 100
    total = (0, 0.0, 0.0)
    for _k, oid, _e in found:
        total = kernels.merge_moments(total, tuple(float(v) for v in states[oid][0]))
    assert total[0] == data.size
    assert total[1] == pytest.approx(data.mean(), rel=1e-9, abs=1e-12)
    assert total[2] / total[0] == pytest.approx(data.var(), rel=1e-9)
    fresh = neo.open_storage(local_reads=False)     # no cache, no local LMDB reads
    try:
        wire.reset_traffic()     # what loading the chunks moves
        assert len(fresh.load_many([oid for _k, oid, _e in found], MAX_TID)) == n
        assert wire.traffic()["received_bytes"] > n * (1 << 20)
    finally:
        fresh.close()


def test_reduce_goes_to_another_cell_when_a_node_is_lost(cluster):
    """Two nodes, each holding every partition (replicas=1): one killed, all reduced."""
    db = ZODB.DB(cluster.open_storage())
    try:
        data = np.arange(64.0)
        store(db, "r", na.asarray(data, chunks=8))
        found, array, conn = chunks_of(db, "r")
        conn.close()
        cluster.kill_storage(0, signal.SIGKILL)
        states = reduce_array(db, array, found, "sum")
        assert sorted(float(s[0][0]) for s in states.values()) == sorted(
            float(data[i:i + 8].sum()) for i in range(0, 64, 8))
        assert math.isclose(sum(float(s[0][0]) for s in states.values()), data.sum())
    finally:
        db.close()


def test_a_node_without_numcodecs_refuses_such_codecs_by_name(monkeypatch):
    import sys

    from neoarray import codecs
    from storage_node import reduce
    config = na.zeros(4, codec="zstd").codec[1]
    request = spb.ReduceRequest(codec="numcodecs", codec_config=config)
    monkeypatch.setitem(sys.modules, "numcodecs", None)      # as on a node without it
    codecs.numcodecs_codec.cache_clear()
    try:
        with pytest.raises(RequestRefused, match=r"pip install 'neoarray\[codecs\]'"):
            reduce._codec_spec(request)
    finally:
        codecs.numcodecs_codec.cache_clear()
