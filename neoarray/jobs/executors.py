"""Where the pieces of a job run.

Every executor offers ``start(spec)``, ``submit(piece) -> future``,
``wait_any(futures) -> done futures``, ``result(future) -> PieceResult``,
``cancel(future)``, ``local_cache_stats()``, ``close()``, and the attributes
``name`` and ``workers``.

``ThreadExecutor`` (``"threads"``, the default)
    pieces on threads of this process, each with its own connection to the
    job's database; kernels and numpy release the GIL.  Any ZODB storage.
``ProcessExecutor`` (``"processes"``)
    pieces in worker processes (``python -m neoarray.jobs.worker``: they never run
    the user's main script), each opening its own client to the cluster
    (``NeoStorage`` only: a file storage cannot be shared).  A worker that dies fails
    its piece, which is retried on a new worker.  ``cache_bytes_max`` sets the
    workers' cache budget (default: the job client's).
``DaskExecutor`` (``"dask"``)
    pieces as tasks of a Dask distributed cluster (``scheduler`` address, a
    ``distributed.Client``, or a local cluster started for the job); each Dask
    worker process opens one client to the cluster and keeps it.  Optional
    dependency: ``pip install 'neoarray[dask]'``.
``StorageExecutor`` (``"storage"``)
    reductions over every axis only: the storage nodes run the named built-in
    kernel on the chunks they hold (``NeoStorage.reduce_chunks``) and send back
    one small state per chunk; chunks they cannot reduce (not a plain chunk
    record) are computed here.  Nothing but built-in kernels runs on a node.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import math
import os
import subprocess
import sys
import threading
import time

from ..array import layout, plans
from ..client import shared
from . import pipes
from . import spec as spec_helpers
from .pieces import run_piece
from .spec import JobError, JobSpec, Piece, PieceResult

WORKERS_DEFAULT = max(1, min(8, os.cpu_count() or 1))


def make_executor(executor, db, workers=None, **options):
    """An executor object from a name (or return ``executor`` if it is one)."""
    if not isinstance(executor, str):
        return executor
    kinds = {"threads": ThreadExecutor, "processes": ProcessExecutor, "dask": DaskExecutor,
             "storage": StorageExecutor}
    kind = kinds.get(executor)
    if kind is None:
        raise JobError(f"unknown executor {executor!r} (known: {', '.join(kinds)})")
    if db is None:
        raise JobError("the array is not stored in a database")
    return kind(db, workers=workers, **options)


def cluster_source(db, cache_bytes_max=None) -> dict:
    """How another process opens a client to ``db``'s cluster (``cache_bytes_max``: the
    workers' cache budget; default the same as ``db``'s client)."""
    info = getattr(db.storage, "client_options", None)
    if info is None:
        raise JobError(f"workers in other processes need a neoarray cluster storage; this "
                       f"database uses {type(db.storage).__name__} (use the thread executor)")
    source = info()
    if cache_bytes_max is not None:
        source["cache_bytes_max"] = int(cache_bytes_max)
    return source


class ThreadExecutor:
    name = "threads"

    def __init__(self, db, workers=None):
        self.db = db
        self.workers = int(workers or WORKERS_DEFAULT)
        if self.workers < 1:
            raise JobError(f"workers must be >= 1, not {self.workers}")
        self._pool = None
        self.spec = None

    def start(self, spec: JobSpec):
        self.spec = spec
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers,
                                                           thread_name_prefix="neoarray-job")

    def _work(self, piece: Piece) -> PieceResult:
        return run_piece(self.db, self.spec, piece)

    def submit(self, piece: Piece):
        return self._pool.submit(contextvars.copy_context().run, self._work, piece)

    def wait_any(self, futures):
        return concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)[0]

    def result(self, future):
        return future.result()

    def cancel(self, future):
        future.cancel()

    def local_cache_stats(self):
        stats = getattr(self.db.storage, "cache_stats", None)
        return stats() if stats is not None else None

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# ---------------------------------------------------------------------- processes

def worker_db(source: dict):
    """This process's database on the cluster of ``source`` (opened once, kept; shared
    with array handles: :func:`neoarray.client.shared.shared_db`)."""
    return shared.shared_db(source)


def close_worker_dbs():
    """Close the databases :func:`worker_db` opened (a worker process ends)."""
    shared.close_shared_dbs()


def process_piece(source: dict, spec: dict, piece: list) -> PieceResult:
    """One piece in a worker process (or Dask worker), on its own client to the cluster."""
    return run_piece(worker_db(source), JobSpec.from_json(spec), Piece.from_json(piece))


WORKER_STOP_S = 10.0     # workers still running this long after their input ends are killed


class WorkerDied(JobError):
    """A worker process ended while it ran a piece (the piece is retried on a new one)."""


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (its ``__cause__``)."""

    def __str__(self):
        return "\n" + self.args[0]


