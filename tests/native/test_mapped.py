"""Mapped views (neoarray.vm) against numpy: contents, writes, numpy functions, threads,
an exabyte-shaped array; each under userfaultfd and under the mprotect fallback."""
import threading

import numpy as np
import pytest
import transaction
import ZODB
import ZODB.MappingStorage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neoarray.array as na
from neoarray import vm
from neoarray.array.errors import ArrayIndexError, ArrayValueError

from .conftest import MODES

DTYPES = ["float64", "int32", "uint8", "complex128", "float32", "S3", ">i2"]


@st.composite
def cases(draw):
    """An array (detached) with some chunks written, its numpy twin, and a window."""
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 40 if ndim < 3 else 12), min_size=ndim,
                                max_size=ndim)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    order = draw(st.sampled_from("CF"))
    chunks = tuple(draw(st.integers(1, n + 2)) for n in shape)
    if draw(st.booleans()):     # chunks that are slabs of the array, some of page size
        outer = 0 if order == "C" else ndim - 1
        chunks = tuple(n if ax != outer else draw(st.sampled_from([1, 7, 4096]))
                       for ax, n in enumerate(shape))
    fill = draw(st.sampled_from([None, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = na.ndarray(shape, dtype=dtype, order=order, chunks=chunks, fill_value=fill)
    expected = np.full(shape, A.fill_value, dtype=dtype)
    for _ in range(draw(st.integers(0, 3))):
        box = tuple(slice(*sorted(rng.integers(0, n + 1, size=2))) for n in shape)
        data = rng.integers(0, 100, size=expected[box].shape).astype(dtype)
        A[box] = data
        expected[box] = data
    window = tuple(slice(*sorted(draw(st.tuples(st.integers(0, n), st.integers(0, n)))))
                   for n in shape)
    return A, expected, window


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_view_equals_the_array(mode, case):
    A, expected, window = case
    with A.mapped(mode=mode) as v:
        assert type(v) is np.ndarray and v.shape == A.shape and v.dtype == A.dtype
        np.testing.assert_array_equal(v, expected)
    with A.mapped(window, mode=mode) as v:
        np.testing.assert_array_equal(v, expected[window])
        np.testing.assert_array_equal(v, A[window])


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), seed=st.integers(0, 2**32 - 1))
def test_writes_through_a_view(mode, case, seed):
    A, expected, window = case
    rng = np.random.default_rng(seed)
    with A.mapped(window, writable=True, mode=mode, budget_bytes=1 << 16,
                  dirty_bytes_max=1 << 14) as v:
        sub = tuple(slice(*sorted(rng.integers(0, n + 1, size=2))) for n in v.shape)
        data = rng.integers(0, 100, size=v[sub].shape).astype(A.dtype)
        v[sub] = data
        expected[window][sub] = data
        np.testing.assert_array_equal(v, expected[window])
    np.testing.assert_array_equal(A[...], expected)     # a detached array: written at close
    fill = np.full(A.chunks, A.fill_value, dtype=A.dtype)
    for key in A.chunk_keys():      # chunks left all fill are removed, as by A[...] = v
        block = A[tuple(slice(k * c, (k + 1) * c) for k, c in zip(key, A.chunks))]
        assert not np.array_equal(block, fill[tuple(slice(0, n) for n in block.shape)])


def test_numpy_functions_on_views(mode):
    rng = np.random.default_rng(1)
    signal, matrix = rng.normal(size=300_000), rng.normal(size=(600, 80))
    S = na.asarray(signal, chunks=(65_536,))
    M = na.ndarray((600, 80), order="F", chunks=(128, 16))
    M[...] = matrix
    with S.mapped(mode=mode) as s, M.mapped(mode=mode) as m:
        np.testing.assert_allclose(np.fft.fft(s), np.fft.fft(signal))
        np.testing.assert_array_equal(np.sort(s), np.sort(signal))
        np.testing.assert_allclose(np.convolve(s[:5000], s[5000:5400]),
                                   np.convolve(signal[:5000], signal[5000:5400]))
        for got, want in zip(np.linalg.svd(m, full_matrices=False),
                             np.linalg.svd(matrix, full_matrices=False)):
            np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-9)
        np.testing.assert_allclose(m.T @ m, matrix.T @ matrix)


