"""Chunk records kept in page blocks (``neoarray._vmem.Block``) and moved into mapped
views without a copy (``Region.adopt``, ``give_back``; ``MappedView._install_in_place``):
contents, isolation of writes, budgets, fork."""
import numpy as np
import pytest
import transaction
import ZODB

import neoarray.array as na
from neoarray import _vmem

from .test_process import run

CHUNK_ITEMS = 32768         # 256 KiB of float64: a payload of whole pages
CHUNKS = 16


def _region(mode, nbytes, installs):
    """A region whose loader puts a page of zeros where it is touched, noting where."""
    def loader(offset, is_write):
        installs.append(offset)
        region.install(offset, bytes(_vmem.PAGE_BYTES), False)
    region = _vmem.Region(nbytes, loader, _vmem.MODE_UFFD if mode == "uffd" else _vmem.MODE_MPROTECT,
                          False)
    return region


def _block(payload, head=b"head", tail=b".."):
    block = _vmem.Block(len(head) + len(payload) + len(tail), len(head), len(head) + len(payload))
    view = memoryview(block)
    view[:] = head + payload + tail
    view.release()
    block.freeze()
    return block


def test_a_block_moves_into_a_region_and_back(mode):
    payload = np.arange(2 << 20, dtype=np.uint8).tobytes()     # 2 MiB: huge page aligned
    block = _block(payload)
    installs = []
    region = _region(mode, 8 << 20, installs)
    v = np.frombuffer(region, dtype=np.uint8)
    held = memoryview(block)
    assert region.adopt(2 << 20, block) is False        # a buffer of it is alive: no move
    held.release()
    assert region.adopt(2 << 20, block) is True and block.lent
    with pytest.raises(BufferError, match="lent to a mapped view"):
        memoryview(block)
    assert v[2 << 20:4 << 20].tobytes() == payload and installs == []
    with pytest.raises(ValueError, match="whole pages inside the region"):
        region.adopt(7 << 20, _block(payload))
    assert region.give_back(2 << 20, block) is True and not block.lent
    assert bytes(memoryview(block)) == b"head" + payload + b".."
    v[2 << 20]                                          # faults again: the loader's bytes
    assert installs == [2 << 20]
    del v
    region.close()


def test_block_refuses_a_payload_that_is_not_whole_pages():
    with pytest.raises(ValueError, match="whole pages"):
        _vmem.Block(5000, 4, 4000)


@pytest.fixture
def two_dbs(native_cluster):
    dbs = [ZODB.DB(native_cluster.open_storage()) for _ in range(2)]
    yield dbs
    for db in dbs:
        db.close()


def _stored(dbs, name):
    tm = transaction.TransactionManager()
    conn = dbs[0].open(tm)
    conn.root()[name] = A = na.ndarray((CHUNKS * CHUNK_ITEMS,), dtype="float64",
                                       chunks=(CHUNK_ITEMS,))
    A[...] = np.arange(A.size, dtype=np.float64)
    tm.commit()
    conn.close()
    dbs[1]._storage.sync()          # the second client knows of the commit


def _open(db, name):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    return conn, conn.root()[name]


def _stats(array):
    return next(iter(array._v_views)).stats()


def test_cached_chunks_move_into_views_and_back_to_the_cache(two_dbs, mode):
    name = f"blocks-{mode}"
    _stored(two_dbs, name)
    conn, A = _open(two_dbs[1], name)       # read from the node's LMDB, kept in page blocks
    expected = np.arange(CHUNKS * CHUNK_ITEMS, dtype=np.float64)
    cache = two_dbs[1]._storage._cache
    for _ in range(2):
        with A.mapped(mode=mode) as v:
            np.testing.assert_array_equal(v, expected)
            stats = _stats(A)
            # every unit's pages moved in: by the loader, or by the fault handler alone
            # (units read ahead, armed)
            assert stats["adoptions"] + stats["fast_loads"] == CHUNKS
            assert stats["fast_loads"] > 0 and stats["faults"] < CHUNKS
        # closed: the records are back in the cache, whole, and read again
        assert cache.stats()["bytes"] >= CHUNKS * CHUNK_ITEMS * 8
    np.testing.assert_array_equal(A[...], expected)
    conn.close()


