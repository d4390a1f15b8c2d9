"""Arrays read through the coloured cache of a real cluster client."""
import numpy as np
import pytest
import transaction
import ZODB

import neoarray
import neoarray.array as na
from neoarray.array.errors import ArrayValueError
from neoarray.client.cache import CacheConfigError

SHAPE, CHUNKS = (64, 64), (16, 64)          # 4 chunks of 8 KiB


@pytest.fixture
def neo_db(neo_cluster):
    database = ZODB.DB(neo_cluster.open_storage(cache_bytes_max=4 << 20))
    tm = transaction.TransactionManager()
    conn = database.open(tm)
    conn.root()["a"] = a = na.zeros(SHAPE, chunks=CHUNKS)
    a[...] = np.arange(64 * 64, dtype=float).reshape(SHAPE)
    tm.commit()
    conn.close()
    database.storage._cache.clear()
    yield database
    database.close()


def fresh(database):
    tm = transaction.TransactionManager()
    conn = database.open(tm)
    conn.cacheMinimize()
    return conn, tm, conn.root()["a"]


def colour_stats(database):
    return database.storage.cache_stats()["colours"]


def test_chunks_are_cached_in_the_array_colour_and_hit_on_the_next_read(neo_db):
    conn, tm, a = fresh(neo_db)
    total = float(np.arange(64 * 64, dtype=float).sum())
    assert a.colour == "hot" and a.sum() == total
    hot = colour_stats(neo_db)["hot"]
    assert hot["objects"] == 4 and hot["misses"] >= 4
    assert a.sum() == total and np.asarray(a).sum() == total
    assert colour_stats(neo_db)["hot"]["hits"] >= hot["hits"] + 8
    conn.close()


def test_a_scan_colour_leaves_the_hot_colour_alone(neo_db):
    conn, tm, a = fresh(neo_db)
    with neoarray.cache_colour("scan"):
        a.sum()
        a[3:40]
    stats = colour_stats(neo_db)
    assert stats["hot"]["objects"] == 0 and stats["hot"]["misses"] == 0
    assert stats["scan"]["misses"] >= 4
    assert stats["meta"]["misses"] > 0           # the root, the array and its tree: meta
    conn.close()


def test_the_colour_is_stored_with_the_array(neo_db):
    conn, tm, a = fresh(neo_db)
    a.colour = "scan"
    tm.commit()
    conn.close()
    conn, tm, a = fresh(neo_db)
    assert a.colour == "scan"
    a.sum()
    assert colour_stats(neo_db)["hot"]["objects"] == 0
    with pytest.raises(ArrayValueError, match="non-empty name"):
        a.colour = 3
    a.colour = None
    assert a.colour == na.config.default_colour
    tm.abort()
    conn.close()


def test_an_unknown_colour_is_refused_by_name(neo_db):
    conn, tm, a = fresh(neo_db)
    a.colour = "warm"
    with pytest.raises(CacheConfigError, match="unknown cache colour 'warm'"):
        a.sum()
    neo_db.storage.add_cache_colour("warm", 0.2, "s3fifo")
    assert a.sum() == float(np.arange(64 * 64, dtype=float).sum())
    assert colour_stats(neo_db)["warm"]["objects"] == 4
    tm.abort()
    conn.close()


def test_cached_records_are_aligned_for_numpy(neo_db):
    conn, tm, a = fresh(neo_db)
    a.sum()
    from neoarray.array.fetch import payload_view
    storage = neo_db.storage
    for revs, _size, _colour in storage._cache.entries.values():
        for _serial, _next, data in revs:
            view = payload_view(data)
            if view is not None and len(view) == 16 * 64 * 8:
                assert np.frombuffer(view, dtype=float).ctypes.data % 64 == 0
    conn.close()


def test_records_loaded_by_load_many_are_cached_aligned_for_numpy(neo_db):
    """The other way chunk records enter the cache (``load_many``, which array reads use
    on a snapshot): placed so that their payload falls on 64 bytes too."""
    from neoarray.array.fetch import payload_offset, payload_view
    conn, tm, a = fresh(neo_db)
    oids = [chunk._p_oid for _key, chunk in a._tree.items()]
    storage = neo_db.storage
    storage._cache.clear()
    after_last = (int.from_bytes(storage.lastTransaction(), "big") + 1).to_bytes(8, "big")
    found = storage.load_many(oids, after_last, align=payload_offset)
    assert set(found) == set(oids)
    views = [payload_view(data) for data, _serial, _next in found.values()]
    assert all(v is not None and np.frombuffer(v, dtype=float).ctypes.data % 64 == 0 for v in views)
    for revs, _size, _colour in storage._cache.entries.values():          # the cached copies are those
        for _serial, _next, data in revs:
            view = payload_view(data)
            if view is not None and len(view) == 16 * 64 * 8:
                assert np.frombuffer(view, dtype=float).ctypes.data % 64 == 0
    conn.close()