class _Worker:
    """One ``python -m neoarray.jobs.worker`` process and its two pipes.

    The worker gets this process's ``sys.path`` (``PYTHONPATH``), as ``spawn`` gives it,
    so it imports the same ``neoarray`` and the modules next to the user's script."""

    def __init__(self):
        self._wire = pipes
        request_r, request_w = os.pipe()
        answer_r, answer_w = os.pipe()
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if isinstance(p, str))}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "neoarray.jobs.worker", str(request_r), str(answer_w)],
                pass_fds=(request_r, answer_w), stdin=subprocess.DEVNULL, env=env)
        except BaseException:
            for fd in (request_w, answer_r):
                os.close(fd)
            raise
        finally:
            os.close(request_r)
            os.close(answer_w)
        self._requests = os.fdopen(request_w, "wb")
        self._answers = os.fdopen(answer_r, "rb")

    def run(self, source: dict, spec: dict, piece: list) -> PieceResult:
        try:
            self._wire.send(self._requests, (source, spec, piece))
            answer = self._wire.recv(self._answers)
        except (OSError, EOFError) as exc:
            self.end_input()
            status = self.reap(time.monotonic())
            raise WorkerDied(f"worker process {self.process.pid} ended (exit status "
                             f"{status}) while it ran piece {piece[0]}: {exc}") from None
        if answer[0] == "ok":
            return answer[1]
        _, exc, text = answer
        raise exc from _RemoteTraceback(text)

    def end_input(self):
        """Close the worker's input: it exits once its current piece is done."""
        with contextlib.suppress(OSError):
            self._requests.close()

    def reap(self, deadline: float):
        """Wait for the worker until ``deadline`` (``time.monotonic()``), then kill it;
        its exit status."""
        try:
            status = self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        with contextlib.suppress(OSError):
            self._answers.close()          # after the exit: a thread may be reading it
        return status


class ProcessExecutor(ThreadExecutor):
    """Pieces in worker processes started as ``python -m neoarray.jobs.worker``.

    Each of ``workers`` threads of this process feeds one worker process; a worker never
    imports the user's ``__main__`` (see :mod:`neoarray.jobs.worker`), so a script
    without ``if __name__ == "__main__":`` runs once.  A worker that dies fails its
    piece (retried by the job) and is replaced.
    """

    name = "processes"

    def __init__(self, db, workers=None, cache_bytes_max=None):
        super().__init__(db, workers)
        self.source = cluster_source(db, cache_bytes_max)
        self._local = threading.local()
        self._workers_lock = threading.Lock()
        self._workers: list[_Worker] = []

    def start(self, spec: JobSpec):
        if spec.kind == "map_blocks" and spec.op.startswith("__main__:"):
            raise JobError(f"worker processes cannot import {spec.op!r}: they do not run "
                           f"your script; put the function in a module and name it "
                           f"'module:function', or use the thread executor")
        super().start(spec)

    def _worker(self) -> _Worker:
        worker = getattr(self._local, "worker", None)
        if worker is None or worker.process.poll() is not None:
            worker = self._local.worker = _Worker()
            with self._workers_lock:
                self._workers.append(worker)
        return worker

    def _work(self, piece: Piece) -> PieceResult:
        return self._worker().run(self.source, self.spec.to_json(), piece.to_json())

    def local_cache_stats(self):
        return None

    def close(self):
        with self._workers_lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.end_input()
        deadline = time.monotonic() + WORKER_STOP_S
        for worker in workers:          # a piece still running fails: its thread is freed
            worker.reap(deadline)
        super().close()
        self._local = threading.local()


# --------------------------------------------------------------------------- dask

def _dask_piece(source: dict, spec: dict, piece: list) -> PieceResult:
    return process_piece(source, spec, piece)


