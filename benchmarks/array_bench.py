"""neoarray.ndarray against array peers: write, cold/warm read, random reads, sum.

One float64 1-D array of ``--gib`` GiB in chunks of ``--chunk-mib`` MiB, for:
neoarray on a LocalCluster (1 storage node on this host, so the client reads its
LMDB directly), ``neoarray-remote`` (the same with ``local_reads=False``: every chunk
crosses the data plane's TCP connection, as for a client on another host), numpy in
memory, ``numpy.memmap``, zarr v3 (local directory store, no compression), h5py
(chunked, no compression), ``disk``: the disk itself, one file written
sequentially chunk by chunk then ``fdatasync``, read back with ``readinto``, and
``disk-dropbehind``: the same, made durable and dropped from the page cache every 64 MiB
(on this VM, page-cache pages taken from fresh memory cost 3-5 s of kernel CPU per
GiB, recycled ones 0.5 s: this is the best durable sequential write here).

Figures, per system::

    write      write the whole array from memory and make it durable (commit, flush;
               zarr's and h5py's files are not fsynced), best of ``--write-repeat``
               (2), the systems taking turns in an order reversed each time
    cold_read  read it all into a new numpy array, OS page cache dropped (if root),
               client caches empty and freed memory given back to the OS (neoarray:
               its cluster restarted first, so that no process maps the pages); the
               systems take turns, best of ``--cold-repeat`` (3)
    warm_read  the same again: neoarray reads from its client cache (the array's
               colour, ``hot``; the cache is sized to hold the array, see
               ``--neo-cache-gib``), the others from memory or the OS page cache
    random     one item at 1,000 random indices, one read each (ms per read)
    sum        full sum, warm (GB/s), the median of ``SUM_REPEAT`` (3) sums
    sort       np.sort of the same array (same data; with ``--sort-mib M``, of another
               array of M MiB of normal random numbers instead), result included (GB/s
               of that array), with ``peak_mib`` as below; neoarray under
               memory_bytes_max = ``--sort-memory-fraction`` (0.25) of it, so its
               external merge sort spills runs; numpy, neoarray
    percentile np.percentile(x, [1, 50, 99]) of that array (exact; GB/s), neoarray under
               the same bound (selection passes); numpy, neoarray, and dask.array
               (``da.percentile``: approximate, marked ``"exact": false``) when installed;
               ``peak_mib`` too
    expr_store, where, cumsum
               on that array (the main one by default): ``A + 1`` written to a new array (neoarray: ``na.store``
               into a stored array, then commit; numpy: ``x + 1``; dask:
               ``(d + 1).compute()``), ``np.where(A > 0, A, 0)`` stored likewise, and
               ``np.cumsum(A)`` (GB/s of the input), each with ``peak_mib``, the most
               anonymous memory the process held above its level before the operation;
               neoarray under the same memory_bytes_max, its client cache held to
               that bound too (for these rows and sort/percentile), so ``peak_mib``
               is its whole footprint

stdout: one JSON line per figure ``{"bench", "system", "value", "unit"}``, then a
summary line ``{"summary": ...}`` with neoarray's speed relative to each peer
(``> 1``: neoarray is faster; against ``disk``, ``write`` is neoarray's durable write
over the disk's sequential write rate with fdatasync) and ``remote_vs_local``, the
remote client's figures over the co-located one's.  stderr: a markdown table.

    python benchmarks/array_bench.py            # 4 GiB
    python benchmarks/array_bench.py --quick    # 256 MiB, well under a minute
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

GB = 1e9
BENCHES = ("write", "cold_read", "warm_read", "random", "sum", "sort", "percentile", "expr_store", "where", "cumsum")
ORDER_SYSTEMS = ("numpy", "neoarray", "dask")       # the systems of the sort and percentile rows
PERCENTILES = [1, 50, 99]
UNITS = {"random": "ms"}


# ---------------------------------------------------------------------- helpers

def drop_page_cache() -> bool:
    """Drop the OS page cache (root only); return False when it is not possible."""
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


SUM_REPEAT = 3


def timed(func):
    gc.collect()
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def gbps(nbytes, seconds):
    return nbytes / seconds / GB


def source_array(n: int) -> np.ndarray:
    """The data written by every system: the values 0, 0.5, 1, ... scrambled (a
    multiplicative permutation when ``n`` is a power of two: the sort rows have work to
    do), made block by block."""
    out = np.empty(n, np.float64)
    block = 1 << 24
    for start in range(0, n, block):
        index = np.arange(start, min(n, start + block), dtype=np.uint64)
        out[start:start + index.size] = (index * np.uint64(2654435761) % np.uint64(n)) * 0.5
    return out


def random_indices(n: int, count: int) -> np.ndarray:
    return np.random.default_rng(42).integers(0, n, size=count)


def time_random(read_item, indices) -> float:
    """Mean ms per single-item read."""
    start = time.perf_counter()
    for i in indices:
        read_item(int(i))
    return (time.perf_counter() - start) * 1e3 / len(indices)


def blockwise_sum(read_block, n: int, block: int) -> float:
    """Sum of a 1-D array read ``block`` items at a time (bounded memory)."""
    return float(sum(read_block(i, min(i + block, n)).sum() for i in range(0, n, block)))


# ---------------------------------------------------------------------- systems

class System:
    """One system under test; subclasses fill these in (``None``: not measured)."""

    name = "?"

    def __init__(self, workdir, n, chunk_items):
        self.workdir, self.n, self.chunk_items = workdir, n, chunk_items

    def write(self, src): ...

    def make_cold(self): ...

    def read_all(self): ...

    def read_item(self, i): ...

    def total(self): ...

    def close(self): ...


class NumpySystem(System):
    name = "numpy"

    def write(self, src):
        self.x = np.empty_like(src)
        self.x[...] = src

    def make_cold(self):
        return None      # no cold state in memory

    def read_all(self):
        return self.x.copy()

    def read_item(self, i):
        return self.x[i]

    def total(self):
        return float(self.x.sum())

    def close(self):
        self.x = None


class MemmapSystem(NumpySystem):
    """numpy on a file mapping: reads, element access and sums as numpy's."""

    name = "memmap"

    def write(self, src):
        path = os.path.join(self.workdir, "memmap.f8")
        self.x = None
        mm = np.memmap(path, dtype=np.float64, mode="w+", shape=(self.n,))
        mm[...] = src
        mm.flush()
        del mm
        self.path = path
        self.x = np.memmap(path, dtype=np.float64, mode="r", shape=(self.n,))

    def make_cold(self):
        self.x = np.memmap(self.path, dtype=np.float64, mode="r", shape=(self.n,))
        return True

    def read_all(self):
        return np.array(self.x)


