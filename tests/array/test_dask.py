"""Arrays as Dask collections: to_dask, from_array, tokens, from_dask and store."""

import os
import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import transaction

import neoarray
import neoarray.array as na

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def client():
    """One local cluster of 2 worker processes for the module (a few seconds to start).

    distributed is imported here, not when the module is collected: importing it
    changes how every exception pickles in this process (tblib)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=":0")
    dask_client = distributed.Client(cluster, set_as_default=False)
    yield dask_client
    dask_client.close()
    cluster.close()


def _worker_neoarray():
    return os.path.realpath(neoarray.__file__)


@pytest.fixture
def stored(neo_db):
    """A committed (2000, 6) array of 8 x 2 chunks and its values."""
    x = np.random.default_rng(11).normal(size=(2000, 6))
    tm = transaction.TransactionManager()
    conn = neo_db.open(tm)
    a = conn.root()["a"] = na.asarray(x, chunks=(256, 3))
    tm.commit()
    yield a, x, tm
    tm.abort()
    conn.close()


def test_workers_in_other_processes_compute_from_handles(client, stored):
    a, x, tm = stored
    paths = client.run(_worker_neoarray)
    assert all(p.startswith(os.path.realpath(ROOT)) for p in paths.values()), paths
    darr = a.to_dask()
    assert darr.chunks == ((256,) * 7 + (208,), (3, 3))
    a[0, 0] = 1e9                          # committed later: the graph reads its snapshot
    tm.commit()
    with client.as_current():
        np.testing.assert_allclose(darr.mean(axis=0).compute(), x.mean(axis=0))
        np.testing.assert_allclose(da.from_array(a, chunks=(500, 6)).sum().compute(),
                                   a[...].sum())      # from_array pickles a: its handle


def test_threads_of_this_process(stored):
    a, x, _tm = stored
    darr = a.to_dask()
    np.testing.assert_allclose(darr.std(axis=1).compute(scheduler="threads"), x.std(axis=1))
    np.testing.assert_array_equal(darr[1990:, 2].compute(scheduler="threads"), x[1990:, 2])
    source = da.from_array(a, chunks=(300, 6))         # a snapshot reader, not a copy
    assert a._p_jar._added == {}
    np.testing.assert_allclose(source.sum(axis=0).compute(scheduler="threads"), x.sum(axis=0))


def test_sparse_exabyte_array_has_a_small_graph(neo_db):
    tm = transaction.TransactionManager()
    conn = neo_db.open(tm)
    a = conn.root()["exa"] = na.full((10**18, 2), -1.0, chunks=(4096, 2))
    a[:10] = 1.0
    a[5 * 10**17] = [2.0, 3.0]
    a[10**18 - 1] = [4.0, 5.0]
    tm.commit()
    darr = a.to_dask()
    assert len(darr.__dask_graph__()) <= 6            # 3 chunks and 2 gaps
    assert darr.shape == (10**18, 2) and darr.numblocks == (5, 1)
    np.testing.assert_array_equal(darr[:12, 0].compute(scheduler="sync"), [1.0] * 10 + [-1.0] * 2)
    assert darr[5 * 10**17 - 1:5 * 10**17 + 1].sum().compute(scheduler="sync") == 3.0
    tm.abort()
    conn.close()


def test_scattered_chunks_are_bounded(monkeypatch):
    from neoarray.array import dasks
    a = na.zeros((10**6, 10**6), chunks=(10, 10))
    for i in range(5):
        a[i * 1000 + 500, (4 - i) * 1000 + 500] = 1.0   # 5 chunks on a diagonal: 11 x 11 blocks
    assert a.to_dask().numblocks == (11, 11)
    monkeypatch.setattr(dasks, "DASK_BLOCKS_MAX", 100)
    with pytest.raises(na.ArrayValueError, match="121 blocks for 5 stored chunks"):
        a.to_dask()


def test_tokens_name_the_oid_and_snapshot(stored, neo_db):
    a, _x, tm = stored
    token = dask.base.tokenize(a)
    assert dask.base.tokenize(a) == token
    assert dask.base.tokenize(pickle.loads(pickle.dumps(a))) == token    # same snapshot
    assert a.to_dask().name == a.to_dask().name
    a[5, 5] = 7.0
    assert dask.base.tokenize(a) != dask.base.tokenize(a)      # uncommitted: never reused
    tm.commit()
    assert dask.base.tokenize(a) not in (token, dask.base.tokenize(na.zeros(3)))
    with pytest.raises(na.ArrayHandleError, match="commit"):
        a[6, 5] = 1.0
        a.to_dask()


def test_from_dask_and_store_round_trip(client, neo_db):
    tm = transaction.TransactionManager()
    conn = neo_db.open(tm)
    source = da.arange(3000.0, chunks=700).reshape(1000, 3) * 2
    with client.as_current():                       # blocks computed by the workers
        a = na.from_dask(source, chunks=(128, 3), codec="zlib")
    conn.root()["from_dask"] = a
    tm.commit()
    np.testing.assert_array_equal(a[...], source.compute())
    b = conn.root()["store"] = na.zeros((1000, 3), chunks=(100, 3))
    tm.commit()
    with client.as_current():
        na.from_dask(a.to_dask() + 1.0, out=b)     # read through handles, written here
    tm.commit()
    np.testing.assert_array_equal(b[...], source.compute() + 1.0)
    da.store(source - 1.0, b, scheduler="sync")
    tm.commit()
    np.testing.assert_array_equal(b[...], source.compute() - 1.0)
    with pytest.raises(na.ArrayShapeError, match="shape"):
        na.from_dask(source[:10], out=b)
    tm.abort()
    conn.close()