def test_a_write_into_a_moved_unit_stays_in_its_view_until_commit(two_dbs, mode):
    name = f"blocks-write-{mode}"
    _stored(two_dbs, name)
    writer, A = _open(two_dbs[1], name)
    reader, B = _open(two_dbs[1], name)     # same client: same cache
    with B.mapped(mode=mode) as w:
        assert w[5] == 5                    # the chunk is in the cache, in a page block
    with A.mapped(writable=True, mode=mode) as v:
        assert v[5] == 5 and _stats(A)["adoptions"] == 1
        v[5] = -1.0
        with B.mapped(mode=mode) as w:      # another connection of the same client
            assert w[5] == 5 and w[6] == 6
        assert B[5] == 5
        writer.transaction_manager.abort()
        assert v[5] == 5                    # the snapshot's bytes again
        v[7] = -7.0
        writer.transaction_manager.commit()
    reader.transaction_manager.begin()
    assert B[7] == -7 and B[5] == 5
    with B.mapped(mode=mode) as w:
        assert w[7] == -7 and w[8] == 8
    writer.close()
    reader.close()


def test_a_scan_over_moved_units_keeps_the_view_budget(native_cluster, two_dbs, mode):
    """Records the cache lends count in the cache's budget (up to its share for loans),
    the others in the view's: a scan keeps both bounds."""
    name = f"blocks-budget-{mode}"
    _stored(two_dbs, name)
    small = ZODB.DB(native_cluster.open_storage(cache_bytes_max=2 << 20))
    conn, A = _open(small, name)
    cache = small._storage._cache
    unit_bytes = CHUNK_ITEMS * 8
    with A.mapped(mode=mode, budget_bytes=3 * unit_bytes) as v:
        total, peak = 0.0, 0
        for i in range(0, v.size, CHUNK_ITEMS):
            total += float(v[i:i + CHUNK_ITEMS].sum())
            stats = _stats(A)
            peak = max(peak, stats["resident_bytes"] + stats["armed"] * unit_bytes
                       - stats["loaned_bytes"] + stats["pooled_bytes"])
            held = cache.stats()
            assert held["bytes"] + held["loaned_bytes"] <= held["bytes_max"]
        stats = _stats(A)
        assert peak <= 3 * unit_bytes and stats["adoptions"] > 0
        assert stats["loaned_bytes"] > 0 and stats["evictions"] > 0    # both bounds at work
        assert total == float(np.arange(v.size, dtype=np.float64).sum())
    assert cache.stats()["loaned_bytes"] == 0       # every loan ended at close
    conn.close()
    small.close()


def test_fork_child_sees_neither_the_lent_pages_nor_a_live_view(mode):
    done = run("""
        import os, sys, numpy as np
        from neoarray import _vmem
        mode = _vmem.MODE_UFFD if sys.argv[1] == "uffd" else _vmem.MODE_MPROTECT
        region = _vmem.Region(4 << 20, lambda offset, w: None, mode, False)
        payload = bytes(range(256)) * 8192
        block = _vmem.Block(len(payload) + 8, 4, 4 + len(payload))
        m = memoryview(block); m[4:-4] = payload; m.release()
        assert region.adopt(2 << 20, block)
        v = np.frombuffer(region, dtype=np.uint8)
        pid = os.fork()
        if pid == 0:
            try:
                memoryview(block)
                os._exit(1)
            except BufferError:
                pass
            del block           # the child frees its copy of the block's range
            v[2 << 20]          # never returns: the view is not the child's
            os._exit(2)
        _, status = os.waitpid(pid, 0)
        print("child", os.WTERMSIG(status) if os.WIFSIGNALED(status) else status)
        print("parent", v[(2 << 20) + 300] == 300 % 256)
        assert region.give_back(2 << 20, block)
        print("back", bytes(memoryview(block)[4:-4]) == payload)
        """, mode)
    assert done.returncode == 0, done.stderr
    assert "child 6" in done.stdout and "parent True" in done.stdout and "back True" in done.stdout
    assert "fork child" in done.stderr


def test_armed_units_take_writes_and_follow_new_snapshots(two_dbs, mode):
    name = f"blocks-armed-{mode}"
    _stored(two_dbs, name)
    conn, A = _open(two_dbs[1], name)
    other, B = _open(two_dbs[1], name)          # the same client: the same cache
    A[...]                                      # the records into the cache, in page blocks
    n = CHUNK_ITEMS
    with A.mapped(writable=True, mode=mode) as v:
        assert v[0] == 0 and v[n] == n          # a forward walk: the next units are armed
        assert _stats(A)["armed"] >= 3          # units 2 to 4 at least
        v[2 * n] = -2.0                         # a write into an armed unit
        assert v[2 * n] == -2 and v[2 * n + 1] == 2 * n + 1
        assert B[2 * n] == 2 * n                # not in the cache, nor the other connection
        conn.transaction_manager.abort()
        assert v[2 * n] == 2 * n
        assert v[3 * n] == 3 * n
        _write(two_dbs[0], name, 4 * n, -4.0)   # another client commits into an armed unit
        two_dbs[1]._storage.sync()
        conn.transaction_manager.begin()        # newer snapshot: armed records are dropped
        assert v[4 * n] == -4 and v[4 * n + 1] == 4 * n + 1
    other.close()
    conn.close()