class ZarrSystem(System):
    name = "zarr"

    def write(self, src):
        import zarr
        self.path = os.path.join(self.workdir, "zarr")
        self.z = zarr.create_array(store=zarr.storage.LocalStore(self.path),
                                   shape=(self.n,), chunks=(self.chunk_items,),
                                   dtype="f8", compressors=None, fill_value=0.0, overwrite=True)
        self.z[...] = src

    def make_cold(self):
        import zarr
        self.z = zarr.open_array(zarr.storage.LocalStore(self.path), mode="r")
        return True

    def read_all(self):
        return self.z[...]

    def read_item(self, i):
        return self.z[i]

    def total(self):
        return blockwise_sum(lambda a, b: self.z[a:b], self.n, 8 * self.chunk_items)

    def close(self):
        self.z = None


class H5System(System):
    name = "h5py"

    def write(self, src):
        import h5py
        if getattr(self, "f", None) is not None:
            self.f.close()
        self.path = os.path.join(self.workdir, "data.h5")
        with h5py.File(self.path, "w") as f:
            f.create_dataset("x", shape=(self.n,), chunks=(self.chunk_items,), dtype="f8")[...] = src
        self._open()

    def _open(self):
        import h5py
        self.f = h5py.File(self.path, "r")
        self.x = self.f["x"]

    def make_cold(self):
        self.f.close()
        self._open()
        return True

    def read_all(self):
        return self.x[...]

    def read_item(self, i):
        return self.x[i]

    def total(self):
        return blockwise_sum(lambda a, b: self.x[a:b], self.n, 8 * self.chunk_items)

    def close(self):
        if getattr(self, "f", None) is not None:
            self.f.close()
            self.f = None