def test_exabyte_window_reads_fill_and_writes_far_away(mode):
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        conn.root()["big"] = A = na.ndarray((10**18, 2), dtype="float64", fill_value=0.5)
        tm.commit()
        far = 7 * 10**17 + 12_345
        window = (slice(far - 500_000, far + 500_000), slice(None))
        with A.mapped(window, writable=True, mode=mode) as v:
            assert v.shape == (1_000_000, 2) and (v[::997] == 0.5).all()
            v[500_000] = [1.0, 2.0]
        tm.commit()
        np.testing.assert_array_equal(A[far], [1.0, 2.0])
        assert A[far - 1, 0] == 0.5 and len(list(A.chunk_keys())) == 1
        with pytest.raises(na.ArrayTooLargeError, match="A.mapped"):
            np.asarray(A, copy=False)
    finally:
        tm.abort()
        conn.close()
        db.close()


def test_zero_fill_costs_no_memory(mode):
    A = na.ndarray((1 << 28,), dtype="uint8", chunks=(1 << 21,))
    before = vm_resident_bytes()
    with A.mapped(mode=mode, budget_bytes=1 << 30) as v:
        assert int(v[::4096].sum()) == 0        # 256 MiB of zero pages, shared
        assert vm_resident_bytes() - before < 16 << 20