class DaskExecutor:
    name = "dask"

    def __init__(self, db, workers=None, scheduler=None, cache_bytes_max=None):
        try:
            import distributed
        except ImportError:
            raise JobError("the dask executor needs Dask distributed: "
                           "pip install 'neoarray[dask]'") from None
        self._distributed = distributed
        self.source = cluster_source(db, cache_bytes_max)
        self._own = None
        if isinstance(scheduler, distributed.Client):
            self.client = scheduler
        elif scheduler:
            self.client = distributed.Client(scheduler)
            self._own = self.client
        else:
            self.client = distributed.Client(distributed.LocalCluster(
                n_workers=int(workers or WORKERS_DEFAULT), threads_per_worker=1,
                processes=True, dashboard_address=None))
            self._own = self.client
        self.workers = workers or len(self.client.scheduler_info().get("workers", {})) or 1
        self.spec = None
        self._attempt = 0

    def start(self, spec: JobSpec):
        self.spec = spec

    def submit(self, piece: Piece):
        self._attempt += 1
        return self.client.submit(_dask_piece, self.source, self.spec.to_json(),
                                  piece.to_json(), pure=False,
                                  key=f"neoarray-{self.spec.op}-{piece.index}-{self._attempt}")

    def wait_any(self, futures):
        return self._distributed.wait(futures, return_when="FIRST_COMPLETED").done

    def result(self, future):
        return future.result()

    def cancel(self, future):
        future.cancel()

    def local_cache_stats(self):
        return None

    def close(self):
        if self._own is not None:
            cluster = self._own.cluster
            self._own.close()
            if cluster is not None:
                cluster.close()
            self._own = None


# ----------------------------------------------------------------- storage nodes

def reduce_on_storage(db, spec: JobSpec, piece: Piece) -> PieceResult:
    """One reduction piece computed by the storage nodes holding its chunks."""
    storage = db.storage
    with spec_helpers.snapshot(db, spec) as conn:
        array = spec_helpers.load_array(conn, spec.inputs[0])
        plan = spec_helpers.make_plan(array, spec)
        if plan.kernel is None:
            raise JobError(f"storage nodes run {spec.op} only over every axis of arrays of "
                           f"bool, integer or float items (not axis={spec.params.get('axis')}, "
                           f"dtype {array.dtype}): use another executor")
        keys = spec_helpers.piece_keys(piece, array)
        tree = array._tree
        oids = {tree[k]._p_oid: k for k in keys}
        extents = {k: layout.chunk_extent(k, array.shape, array.chunks) for k in keys}
        acc = getattr(plan, "acc", array.dtype)
        states = storage.reduce_chunks(
            list(oids), bytes.fromhex(spec.before), plan.kernel, dtype=array.dtype, acc=acc,
            chunk_shape=array.chunks, order=array.order,
            extents=[extents[k] for k in oids.values()], codec=array.codec,
            bins=getattr(plan, "bins", None), lo=getattr(plan, "lo", None),
            hi=getattr(plan, "hi", None))
        reduced = [(k, extents[k], states[oid][0]) for oid, k in oids.items() if oid in states]
        partial = plan.fold_block_states(reduced)
        rest = [k for oid, k in oids.items() if oid not in states]
        if rest:             # not plain chunk records: computed here
            partial = plan.merge(partial, plan.fold(array, rest))
        nbytes = len(keys) * math.prod(array.chunks) * array.itemsize
        return PieceResult(plan.encode(partial), len(keys), nbytes)


class StorageExecutor(ThreadExecutor):
    name = "storage"

    def __init__(self, db, workers=None):
        super().__init__(db, workers)
        if not hasattr(db.storage, "reduce_chunks"):
            raise JobError(f"the storage executor needs a neoarray cluster storage; this "
                           f"database uses {type(db.storage).__name__}")

    def start(self, spec: JobSpec):
        if spec.kind != "reduce":
            raise JobError("storage nodes run only built-in reductions, not "
                           f"{spec.kind} jobs: use another executor")
        if spec.op not in plans.NAMES:
            raise JobError(f"storage nodes cannot run {spec.op!r}")
        super().start(spec)

    def _work(self, piece: Piece) -> PieceResult:
        result = reduce_on_storage(self.db, self.spec, piece)
        result.worker, result.cache, result.traffic = spec_helpers.worker_counters(self.db)
        return result
