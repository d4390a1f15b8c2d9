"""Out-of-core operations on an array 8x larger than ``memory_bytes_max`` stay within it:
the memory they allocate (tracemalloc, which traces numpy's buffers too) peaks below
1.5 times the bound.  The array is in a MappingStorage (whose loads copy nothing, and
no client cache), the results are attached arrays of the same connection, so their
written chunks spill to savepoints as the operation goes."""
import tracemalloc

import numpy as np
import pytest
import transaction
import ZODB
import ZODB.MappingStorage

import neoarray.array as na
from neoarray.array import ordering

ITEMS = 1 << 20                 # 8 MiB of float64
CHUNK_ITEMS = 2048              # 16 KiB chunks
BOUND_BYTES = 1 << 20


@pytest.fixture(scope="module")
def stored():
    """A connection and its array of ``ITEMS`` scrambled values (all distinct)."""
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    a = conn.root()["a"] = na.zeros((ITEMS,), chunks=(CHUNK_ITEMS,))
    a[...] = (np.arange(ITEMS, dtype=np.uint64) * np.uint64(2654435761) % np.uint64(ITEMS)) * 0.5
    tm.commit()
    yield conn, tm
    tm.abort()
    conn.close()
    db.close()


def _store(conn, expr):
    out = conn.root()["out"] = na.zeros((ITEMS,), chunks=(CHUNK_ITEMS,))
    conn.add(out)
    na.store(expr, out)
    return out


OPERATIONS = {
    "sort": lambda conn, a: ordering.sort(a),
    "argsort": lambda conn, a: np.argsort(a),
    "store": lambda conn, a: _store(conn, a + 1),
    "where": lambda conn, a: _store(conn, np.where(a > 5, a, 0)),
    "cumsum": lambda conn, a: np.cumsum(a),
}
TOP = (ITEMS - 1) * 0.5         # the largest value
CHECKS = {
    "sort": lambda a, out: out[:3].tolist() == [0.0, 0.5, 1.0] and out[ITEMS - 1] == TOP,
    "argsort": lambda a, out: a[int(out[0])] == 0 and a[int(out[ITEMS - 1])] == TOP,
    "store": lambda a, out: out[1] == a[1] + 1 and out[ITEMS - 1] == a[ITEMS - 1] + 1,
    "where": lambda a, out: out[0] == 0 and out[ITEMS - 1] == a[ITEMS - 1],
    "cumsum": lambda a, out: out[ITEMS - 1] == TOP * ITEMS / 2,
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_an_out_of_core_operation_allocates_within_its_bound(stored, name):
    conn, tm = stored
    conn.cacheMinimize()
    a = conn.root()["a"]
    with na.configure(memory_bytes_max=BOUND_BYTES):
        tracemalloc.start()
        try:
            out = OPERATIONS[name](conn, a)
            peak_bytes = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak_bytes <= 1.5 * BOUND_BYTES, (name, peak_bytes)
    assert a.nbytes >= 8 * BOUND_BYTES
    assert CHECKS[name](a, out)
    tm.abort()