class DiskSystem(System):
    """The disk itself: the array's bytes in one file, written in chunks then
    ``fdatasync`` (what a durable write can reach), read back with ``readinto``."""

    name = "disk"

    def write(self, src):
        self.close()
        self.path = os.path.join(self.workdir, f"{self.name}.f8")
        raw = memoryview(src).cast("B")
        step = self.chunk_items * 8
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for start in range(0, len(raw), step):
                view = raw[start:start + step]
                while view:
                    view = view[os.write(fd, view):]
                self.written(fd, start + step)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        self.fd = os.open(self.path, os.O_RDONLY)

    def written(self, fd: int, nbytes: int) -> None:
        """After each chunk written (``nbytes`` in the file so far): nothing here."""

    def make_cold(self):
        return True

    def _read(self, start_item: int, stop_item: int) -> np.ndarray:
        out = np.empty(stop_item - start_item, dtype=np.float64)
        view, offset = memoryview(out).cast("B"), start_item * 8
        while view:
            got = os.preadv(self.fd, [view], offset)
            if got == 0:
                raise EOFError(f"{self.path}: short file")
            view, offset = view[got:], offset + got
        return out

    def read_all(self):
        return self._read(0, self.n)

    def read_item(self, i):
        return self._read(int(i), int(i) + 1)[0]

    def total(self):
        return blockwise_sum(self._read, self.n, 8 * self.chunk_items)

    def close(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None


class DiskDropBehindSystem(DiskSystem):
    """The disk at its best for a durable sequential write on this machine: as
    ``disk``, but every ``DROP_BEHIND_BYTES`` written is made durable (``fdatasync``)
    and dropped from the page cache (``posix_fadvise(DONTNEED)``), so that the file's
    pages come from recycled memory instead of fresh memory (what a storage node's
    large stores do: ``neoarray/kv.py``, ``_WriteBehind``)."""

    name = "disk-dropbehind"
    DROP_BEHIND_BYTES = 64 << 20

    def write(self, src):
        self.dropped = 0
        super().write(src)

    def written(self, fd: int, nbytes: int) -> None:
        if nbytes - self.dropped >= self.DROP_BEHIND_BYTES:
            os.fdatasync(fd)
            os.posix_fadvise(fd, self.dropped, nbytes - self.dropped, os.POSIX_FADV_DONTNEED)
            self.dropped = nbytes


class NeoSystem(System):
    """neoarray on a LocalCluster; a fresh client (empty caches) for cold reads."""

    name = "neoarray"
    local = True        # the client may read the co-located storage node's LMDB

    def __init__(self, workdir, n, chunk_items, cache_bytes_max=64 << 20):
        super().__init__(workdir, n, chunk_items)
        from neoarray.cluster import LocalCluster
        self.cache_bytes_max = cache_bytes_max
        self.cluster = LocalCluster(os.path.join(workdir, "neo"), storages=1, replicas=0)
        self.cluster.start()
        self.db = self.conn = self.tm = None
        self._open()

    def _open(self):
        import transaction
        import ZODB
        self._close_db()
        self.storage = self.cluster.open_storage(cache_bytes_max=self.cache_bytes_max, local_reads=self.local)
        self.db = ZODB.DB(self.storage)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)

    @property
    def local_reads(self) -> bool:
        local = getattr(self.storage, "_local", None)
        return bool(local is not None and local.readers)

    def write(self, src):
        import neoarray.array as na
        a = na.zeros((self.n,), chunks=(self.chunk_items,))
        self.conn.root()["a"] = a
        a[...] = src
        self.tm.commit()
        self.conn.cacheMinimize()

    def make_cold(self):
        """A new client, and the cluster restarted: a storage node that mapped the
        pages while it served them keeps them through a drop of the page cache (the
        kernel drops no mapped page), so without the restart the read is warm."""
        self._close_db()
        self.cluster.stop()
        self.cluster.start()
        self._open()
        return True

    @property
    def a(self):
        return self.conn.root()["a"]

    def read_all(self):
        return self.a[...]

    def read_item(self, i):
        return self.a[i]

    def total(self):
        return float(self.a.sum())

    def _close_db(self):
        if self.db is not None:
            self.tm.abort()
            self.conn.close()
            self.db.close()
            self.db = None

    def close(self):
        try:
            self._close_db()
        finally:
            self.cluster.stop()


