"""Reductions, reads and writes computed on records in place (fetch.map_payloads).

On the ``neo`` storage, ``NeoStorage.read_views`` hands out chunk records as
views of the storage node's LMDB pages, valid only inside its ``with`` block;
the other storages go through the fetcher.  Results must be numpy's on all of
them, and nothing computed inside a block may keep a view of it.
"""

import contextlib
import warnings

import numpy as np
import pytest
from ZODB.POSException import ReadConflictError

import neoarray.array as na
from neoarray.array import fetch

from array_helpers import open_conn

NAMES = ["sum", "mean", "min", "max", "var", "std", "prod", "any", "all",
         "count_nonzero", "argmin", "argmax"]
SHAPE, CHUNKS = (30, 31), (7, 8)


def oracle():
    values = np.random.default_rng(7).normal(size=SHAPE)
    values[14:21, 8:16] = 2.5          # one chunk all fill: not stored
    return values


def stored(database, codec=None):
    """Commit an array of ``oracle()`` values; return a fresh connection, tm, array."""
    conn, tm = open_conn(database)
    conn.root()["a"] = a = na.full(SHAPE, 2.5, chunks=CHUNKS, codec=codec)
    a[...] = oracle()
    tm.commit()
    conn.close()
    conn, tm = open_conn(database)
    conn.cacheMinimize()
    return conn, tm, conn.root()["a"]


class ViewSpy:
    """Wraps ``read_views`` of a storage: records calls and every record handed out."""

    def __init__(self, storage, monkeypatch, drop=()):
        self.inner = storage.read_views
        self.calls, self.records, self.open = [], [], 0
        self.drop = set(drop)
        monkeypatch.setattr(storage, "read_views", self, raising=False)

    @contextlib.contextmanager
    def __call__(self, oids, before, **options):
        self.calls.append((list(oids), before))
        with self.inner(oids, before, **options) as views:
            self.open += 1
            self.records.extend(data for data, _serial in views.values())
            try:
                yield {oid: hit for oid, hit in views.items() if oid not in self.drop}
            finally:
                self.open -= 1


def _neo_only(database):
    if not hasattr(database.storage, "read_views"):
        pytest.skip("the storage has no read_views")


def _bases(value):
    """Every object in the ``base`` chain of a numpy array."""
    out = []
    while isinstance(value, np.ndarray):
        value = value.base
        out.append(value)
    return out


def _expected(name, values, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(np, name)(values, **kwargs)


@pytest.mark.parametrize("codec", [None, "zlib"])
def test_reductions_and_reads_match_numpy(db, codec):
    conn, tm, a = stored(db, codec)
    values = oracle()
    for name in NAMES:
        for axis in (None, 0, 1):
            got = getattr(np, name)(a, axis=axis)
            expected = _expected(name, values, axis=axis)
            assert np.asarray(got).dtype == np.asarray(expected).dtype, (name, axis)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name} axis={axis}")
    np.testing.assert_array_equal(a[...], values)
    np.testing.assert_array_equal(a[3:29:2, ::-3], values[3:29:2, ::-3])
    np.testing.assert_array_equal(a[[0, 29, 5], 30], values[[0, 29, 5], 30])
    assert a[17, 9] == values[17, 9]
    conn.close()


def test_the_in_place_path_is_taken_and_no_view_escapes(db, monkeypatch):
    _neo_only(db)
    conn, tm, a = stored(db)
    spy = ViewSpy(db.storage, monkeypatch)
    values = oracle()
    results = {name: getattr(a, name)(axis=0) for name in NAMES}
    full = a[...]
    part = a[2:9, 3:30]
    kept = dict(a._map_stored(lambda key, block: block[:2]))   # a view, copied out
    assert spy.calls and spy.open == 0
    assert {before for _oids, before in spy.calls} == {conn._storage._start}
    assert all(isinstance(r, (memoryview, bytes)) for r in spy.records)  # pages, cached copies
    for name, result in results.items():
        assert not any(isinstance(b, memoryview) for b in _bases(result)), name
        np.testing.assert_allclose(result, _expected(name, values, axis=0), rtol=1e-12)
    for array in (full, part, *kept.values()):
        assert not any(isinstance(b, memoryview) for b in _bases(array))
        assert array.base is None or array.base.flags.owndata
    np.testing.assert_array_equal(full, values)
    np.testing.assert_array_equal(part, values[2:9, 3:30])
    for (i, j), block in kept.items():
        np.testing.assert_array_equal(block, values[7 * i:7 * i + 2, 8 * j:8 * j + 8])
    conn.close()