def vm_resident_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def test_threads_faulting_at_once(mode):
    data = np.arange(4_000_000, dtype=np.float64)
    A = na.asarray(data, chunks=(100_000,))
    with A.mapped(mode=mode, budget_bytes=8 << 20) as v:
        sums, errors = {}, []

        def scan(i):
            try:       # the threads walk the same chunks, in opposite directions
                step = 1 if i % 2 else -1
                sums[i] = sum(float(v[j * 100_000:(j + 1) * 100_000].sum())
                              for j in range(40)[::step])
            except BaseException as exc:   # noqa: BLE001 - reported below
                errors.append(exc)
        threads = [threading.Thread(target=scan, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and set(sums.values()) == {float(data.sum())}


def test_bad_windows_and_modes_are_refused():
    A = na.ndarray((10, 10))
    with pytest.raises(ArrayValueError, match="step 1"):
        A.mapped((slice(0, 10, 2),)).__enter__()
    with pytest.raises(ArrayIndexError, match="out of bounds"):
        A.mapped((12,)).__enter__()
    with pytest.raises(ArrayValueError, match="not one of"):
        A.mapped(mode="paging").__enter__()
    with A.mapped((3, slice(2, 5))) as v:
        assert v.shape == (3,) and not v.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            v[0] = 1
    assert vm.available()["mprotect"]


def test_dirty_pages_over_their_bound_are_written_early(mode):
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        conn.root()["a"] = A = na.ndarray((64, 8192), dtype="float64", chunks=(1, 8192))
        tm.commit()
        with A.mapped(writable=True, mode=mode, dirty_bytes_max=4 * 65536) as v:
            for row in range(64):
                v[row] = row + 1
            # all but the last few rows (dirty, at most the bound) are in the transaction
            written = [row for row in range(64) if A[row, 0] == row + 1]
            assert written == list(range(len(written))) and 64 - 4 <= len(written) < 64
            tm.commit()
        tm2 = transaction.TransactionManager()
        other = db.open(tm2)
        np.testing.assert_array_equal(other.root()["a"][:, 5], np.arange(1, 65))
        other.close()
    finally:
        tm.abort()
        conn.close()
        db.close()


def test_writes_through_the_array_reach_open_views(mode):
    A = na.ndarray((300, 70), dtype="int32", order="F", chunks=(16, 7))
    A[:, 3] = 5
    with A.mapped(mode=mode) as v, A.mapped((slice(10, 200), slice(2, 9)), mode=mode) as w:
        assert v[20, 3] == 5 and w[10, 1] == 5 and v[299, 69] == 0      # units now in
        A[20, 3] = 8            # a stored chunk
        A[299, 69] = 9          # an unwritten one
        A[:, 3] = 0             # chunks left all fill are removed
        A[30, 4] = 1
        expected = A[...]
        np.testing.assert_array_equal(v, expected)
        np.testing.assert_array_equal(w, expected[10:200, 2:9])


def test_whole_array_views_unmap_when_freed():
    A = na.asarray(np.arange(1000.0), chunks=(100,))
    for _ in range(4200):       # more than the 4096 views open at once
        view = np.asarray(A, copy=False)
        assert view[999] == 999.0 and not view.flags.writeable
        del view


@pytest.mark.parametrize("codec", ["zstd", "blosc", "lz4", "zlib"])
def test_compressed_chunks_decode_into_the_units(mode, codec):
    """Slab chunks of a compressed array are decoded straight into the staging unit
    (numcodecs) or decoded and copied (zlib): the view reads and writes them."""
    data = np.random.default_rng(1).integers(0, 1000, 40_000).astype(np.float64)
    A = na.ndarray(data.shape, dtype="float64", chunks=(4096,), codec=codec)
    A[...] = data
    with A.mapped(writable=True, mode=mode, budget_bytes=4 * 32768) as v:
        np.testing.assert_array_equal(v, data)      # evicted and read again on the way
        v[5000:9000] = -1.0
    data[5000:9000] = -1.0
    np.testing.assert_array_equal(A[...], data)


def test_install_filled_writes_in_place_and_survives_a_kept_view(mode):
    """``Region.install_filled``: the bytes fill writes are the unit's; a fill that
    raises installs nothing; one that keeps a view of the staging block gets a copy
    installed, and its view stays readable."""
    from neoarray import _vmem
    unit = 64 << 10
    code = _vmem.MODE_UFFD if mode == "uffd" else _vmem.MODE_MPROTECT
    region = _vmem.Region(4 * unit, lambda offset, is_write: None, code, False)
    try:
        pages = np.frombuffer(region, dtype=np.uint8)

        def fill(out):
            np.frombuffer(out, dtype=np.uint8)[:] = 7
        region.install_filled(unit, unit, fill)
        assert pages[unit:2 * unit].min() == pages[unit:2 * unit].max() == 7

        def broken(out):
            raise RuntimeError("decoder failed")
        with pytest.raises(RuntimeError, match="decoder failed"):
            region.install_filled(0, unit, broken)
        kept = []

        def keeping(out):
            kept.append(np.frombuffer(out, dtype=np.uint8))
            kept[0][:] = 9
        region.install_filled(2 * unit, unit, keeping)
        assert pages[2 * unit:3 * unit].max() == 9 and kept[0].max() == 9
        with pytest.raises(ValueError, match="not whole pages"):
            region.install_filled(3 * unit + 1, unit, fill)
        del pages
    finally:
        region.close()


def test_prefill_pools_touched_blocks_for_installs(mode):
    """``Region.prefill`` touches blocks (off the fault path) that installs then use;
    it stops at its count, at the pool's bound, and once the region is closed."""
    from neoarray import _vmem
    unit = 2 << 20
    code = _vmem.MODE_UFFD if mode == "uffd" else _vmem.MODE_MPROTECT
    region = _vmem.Region(4 * unit, lambda offset, is_write: None, code, False)
    try:
        assert region.prefill(unit, 3) == 3 and region.pooled == 3
        assert region.prefill(unit, 2) == 0 and region.pooled == 3
        assert region.prefill(unit, 100) == 5 and region.pooled == 8     # the bound
        region.install(0, np.full(unit, 5, dtype=np.uint8))
        assert region.pooled == 7
        pages = np.frombuffer(region, dtype=np.uint8)
        assert pages[:unit].min() == pages[:unit].max() == 5
        with pytest.raises(ValueError, match="whole pages"):
            region.prefill(unit + 1, 1)
        del pages
    finally:
        region.close()
    assert region.prefill(unit, 2) == 0