class NeoRemoteSystem(NeoSystem):
    """neoarray with ``local_reads=False``: a client on another host."""

    name = "neoarray-remote"
    local = False


SYSTEMS = {"neoarray": NeoSystem, "neoarray-remote": NeoRemoteSystem, "numpy": NumpySystem,
           "memmap": MemmapSystem, "zarr": ZarrSystem, "h5py": H5System, "disk": DiskSystem,
           "disk-dropbehind": DiskDropBehindSystem}


# ---------------------------------------------------------------------- sort, percentile

def order_figures(args, workdir, results):
    """The ``sort`` and ``percentile`` rows: numpy in memory, neoarray in bounded memory
    (external merge sort, selection passes), dask.array's approximate percentile."""
    if args.sort_mib is None:           # the main array, the same data
        n = int(args.gib * (1 << 30)) // 8
        data = source_array(n)
    else:
        n = int(args.sort_mib * (1 << 20)) // 8
        data = np.random.default_rng(7).normal(size=n)
    ordered = np.sort(data)                 # its first, middle and last items only
    expected_sorted = (ordered[0], ordered[data.size // 2], ordered[-1])
    del ordered
    expected = np.percentile(data, PERCENTILES)
    names = [name for name in args.systems.split(",") if name in ORDER_SYSTEMS]
    if "dask" not in names and importable("dask.array"):
        names.append("dask")
    for name in names:
        if name == "numpy":
            seconds, peak, _ = measured(lambda: np.sort(data))
            emit(results, "sort", name, gbps(data.nbytes, seconds), items=n, peak_mib=peak)
            seconds, peak, _ = measured(lambda: np.percentile(data, PERCENTILES))
            emit(results, "percentile", name, gbps(data.nbytes, seconds), items=n, exact=True,
                 peak_mib=peak)
        elif name == "neoarray":
            neo_order_figures(args, workdir, data, expected_sorted, expected, results)
        elif name == "dask":
            seconds, peak, got = measured(lambda: dask_percentile(data, args.chunk_items))
            emit(results, "percentile", name, gbps(data.nbytes, seconds), items=n, exact=False,
                 max_abs_error=float(np.max(np.abs(got - expected))), peak_mib=peak)
    expression_figures(args, workdir, data, results)


class PeakSampler:
    """The most anonymous memory (MiB) held above the level at ``start``, sampled."""

    def __init__(self):
        import threading
        self.stop = threading.Event()
        self.base = self.peak = self.anon_kib()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def anon_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        return 0

    def _run(self):
        while not self.stop.wait(0.002):
            self.peak = max(self.peak, self.anon_kib())

    def close(self) -> float:
        self.stop.set()
        self.thread.join()
        return round(max(self.peak, self.anon_kib()) - self.base) / 1024


def measured(func):
    """``(seconds, peak MiB above the start, result)`` of ``func()``."""
    release_memory()
    sampler = PeakSampler()
    seconds, result = timed(func)
    return seconds, sampler.close(), result


@dataclass(frozen=True)
class Digest:
    """What a peer's result is checked against: its first item, last items and sum."""
    first: float
    last: np.ndarray
    total: float

    def check(self, got) -> None:
        # a peer may sum in another order (dask's cumsum: by blocks): equal within rounding
        assert np.isclose(got.flat[0], self.first) and np.allclose(got[-5:], self.last)
        assert np.isclose(float(got.sum(dtype=np.float64)), self.total, rtol=1e-6)


def expression_figures(args, workdir, data, results):
    """The ``expr_store``, ``where`` and ``cumsum`` rows (see the module docstring)."""
    names = [name for name in args.systems.split(",") if name in ORDER_SYSTEMS]
    if "dask" not in names and importable("dask.array"):
        names.append("dask")
    ops = {"expr_store": lambda x: x + 1, "where": lambda x: np.where(x > 0, x, 0), "cumsum": np.cumsum}
    # each result's first item, last items and sum, not the results themselves: three
    # copies of a 4 GiB array would not fit beside the peers' own results
    expected = {}
    for bench, op in ops.items():
        result = op(data)
        expected[bench] = Digest(result.flat[0], result[-5:].copy(), float(result.sum(dtype=np.float64)))
        del result
    for name in names:
        if name == "numpy":
            for bench, op in ops.items():
                seconds, peak, _ = measured(lambda op=op: op(data))
                emit(results, bench, name, gbps(data.nbytes, seconds), peak_mib=peak)
        elif name == "dask":
            import dask.array as da
            d = da.from_array(data, chunks=args.chunk_items)
            for bench, op in ops.items():
                seconds, peak, got = measured(lambda op=op, d=d: op(d).compute())
                expected[bench].check(got)
                del got
                emit(results, bench, name, gbps(data.nbytes, seconds), peak_mib=peak)
        elif name == "neoarray":
            neo_expression_figures(args, workdir, data, expected, results)


def neo_expression_figures(args, workdir, data, expected, results):
    import neoarray.array as na
    # the client cache is held to memory_bytes_max too, so that peak_mib is the whole
    # out-of-core footprint (cache, working blocks, written chunks), not the cache filling
    bound = int(data.nbytes * args.sort_memory_fraction)
    system = NeoSystem(os.path.join(workdir, "neoarray-expr"), data.size, args.chunk_items,
                       cache_bytes_max=bound)
    try:
        system.write(data)
        a = system.a
        for bench, make in (("expr_store", lambda: a + 1), ("where", lambda: np.where(a > 0, a, 0))):
            def run(make=make, bench=bench):
                out = system.conn.root()[bench] = na.zeros(a.shape, chunks=a.chunks)
                system.conn.add(out)
                na.store(make(), out)
                system.tm.commit()
                return out
            with na.configure(memory_bytes_max=bound):
                seconds, peak, out = measured(run)
            assert np.array_equal(out[-5:], expected[bench].last) and out[0] == expected[bench].first
            emit(results, bench, "neoarray", gbps(data.nbytes, seconds), peak_mib=peak, memory_bytes_max=bound)

        def cumsum():
            out = np.cumsum(a)
            system.tm.commit()
            return out
        with na.configure(memory_bytes_max=bound):
            seconds, peak, out = measured(cumsum)
        assert np.isclose(out[-1], expected["cumsum"].last[-1])
        emit(results, "cumsum", "neoarray", gbps(data.nbytes, seconds), peak_mib=peak, memory_bytes_max=bound)
    finally:
        system.close()


def dask_percentile(data, chunk_items):
    """dask.array's percentile (approximate: merged per-chunk percentiles)."""
    import dask.array as da
    return da.percentile(da.from_array(data, chunks=chunk_items), PERCENTILES).compute()


def neo_order_figures(args, workdir, data, expected_sorted, expected, results):
    import neoarray.array as na
    from neoarray.array import ordering
    # the client cache is held to memory_bytes_max too, so that peak_mib is the whole
    # out-of-core footprint (cache, working blocks, written chunks), not the cache filling
    bound = int(data.nbytes * args.sort_memory_fraction)
    system = NeoSystem(os.path.join(workdir, "neoarray-order"), data.size, args.chunk_items,
                       cache_bytes_max=bound)
    try:
        system.write(data)
        stats = {}
        with na.configure(memory_bytes_max=bound):
            seconds, peak, out = measured(lambda: ordering.sort(system.a, stats=stats))
        first, middle, last = out[0], out[data.size // 2], out[data.size - 1]
        assert (first, middle, last) == expected_sorted
        emit(results, "sort", "neoarray", gbps(data.nbytes, seconds), items=data.size,
             memory_bytes_max=bound, runs=stats["runs"], merge_passes=stats["merge_passes"],
             peak_mib=peak)
        system.tm.abort()
        with na.configure(memory_bytes_max=bound):
            seconds, peak, got = measured(lambda: np.percentile(system.a, PERCENTILES))
        assert np.array_equal(got, expected), (got, expected)
        emit(results, "percentile", "neoarray", gbps(data.nbytes, seconds), items=data.size,
             memory_bytes_max=bound, exact=True, peak_mib=peak)
    finally:
        system.close()


def importable(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------- runner

def emit(results, bench, system, value, **extra):
    unit = UNITS.get(bench, "GB/s")
    results.setdefault(system, {})[bench] = value
    print(json.dumps({"bench": bench, "system": system, "value": round(value, 4),
                      "unit": unit, **extra}), flush=True)


def release_memory():
    """Give freed memory back to the OS, so that no system reads into memory another
    one already touched (glibc keeps large freed blocks otherwise)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def run_all(args, workdir, src, results, page_cache):
    """Write every system in turns (best of ``--write-repeat``, each time a new array
    or file), then cold reads in turns (best of ``--cold-repeat``), then warm reads,
    random reads and sums system by system.

    Writes take turns because the first to run would pay for touching memory that the
    process (and, on this VM, the machine) never used before, which the ones after it
    find recycled.

    Cold reads alternate between the systems, so that none is favoured by running
    first or last (memory the process freed earlier is cheaper to touch again; the
    disk's speed drifts on shared machines).
    """
    n, nbytes = src.size, src.nbytes
    systems = []
    try:
        for name in args.systems.split(","):
            cls = SYSTEMS[name]
            sub = os.path.join(workdir, name)
            os.makedirs(sub)
            system = cls(sub, n, args.chunk_items, **({"cache_bytes_max": args.neo_cache_bytes}
                                                     if issubclass(cls, NeoSystem) else {}))
            systems.append(system)
        written = {}
        for rep in range(args.write_repeat):    # in turns, the order reversed each time
            for system in (systems if rep % 2 == 0 else systems[::-1]):
                release_memory()
                seconds, _ = timed(lambda: system.write(src))      # noqa: B023 (called now)
                written[system.name] = min(seconds, written.get(system.name, seconds))
        for system in systems:
            emit(results, "write", system.name, gbps(nbytes, written[system.name]),
                 best_of=args.write_repeat)
        best = {}
        for _ in range(args.cold_repeat):
            for system in systems:
                if not system.make_cold():
                    continue
                cold = drop_page_cache()
                page_cache["dropped" if cold else "warm"] = True
                seconds, out = timed(system.read_all)
                assert out[-1] == src[-1] and out[n // 2] == src[n // 2]
                del out
                release_memory()
                best[system.name] = min(seconds, best.get(system.name, seconds))
        for system in systems:
            if system.name in best:
                emit(results, "cold_read", system.name, gbps(nbytes, best[system.name]),
                     page_cache="dropped" if page_cache.get("dropped") else "page cache warm",
                     best_of=args.cold_repeat)
        systems.sort(key=lambda system: system.name != "numpy")     # its copy goes first
        while systems:          # each system closed after its figures: memory for the next
            system = systems.pop(0)
            try:
                release_memory()
                warm_figures(system, args, src, results)
            finally:
                system.close()
    finally:
        for system in systems:
            system.close()


def warm_figures(system, args, src, results):
    """Warm read, random reads and sum of one system."""
    nbytes, name = src.nbytes, system.name
    seconds, out = timed(system.read_all)
    del out
    emit(results, "warm_read", name, gbps(nbytes, seconds))
    emit(results, "random", name, time_random(system.read_item, args.indices))
    runs = [timed(system.total) for _ in range(SUM_REPEAT)]     # one sum of 4 GiB: ~0.25 s, noisy
    for _, total in runs:
        assert abs(total - args.expected_sum) <= 1e-9 * abs(args.expected_sum), (name, total)
    seconds = statistics.median(s for s, _ in runs)
    emit(results, "sum", name, gbps(nbytes, seconds))
    if isinstance(system, NeoSystem):
        print(json.dumps({"system": name, "local_reads": system.local_reads,
                          "cache": system.storage.cache_stats()}), flush=True)


def ratio(bench, neo, peer):
    if neo is None or peer is None or neo == 0 or peer == 0:
        return None
    return round(peer / neo if bench in UNITS else neo / peer, 3)


def summary(results):
    neo = results.get("neoarray", {})
    ratios = {peer: {b: ratio(b, neo.get(b), figures.get(b)) for b in BENCHES}
              for peer, figures in results.items() if peer != "neoarray"}
    remote = results.get("neoarray-remote", {})
    return {"summary": {"neoarray_speed_relative_to": ratios,
                        "remote_vs_local": {b: ratio(b, remote.get(b), neo.get(b)) for b in BENCHES},
                        "meaning": "> 1: neoarray faster (GB/s ratio; for random, ms ratio peer/neoarray); "
                                   "remote_vs_local: neoarray-remote over neoarray"}}


def table(results, page_cache):
    lines = ["| system | " + " | ".join(
        f"{b} ({UNITS.get(b, 'GB/s')})" for b in BENCHES) + " |",
             "|---" * (len(BENCHES) + 1) + "|"]
    for system, figures in results.items():
        cells = [f"{figures[b]:.3f}" if b in figures else "-" for b in BENCHES]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    if page_cache.get("warm"):
        lines.append("\ncold reads: page cache warm (could not drop it: not root)")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gib", type=float, default=4.0, help="array size in GiB (default 4)")
    p.add_argument("--quick", action="store_true", help="256 MiB")
    p.add_argument("--chunk-mib", type=float, default=8.0)
    p.add_argument("--random", type=int, default=1000, help="random single-item reads")
    p.add_argument("--write-repeat", type=int, default=2,
                   help="writes per system, in turns; the best counts (default 2)")
    p.add_argument("--cold-repeat", type=int, default=3,
                   help="cold reads per system, in turns; the best counts (default 3)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--dir", default=None, help="parent of the temporary directory")
    p.add_argument("--sort-mib", type=float, default=None,
                   help="run the sort, percentile, expr_store, where and cumsum rows on another "
                        "array of this many MiB of normal random numbers (default: on the main "
                        "array, its data)")
    p.add_argument("--sort-memory-fraction", type=float, default=0.25,
                   help="neoarray's memory_bytes_max for sort/percentile, as a fraction of that "
                        "array (default 0.25)")
    p.add_argument("--neo-cache-gib", type=float, default=None,
                   help="neoarray client cache budget (default: the array's size + 10%%)")
    args = p.parse_args(argv)
    if args.quick:
        args.gib = 0.25
    cache_gib = args.neo_cache_gib if args.neo_cache_gib is not None else args.gib * 1.1
    args.neo_cache_bytes = int(cache_gib * (1 << 30)) + (64 << 20)
    args.chunk_items = int(args.chunk_mib * (1 << 20)) // 8
    return args


def main(argv=None):
    args = parse_args(argv)
    from neoarray import kernels
    kernels.warm_up()      # Numba's one-time start (~0.5 s per process), like the imports
    n = int(args.gib * (1 << 30)) // 8
    src = source_array(n)
    args.indices = random_indices(n, args.random)
    args.expected_sum = float(src.sum())
    from neoarray.array.config import config
    # reading the whole array into memory is what the read figures measure: allow it
    # even where the default bound (a share of the memory free now) is smaller
    config.memory_bytes_max = max(config.memory_limit_bytes(), 2 * src.nbytes)
    results, page_cache = {}, {}
    workdir = tempfile.mkdtemp(prefix="neoarray-bench-", dir=args.dir)
    try:
        run_all(args, workdir, src, results, page_cache)
        del src
        release_memory()
        order_figures(args, workdir, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(summary(results)), flush=True)
    print(table(results, page_cache), file=sys.stderr)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