def test_groups_are_bounded_and_single_thread_works(db, monkeypatch):
    _neo_only(db)
    conn, tm, a = stored(db)
    spy = ViewSpy(db.storage, monkeypatch)
    chunk_bytes = 7 * 8 * 8
    with na.configure(fetch_bytes_max=8 * chunk_bytes, compute_threads_max=2):
        assert a.sum() == pytest.approx(oracle().sum(), rel=1e-12)
    assert max(len(oids) for oids, _ in spy.calls) == 2   # bytes / (2 * threads)
    del spy.calls[:]
    with na.configure(compute_threads_max=1):
        assert a.max() == oracle().max()
        np.testing.assert_array_equal(a[...], oracle())
    assert spy.calls
    conn.close()


def test_disabled_in_place_reads_use_the_fetcher(db, monkeypatch):
    _neo_only(db)
    conn, tm, a = stored(db)
    spy = ViewSpy(db.storage, monkeypatch)
    with na.configure(read_in_place=False):
        assert a.min() == oracle().min()
    assert spy.calls == []
    conn.close()


def test_snapshot_changes_and_savepoints(db, monkeypatch):
    _neo_only(db)
    conn, tm, a = stored(db)
    spy = ViewSpy(db.storage, monkeypatch)
    total = oracle().sum()
    assert a[0, 0] == oracle()[0, 0]        # the snapshot starts
    writer, wtm = open_conn(db)
    writer.root()["a"][...] = 5.0
    wtm.commit()
    writer.close()
    conn.cacheMinimize()
    assert a.sum() == pytest.approx(total, rel=1e-12) and spy.calls
    tm.commit()                              # a new snapshot
    assert a.sum() == 5.0 * a.size
    a[0, 0] = -1.0                           # changed chunk: read from memory
    assert a.sum() == 5.0 * a.size - 6.0
    del spy.calls[:]
    tm.savepoint(True)
    conn.cacheMinimize()
    assert a.sum() == 5.0 * a.size - 6.0
    assert spy.calls == []                   # savepoints: the fetcher's path
    tm.abort()
    conn.close()


def test_partial_writes_and_shrinks_read_in_place(db, monkeypatch):
    _neo_only(db)
    conn, tm, a = stored(db)
    spy = ViewSpy(db.storage, monkeypatch)
    values = oracle()
    a[3:10, 5:6] = -7.0
    values[3:10, 5:6] = -7.0
    a.resize((25, 29))
    assert spy.calls
    tm.commit()
    conn.cacheMinimize()
    np.testing.assert_array_equal(a[...], values[:25, :29])
    conn.close()


def test_records_missing_from_the_views_go_through_the_fetcher(db, monkeypatch):
    _neo_only(db)
    conn, tm, a = stored(db)
    chunk = a._tree[(0, 0)]
    spy = ViewSpy(db.storage, monkeypatch, drop={chunk._p_oid})
    assert a.sum() == pytest.approx(oracle().sum(), rel=1e-12) and spy.calls
    base_load_many, base_load_before = db.storage.load_many, db.storage.loadBefore

    def load_many(oids, before, colour=None):       # as if a pack removed the revision
        return {oid: hit for oid, hit in base_load_many(oids, before, colour).items()
                if oid != chunk._p_oid}

    def load_before(oid, tid):
        return None if oid == chunk._p_oid else base_load_before(oid, tid)

    monkeypatch.setattr(db.storage, "load_many", load_many)
    monkeypatch.setattr(db.storage, "loadBefore", load_before)
    with pytest.raises(ReadConflictError):
        a.sum()
    conn.close()


def test_detach_copies_views_and_refuses_memoryviews():
    owner = np.arange(10.0)
    view = np.frombuffer(owner.tobytes())
    out = fetch.detach((view[2:4], [view], 3.0, owner))
    assert out[0].base is None and out[1][0].base is None and out[2] == 3.0
    assert out[3] is owner
    np.testing.assert_array_equal(out[0], [2.0, 3.0])
    with pytest.raises(TypeError):
        fetch.detach(memoryview(b"abc"))
