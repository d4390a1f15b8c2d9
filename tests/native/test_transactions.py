"""Writes through mapped views in ZODB transactions, between two clients of a real cluster:
commit, abort, conflicts, and views following their connection's newer snapshots."""
import numpy as np
import pytest
import transaction
import ZODB
from ZODB.POSException import ConflictError

import neoarray.array as na


@pytest.fixture
def clients(native_cluster):
    """Two clients (databases over their own storage connections) of one cluster, and a
    fresh root name for the test's array."""
    dbs = [ZODB.DB(native_cluster.open_storage()) for _ in range(2)]
    conns = [db.open(transaction.TransactionManager()) for db in dbs]
    yield conns
    for conn, db in zip(conns, dbs):
        conn.transaction_manager.abort()
        conn.close()
        db.close()


def _shared_array(conns, name, fill_value=None):
    first, second = conns
    first.root()[name] = na.ndarray((64, 1024), dtype="float64", chunks=(8, 1024),
                                    fill_value=fill_value)
    first.root()[name][0:8] = 1.0
    first.transaction_manager.commit()
    second.transaction_manager.begin()
    return first.root()[name], second.root()[name]


def test_commit_is_seen_by_another_client_and_abort_is_not(clients, mode):
    a1, a2 = _shared_array(clients, f"commit-{mode}")
    tm1, tm2 = (c.transaction_manager for c in clients)
    with a1.mapped(writable=True, mode=mode) as v:
        v[3, :4] = [5, 6, 7, 8]         # a stored chunk
        v[40, 0] = 9                    # an unwritten one
        tm1.commit()
        v[50, 0] = 11                   # then aborted
        v[3, 0] = 12
        tm1.abort()
        assert v[50, 0] == 0 and v[3, 0] == 5       # the snapshot's bytes fault in again
    tm2.begin()
    np.testing.assert_array_equal(a2[3, :5], [5, 6, 7, 8, 1])
    assert a2[40, 0] == 9 and a2[50, 0] == 0
    with a2.mapped(mode=mode) as w:
        assert w[3, 1] == 6 and w[40, 0] == 9 and w[50, 0] == 0


def test_zeroed_chunk_is_removed(clients, mode):
    a1, _ = _shared_array(clients, f"zeroed-{mode}")
    with a1.mapped((slice(0, 16),), writable=True, mode=mode) as v:
        v[0:8] = 0
    clients[0].transaction_manager.commit()
    assert list(a1.chunk_keys()) == []


def test_two_writers_of_one_chunk_conflict(clients, mode):
    a1, a2 = _shared_array(clients, f"conflict-{mode}")
    tm1, tm2 = (c.transaction_manager for c in clients)
    with a1.mapped(writable=True, mode=mode) as v1, a2.mapped(writable=True, mode=mode) as v2:
        v1[2, 2] = 1.5
        v2[2, 3] = 2.5      # the same chunk
        tm1.commit()
        with pytest.raises(ConflictError):
            tm2.commit()
        tm2.abort()
        assert v2[2, 3] == 1.0 and v2[2, 2] == 1.5      # now at the newer snapshot
    tm2.begin()
    assert a2[2, 2] == 1.5 and a2[2, 3] == 1.0


def test_view_follows_newer_snapshots(clients, mode):
    a1, a2 = _shared_array(clients, f"snapshot-{mode}")
    tm1, tm2 = (c.transaction_manager for c in clients)
    with a2.mapped(mode=mode) as w:
        assert w[1, 1] == 1.0 and w[20, 1] == 0.0      # both units now resident
        a1[1, 1] = 3.0          # a stored chunk changes
        a1[20, 1] = 4.0         # an unwritten chunk is written
        tm1.commit()
        assert w[1, 1] == 1.0 and w[20, 1] == 0.0      # still the old snapshot
        tm2.begin()
        assert w[1, 1] == 3.0 and w[20, 1] == 4.0


def test_savepoint_rollback_restores_the_views_pages(clients, mode):
    a1, a2 = _shared_array(clients, f"savepoint-{mode}")
    tm1, tm2 = (c.transaction_manager for c in clients)
    with a1.mapped(writable=True, mode=mode) as v:
        v[3, 0] = 5                         # dirty at the savepoint
        savepoint = tm1.savepoint()
        v[3, 0], v[3, 1] = 6, 7             # the same unit, after it
        v[40, 0] = 9                        # an unwritten chunk, after it
        savepoint.rollback()
        assert (v[3, 0], v[3, 1], v[40, 0]) == (5, 1, 0)
        v[3, 2] = 8                         # still writable, still dirty
        tm1.commit()
    tm2.begin()
    np.testing.assert_array_equal(a2[3, :4], [5, 1, 8, 1])
    assert a2[40, 0] == 0 and list(a2.chunk_keys()) == [(0, 0)]


def test_savepoint_rollback_undoes_early_write_backs(clients, mode):
    """A savepoint taken before the view was written, then writes over the dirty
    bound (written back into the chunks early): the rollback undoes all of them."""
    a1, a2 = _shared_array(clients, f"savepoint-early-{mode}")
    tm1, tm2 = (c.transaction_manager for c in clients)
    with a1.mapped(writable=True, mode=mode, dirty_bytes_max=64 << 10) as v:
        assert v[0, 0] == 1
        clean = tm1.savepoint()
        v[0, 0] = 2
        kept = tm1.savepoint()
        v[0:8] = 3                          # after `kept`, in the unit dirty at `kept`
        v[8:24] = 4                         # two more units: early write-backs
        v[60, 5] = 5
        kept.rollback()
        assert v[0, 0] == 2 and v[0, 1] == 1 and v[8:24].max() == 0 and v[60, 5] == 0
        v[30, 0] = 6
        clean.rollback()
        assert v[0, 0] == 1 and v[30, 0] == 0 and float(v[8:].max()) == 0.0
        v[63, 1] = 7
        tm1.commit()
    tm2.begin()
    assert a2[0, 0] == 1 and a2[63, 1] == 7 and a2[30, 0] == 0
    assert sorted(a2.chunk_keys()) == [(0, 0), (7, 0)]