def _write(db, name, index, value):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()[name][index] = value
    tm.commit()
    conn.close()


def test_threads_reading_armed_units_at_once_each_get_them_whole(mode):
    """The fault handler maps armed units by itself, from any thread, without the GIL:
    threads summing the same units at once all see every unit whole, once mapped."""
    import threading
    unit = 256 << 10
    units = 16
    installs = []
    region = _region(mode, units * unit, installs)
    blocks = [_block(np.full(unit, u, dtype=np.uint8).tobytes()) for u in range(units)]
    assert all(region.arm(u * unit, b) for u, b in enumerate(blocks))
    v = np.frombuffer(region, dtype=np.uint8).reshape(units, unit)
    sums = []

    def read(view):
        sums.append(view.sum(axis=1, dtype=np.int64).tolist())     # numpy drops the GIL here
    threads = [threading.Thread(target=read, args=(v,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sums == [[u * unit for u in range(units)]] * 4 and installs == []
    mapped = sorted(offset for offset, _, _ in region.take_mapped())
    assert mapped == [u * unit for u in range(units)] and all(b.lent for b in blocks)
    assert region.disarm(0) is None
    del v
    region.close()


def test_records_received_from_the_network_move_into_views(native_cluster, two_dbs, mode):
    """A client without local reads receives chunk records into page blocks (the data
    plane places them by their first bytes): its first view over them copies nothing."""
    name = f"blocks-remote-{mode}"
    _stored(two_dbs, name)
    remote = ZODB.DB(native_cluster.open_storage(local_reads=False))
    try:
        conn, A = _open(remote, name)
        with A.mapped(mode=mode) as v:
            np.testing.assert_array_equal(v, np.arange(CHUNKS * CHUNK_ITEMS, dtype=np.float64))
            stats = _stats(A)
            assert stats["adoptions"] + stats["fast_loads"] == CHUNKS
        conn.close()
    finally:
        remote.close()


def test_random_order_reads_of_cached_chunks_skip_the_python_loader(two_dbs, mode):
    """Once one fault finds its unit's record in the client cache, the view arms the
    window's other cached units: reads of them in any order are mapped by the fault
    handler alone (``faults`` counts the Python loader's calls); they read the
    snapshot's bytes, and their records go back to the cache at close."""
    name = f"blocks-random-{mode}"
    _stored(two_dbs, name)
    conn, A = _open(two_dbs[1], name)
    A[...]                                      # the records into the cache, in page blocks
    cache = two_dbs[1]._storage._cache
    cached_bytes = cache.stats()["bytes"]
    order = np.random.default_rng(7).permutation(CHUNKS)
    with A.mapped(mode=mode) as v:
        for u in order:
            assert v[u * CHUNK_ITEMS + 3] == u * CHUNK_ITEMS + 3
        stats = _stats(A)
        assert stats["faults"] == 1 and stats["fast_loads"] == CHUNKS - 1
        assert stats["eager_arms"] == CHUNKS - 1
        np.testing.assert_array_equal(v, np.arange(CHUNKS * CHUNK_ITEMS, dtype=np.float64))
    assert cache.stats()["bytes"] == cached_bytes      # every record back, whole
    np.testing.assert_array_equal(A[...], np.arange(CHUNKS * CHUNK_ITEMS, dtype=np.float64))
    conn.close()


def test_armed_cached_units_are_on_loan_and_follow_new_snapshots(two_dbs, mode):
    """Units armed from the cache hold records the cache lends (counted in its budget,
    not the view's: a small view budget arms every cached unit); a write into one stays
    in the view until commit, and a newer snapshot takes them back (the changed chunk
    reads its new bytes)."""
    name = f"blocks-random-budget-{mode}"
    _stored(two_dbs, name)
    conn, A = _open(two_dbs[1], name)
    other, B = _open(two_dbs[1], name)          # the same client: the same cache
    A[...]
    unit_bytes = CHUNK_ITEMS * 8
    n = CHUNK_ITEMS
    with A.mapped(writable=True, mode=mode, budget_bytes=6 * unit_bytes) as v:
        assert v[9 * n] == 9 * n
        armed = sorted(next(iter(A._v_views)).armed)
        assert armed == [u for u in range(CHUNKS) if u != 9]
        assert _stats(A)["loaned_bytes"] == CHUNKS * unit_bytes
        u = armed[0]
        v[u * n] = -1.0                         # a write into an armed unit
        assert B[u * n] == u * n                # not in the cache, nor the other connection
        conn.transaction_manager.abort()
        assert v[u * n] == u * n
        _write(two_dbs[0], name, armed[-1] * n + 5, -5.0)    # another client's commit
        two_dbs[1]._storage.sync()
        conn.transaction_manager.begin()        # newer snapshot: armed records are dropped
        assert _stats(A)["armed"] == 0
        assert v[armed[-1] * n + 5] == -5 and v[armed[-1] * n + 6] == armed[-1] * n + 6
        for u in np.random.default_rng(3).permutation(CHUNKS):
            assert v[u * n + 1] == u * n + 1
            stats = _stats(A)
            own = (stats["resident_bytes"] + stats["armed"] * unit_bytes + stats["pooled_bytes"]
                   - stats["loaned_bytes"])
            assert own <= 6 * unit_bytes
        assert _stats(A)["fast_loads"] > 0
    other.close()
    conn.close()


def test_freed_page_blocks_are_reused_warm_within_their_bound():
    """A freed Block's mapping is kept (bounded in bytes) for the next Block of the same
    geometry: a first read lands in touched memory.  A lent block's is not kept."""
    saved = _vmem.block_pool()["bytes_max"]
    try:
        _vmem.block_pool(bytes_max=0)           # empties the pool
        _vmem.block_pool(bytes_max=8 << 20)
        payload = np.arange(2 << 20, dtype=np.uint8).tobytes()
        first = _block(payload)
        address = first.address
        del first
        pool = _vmem.block_pool()
        assert pool["blocks"] == 1 and 2 << 20 < pool["bytes"] <= 8 << 20
        reused = pool["reused"]
        second = _block(payload[::-1])          # the same geometry: the same pages
        assert second.address == address and _vmem.block_pool()["reused"] == reused + 1
        assert bytes(memoryview(second)) == b"head" + payload[::-1] + b".."
        other = _vmem.Block(1 << 20, 0, 1 << 20)    # another geometry: fresh memory
        assert other.address != address
        blocks = [_vmem.Block(4 << 20, 0, 4 << 20) for _ in range(3)]
        del blocks                              # 12 MiB freed: the bound keeps 8 at most
        assert _vmem.block_pool()["bytes"] <= 8 << 20
        installs = []
        region = _region("mprotect", 4 << 20, installs)
        assert region.adopt(0, second) is True
        before = _vmem.block_pool()["blocks"]
        del second                              # lent: its payload is the region's now
        assert _vmem.block_pool()["blocks"] == before
        region.close()
        with pytest.raises(ValueError, match="bytes_max"):
            _vmem.block_pool(bytes_max=-1)
    finally:
        _vmem.block_pool(bytes_max=saved)


def test_a_whole_array_view_freed_ends_its_loans(two_dbs):
    """``numpy.asarray(A, copy=False)`` over cached chunks holds records on loan; when
    the numpy array is freed (no close), the loans end: the cache counts them no more."""
    import gc
    name = "blocks-freed-loans"
    _stored(two_dbs, name)
    conn, A = _open(two_dbs[1], name)
    A[...]
    cache = two_dbs[1]._storage._cache
    whole = np.asarray(A, copy=False)
    for u in np.random.default_rng(5).permutation(CHUNKS):
        assert whole[u * CHUNK_ITEMS] == u * CHUNK_ITEMS
    assert cache.stats()["loaned_bytes"] >= CHUNKS * CHUNK_ITEMS * 8
    del whole
    gc.collect()
    assert cache.stats()["loaned_bytes"] == 0
    np.testing.assert_array_equal(A[...], np.arange(CHUNKS * CHUNK_ITEMS, dtype=np.float64))
    conn.close()


def test_threads_reading_cached_units_in_random_order_get_the_snapshot(two_dbs, mode):
    """Threads (numpy drops the GIL in its sums) touching a view's cached units in
    different random orders at once: the fault handler maps each armed unit once, every
    thread sees every unit whole."""
    import threading
    name = f"blocks-threads-{mode}"
    _stored(two_dbs, name)
    conn, A = _open(two_dbs[1], name)
    A[...]
    expected = [float(np.arange(u * CHUNK_ITEMS, (u + 1) * CHUNK_ITEMS, dtype=np.float64).sum())
                for u in range(CHUNKS)]
    with A.mapped(mode=mode) as v:
        assert v[0] == 0                        # one fault: the other cached units armed
        sums = {}

        def read(seed):
            order = np.random.default_rng(seed).permutation(CHUNKS)
            got = [0.0] * CHUNKS
            for u in order:
                got[u] = float(v[u * CHUNK_ITEMS:(u + 1) * CHUNK_ITEMS].sum())
            sums[seed] = got
        threads = [threading.Thread(target=read, args=(seed,)) for seed in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sums == {seed: expected for seed in range(4)}
        stats = _stats(A)
        assert stats["faults"] == 1 and stats["fast_loads"] == CHUNKS - 1
    conn.close()
