"""Jobs: specification, pieces, the runner (retries, progress, resume) and results.

A :class:`JobSpec` is plain data (JSON): what to compute, on which arrays (by
oid), as of which snapshot (``before``: reads see revisions older than this tid),
split how (:mod:`.spec`).  :func:`neoarray.jobs.pieces.run_piece` computes one piece
given any ``ZODB.DB`` opened on the same storage: executors call it in threads,
processes, Dask workers.  This module is the runner, above them all: executors,
pieces and workers import :mod:`.spec`, never this module.

State directory (``state_dir``), for resuming
---------------------------------------------
``job.json``
    the spec and the pieces, written once when the job starts;
``done/NNNNNNNN``
    one file per finished piece: its partial result (:meth:`plans._Plan.encode`)
    for reductions, empty for ``map_blocks`` pieces (their chunks are committed),
    written to a temporary name, synced, then renamed: a file present is complete.

A job started again with the same ``state_dir`` and the same spec skips the pieces
whose file exists, and reads the same snapshot, so the answer is the one an
uninterrupted run gives.  Partials are merged in piece order whatever order they
finished in: the result does not depend on scheduling.

It resumes by itself only while the database holds nothing newer than that snapshot
but the job's own pieces (``map_blocks`` pieces commit with :func:`piece_note` as
their description); otherwise the answer would silently be the old snapshot's, so
it is refused (:func:`check_resume`) unless ``resume="saved"`` (finish as of the
saved snapshot) or ``resume="restart"`` (forget the saved pieces, start as of now).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import wire
from ..array import layout, plans
from . import blocks
from .executors import make_executor
from .spec import (
    ATTEMPTS_MAX,
    PROGRESS_INTERVAL_S,
    RESUME_MODES,
    RETRY_DELAY_S,
    STATE_FORMAT,
    TXNS_SINCE_MAX,
    JobError,
    JobResult,
    JobSpec,
    Piece,
    PieceResult,
    _note_prefix,
    load_array,
    make_plan,
    oid_hex,
    piece_chunks_for,
    pieces_of_keys,
    snapshot,
    snapshot_before,
)

if TYPE_CHECKING:
    import ZODB

    from ..array.core import ndarray
    from ..array.hints import DTypeLike

# ------------------------------------------------------------------------- the runner

class _StateDir:
    """The files of a resumable job (see the module docstring)."""

    def __init__(self, path: str | None):
        self.path = path
        if path is not None:
            os.makedirs(os.path.join(path, "done"), exist_ok=True)

    def _done(self, index: int) -> str:
        return os.path.join(self.path, "done", f"{index:08d}")

    def load(self):
        if self.path is None:
            return None
        name = os.path.join(self.path, "job.json")
        if not os.path.exists(name):
            return None
        try:
            with open(name) as f:
                data = json.load(f)
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {STATE_FORMAT}")
            return (JobSpec.from_json(data["spec"]), [Piece.from_json(p) for p in data["pieces"]])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JobError(f"state directory {self.path!r} is unreadable: {exc}") from None

    def save(self, spec: JobSpec, pieces):
        if self.path is None:
            return
        self._write(os.path.join(self.path, "job.json"), json.dumps(
            {"format": STATE_FORMAT, "spec": spec.to_json(),
             "pieces": [p.to_json() for p in pieces]}).encode())

    def finished(self) -> dict[int, bytes]:
        if self.path is None:
            return {}
        done = {}
        for name in os.listdir(os.path.join(self.path, "done")):
            if name.isdigit():
                with open(os.path.join(self.path, "done", name), "rb") as f:
                    done[int(name)] = f.read()
        return done

    def clear(self):
        """Forget the saved job and its finished pieces (``resume="restart"``)."""
        done = os.path.join(self.path, "done")
        for name in os.listdir(done):
            os.remove(os.path.join(done, name))
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.path, "job.json"))

    def mark(self, index: int, partial: bytes | None):
        if self.path is not None:
            self._write(self._done(index), partial or b"")

    @staticmethod
    def _write(name: str, data: bytes):
        tmp = f"{name}.tmp{os.getpid()}-{threading.get_ident()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name)


def _progress_bar(total: int, initial: int, desc: str, enabled):
    from tqdm import tqdm
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit="piece", file=sys.stderr,
                disable=not enabled, dynamic_ncols=True, mininterval=PROGRESS_INTERVAL_S)


def _advance(bar) -> None:
    """One more piece done.  The last one is drawn once, by ``bar.close()``: tqdm's
    ``update`` would draw it and ``close`` again (the last line twice in a log)."""
    if bar.total is not None and bar.n + 1 >= bar.total:
        bar.n += 1
    else:
        bar.update(1)


class Job:
    """One run of a job: pieces through an executor, retries, progress, resume.

    Parameters
    ----------
    spec : JobSpec
        What the job computes (from :func:`~neoarray.jobs.core.prepare_reduce`,
        :func:`neoarray.jobs.blocks.prepare_map` or the state directory).
    pieces : list of Piece
        The pieces it is split in.
    executor : object
        Runs pieces (:func:`neoarray.jobs.executors.make_executor`).
    finish : callable
        ``finish(partials) -> value`` turns the partials, in piece order, into the answer.
    state_dir : str, optional
        Where finished pieces are recorded (a resumable job).
    progress : bool, optional
        Show a progress bar (None: when standard error is a terminal).
    attempts_max : int
        Runs of a piece before the job fails.
    retry_delay_s : float
        Wait before a piece's next attempt.
    in_flight_max : int, optional
        Pieces submitted at once (default: twice the executor's workers, at least 2).

    Raises
    ------
    JobError
        ``attempts_max`` is below 1.
    """

    def __init__(self, spec: JobSpec, pieces: list[Piece], executor: Any, finish: Callable[[list], Any], *,
                 state_dir: str | None = None, progress: bool | None = None, attempts_max: int = ATTEMPTS_MAX,
                 retry_delay_s: float = RETRY_DELAY_S, in_flight_max: int | None = None) -> None:
        if attempts_max < 1:
            raise JobError(f"attempts_max must be >= 1, not {attempts_max}")
        self.spec, self.pieces, self.executor, self.finish = spec, pieces, executor, finish
        self.state = _StateDir(state_dir)
        self.progress = progress
        self.attempts_max = attempts_max
        self.retry_delay_s = retry_delay_s
        self.in_flight_max = in_flight_max or max(2, 2 * executor.workers)

    def run(self) -> JobResult:
        """Run the pieces not finished yet, then ``finish``.

        Returns
        -------
        JobResult
            The answer and the job's figures (pieces, retries, bytes, GB/s, network
            bytes, cache statistics per colour).

        Raises
        ------
        JobError
            A piece failed ``attempts_max`` times (the state directory keeps the
            finished ones: run again to resume).
        """
        started = time.perf_counter()
        done = self.state.finished()
        resumed = len(done)
        partials: dict[int, bytes | None] = dict(done)
        todo = [p for p in self.pieces if p.index not in done]
        retries = chunks = nbytes = 0
        workers: dict[str, PieceResult] = {}
        traffic_before = wire.traffic()
        bar = _progress_bar(len(self.pieces), resumed, f"{self.spec.kind} {self.spec.op}",
                            self.progress)
        attempts: dict[int, int] = {}
        pending: dict = {}          # future -> piece
        queue = list(reversed(todo))
        try:
            self.executor.start(self.spec)
            while queue or pending:
                while queue and len(pending) < self.in_flight_max:
                    piece = queue.pop()
                    pending[self.executor.submit(piece)] = piece
                for future in self.executor.wait_any(list(pending)):
                    piece = pending.pop(future)
                    try:
                        result = self.executor.result(future)
                    except Exception as exc:
                        attempts[piece.index] = attempts.get(piece.index, 0) + 1
                        if attempts[piece.index] >= self.attempts_max:
                            raise JobError(self._failed(piece, exc)) from exc
                        retries += 1
                        time.sleep(min(5.0, self.retry_delay_s * 2 ** (attempts[piece.index] - 1)))
                        queue.append(piece)
                        continue
                    self.state.mark(piece.index, result.partial)
                    partials[piece.index] = result.partial
                    chunks += result.chunks
                    nbytes += result.nbytes
                    workers[result.worker] = result
                    bar.set_postfix_str(f"{nbytes / 1e9:.2f} GB", refresh=False)
                    _advance(bar)
        except KeyboardInterrupt:
            raise JobError(self._interrupted()) from None
        finally:
            bar.close()
            for future in pending:
                self.executor.cancel(future)
            self.executor.close()
        value = self.finish([partials[p.index] for p in self.pieces])
        elapsed = time.perf_counter() - started
        stats = {"kind": self.spec.kind, "op": self.spec.op, "executor": self.executor.name,
                 "workers": self.executor.workers, "pieces": len(self.pieces),
                 "pieces_resumed": resumed, "pieces_run": len(todo), "retries": retries,
                 "chunks": chunks, "bytes": nbytes, "elapsed_s": round(elapsed, 6),
                 "gbps": round(nbytes / elapsed / 1e9, 4) if elapsed > 0 else None,
                 "snapshot": "0x" + self.spec.before, "state_dir": self.state.path}
        stats.update(self._counters(workers, traffic_before))
        return JobResult(value, stats)

    def _counters(self, workers: dict, traffic_before: dict) -> dict:
        """Cache statistics and network traffic: this process's, or the workers'."""
        remote = [r for w, r in workers.items() if w != f"{os.getpid()}"]
        here = wire.traffic()
        traffic = {k: here[k] - traffic_before.get(k, 0) for k in here}
        for r in remote:        # worker counters are cumulative per worker process
            for k, v in (r.traffic or {}).items():
                traffic[k] = traffic.get(k, 0) + v
        caches = [r.cache for r in remote if r.cache]
        local = self.executor.local_cache_stats()
        if local:
            caches.append(local)
        return {"network": traffic, "cache": _sum_cache_stats(caches)}

    def _failed(self, piece: Piece, exc: BaseException) -> str:
        resume = (f"; finished pieces are kept in {self.state.path!r}: run the job again "
                  f"with the same state directory to resume") if self.state.path else ""
        return (f"piece {piece.index} (chunks {piece.start}..{piece.stop - 1}) failed "
                f"{self.attempts_max} time(s): {type(exc).__name__}: {exc}{resume}")

    def _interrupted(self) -> str:
        if self.state.path:
            return (f"interrupted; finished pieces are kept in {self.state.path!r}: run the "
                    f"job again with the same state directory to resume")
        return "interrupted (no state directory: nothing kept)"


def _sum_cache_stats(stats: list[dict]) -> dict | None:
    """Totals and per-colour figures over several clients' ``cache_stats()``."""
    if not stats:
        return None
    total: dict = {}
    per_colour: dict = {}
    for s in stats:
        for k, v in s.items():
            if k == "colours":
                for colour, figures in v.items():
                    mine = per_colour.setdefault(colour, {})
                    for fk, fv in figures.items():
                        if isinstance(fv, (int, float)) and not isinstance(fv, bool):
                            mine[fk] = mine.get(fk, 0) + fv
                        else:
                            mine.setdefault(fk, fv)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                total[k] = total.get(k, 0) + v
    for figures in [total, *per_colour.values()]:
        looked = figures.get("hits", 0) + figures.get("misses", 0)
        if "hit_rate" in figures:
            figures["hit_rate"] = round(figures.get("hits", 0) / looked, 4) if looked else None
    return {**total, "colours": per_colour}


# ----------------------------------------------------------------------- preparation

def prepare_reduce(array: ndarray, name: str, params: dict, colour: str | None = None,
                   piece_bytes: int | None = None) -> tuple[JobSpec, list[Piece]]:
    """``(spec, pieces)`` of a reduction of ``array`` (its arguments validated now)."""
    before = snapshot_before(array)
    spec = JobSpec("reduce", name, (oid_hex(array),), before, params=params, colour=colour)
    with snapshot(array._p_jar.db(), spec) as conn:
        snap = load_array(conn, spec.inputs[0])
        make_plan(snap, spec)          # bad arguments fail here, before any piece runs
        grid = layout.chunk_grid(snap.shape, snap.chunks)
        flat = [plans.flatten(k, grid) for k in snap.chunk_keys()]
    return spec, pieces_of_keys(flat, piece_chunks_for(array, piece_bytes), explicit=False)


def reduce_finisher(db: ZODB.DB, spec: JobSpec) -> Callable[[list], Any]:
    """``finish(partials)`` of a reduction job: merge in order, then numpy's answer."""
    def finish(partials):
        with snapshot(db, spec) as conn:
            array = load_array(conn, spec.inputs[0])
            if array.size == 0:
                return getattr(array, spec.op)() if spec.op != "histogram" else \
                    np.histogram(np.empty(0, array.dtype), spec.params.get("bins", 10),
                                 spec.params.get("range"))
            plan = make_plan(array, spec)
            merged = plan.empty()
            for raw in partials:
                merged = plan.merge(merged, plan.decode(raw))
            keepdims = bool(spec.params.get("keepdims", False))
            if isinstance(plan, plans.ArgPlan):
                return plan.finish(merged, keepdims, array=array)
            return plan.finish(merged, keepdims)
    return finish


def _reduce_params(name, axis, dtype, ddof, bins, range, keepdims) -> dict:
    params = {}
    if axis is not None:
        params["axis"] = list(axis) if isinstance(axis, (tuple, list)) else int(axis)
    if dtype is not None:
        params["dtype"] = np.dtype(dtype).str
    if ddof:
        params["ddof"] = int(ddof)
    if keepdims:
        params["keepdims"] = True
    if name == "histogram":
        params["bins"] = 10 if bins is None else bins
        if range is not None:
            params["range"] = [float(range[0]), float(range[1])]
    elif bins is not None or range is not None:
        raise JobError(f"bins and range are histogram arguments, not {name}'s")
    return params


def reduce(array: ndarray, name: str, *, axis: int | Sequence[int] | None = None,
           dtype: DTypeLike | None = None, ddof: int = 0, bins: int | None = None,
           range: tuple[float, float] | None = None, keepdims: bool = False,
           executor: str | Any = "threads", workers: int | None = None, state_dir: str | None = None,
           resume: str = "auto", progress: bool | None = False, colour: str | None = None,
           piece_bytes: int | None = None, attempts_max: int = ATTEMPTS_MAX, stats: bool = False,
           **executor_options: Any) -> Any:
    """Reduce the committed snapshot of ``array`` with ``name``, as a parallel job.

    Parameters
    ----------
    array : neoarray.ndarray
        A committed array of a database.
    name : str
        One of :data:`neoarray.array.plans.NAMES` (``sum``, ``mean``, ``std``,
        ``histogram``, ``argmax``...).
    axis, dtype, ddof, keepdims
        As in numpy.
    bins, range
        Of ``histogram`` only (default range numpy's: the items' min and max, computed
        first).
    executor : str or object
        ``"threads"``, ``"processes"``, ``"dask"``, ``"storage"`` or an executor object
        (:mod:`neoarray.jobs.executors`).
    workers : int, optional
        Workers of the executor.
    state_dir : str, optional
        A directory that makes the job resumable.
    resume : {'auto', 'saved', 'restart'}
        What to do when ``state_dir`` holds this job as of an older snapshot (see
        :func:`run`).
    progress : bool
        Show a progress bar.
    colour : str, optional
        The cache colour of the reads (default: the array's).
    piece_bytes : int, optional
        Chunk bytes per piece (default: a size from the array's chunks).
    attempts_max : int
        Runs of a piece before the job fails.
    stats : bool
        Return a :class:`JobResult` (the value and the job's figures).
    **executor_options
        Passed to the executor (``client=`` of a Dask executor...).

    Returns
    -------
    numpy.ndarray, scalar, tuple or JobResult
        numpy's answer (``(counts, edges)`` for ``histogram``), or with ``stats`` a
        :class:`JobResult`.

    Raises
    ------
    JobError
        An unknown reduction or argument, a refused resume, or a piece that failed
        ``attempts_max`` times.
    """
    if name not in plans.NAMES:
        raise JobError(f"unknown reduction {name!r} (known: {', '.join(plans.NAMES)})")
    if name == "histogram" and range is None:
        range = plans.histogram_range(array)
    params = _reduce_params(name, axis, dtype, ddof, bins, range, keepdims)
    db = array._p_jar.db() if array._p_jar is not None else None
    spec, pieces = prepare_reduce(array, name, params, colour, piece_bytes)
    result = run(spec, pieces, db, executor=make_executor(executor, db, workers, **executor_options),
                 state_dir=state_dir, resume=resume, progress=progress, attempts_max=attempts_max)
    return result if stats else result.value


def run(spec: JobSpec, pieces: list[Piece], db: ZODB.DB | None, *, executor: Any,
        state_dir: str | None = None, resume: str = "auto", progress: bool | None = None,
        attempts_max: int = ATTEMPTS_MAX, finish: Callable[[list], Any] | None = None) -> JobResult:
    """Run (or resume, with ``state_dir``) the job ``spec`` split in ``pieces``.

    Parameters
    ----------
    spec : JobSpec
        What the job computes.
    pieces : list of Piece
        Its pieces.
    db : ZODB.DB
        The database the job reads (and writes, for ``map_blocks``).
    executor : object
        Runs the pieces (:func:`neoarray.jobs.executors.make_executor`).
    state_dir : str, optional
        Where finished pieces are recorded.
    resume : {'auto', 'saved', 'restart'}
        When ``state_dir`` holds this job as of an older snapshot: ``"auto"`` resumes
        it if nothing but its own pieces committed since and refuses otherwise,
        ``"saved"`` finishes it as of its saved snapshot, ``"restart"`` forgets its
        finished pieces and starts afresh.
    progress : bool, optional
        Show a progress bar.
    attempts_max : int
        Runs of a piece before the job fails.
    finish : callable, optional
        ``finish(partials) -> value`` (default: the reduction's or ``map_blocks``'s).

    Returns
    -------
    JobResult
        The answer and the job's figures.

    Raises
    ------
    JobError
        A bad ``resume``, a state directory of another job, a refused resume (naming
        both snapshots), or a piece that failed ``attempts_max`` times.
    """
    if resume not in RESUME_MODES:
        raise JobError(f"resume must be one of {', '.join(map(repr, RESUME_MODES))}, "
                       f"not {resume!r}")
    state = _StateDir(state_dir)
    saved = state.load()
    if saved is not None:
        saved_spec, saved_pieces = saved
        if _identity(saved_spec) != _identity(spec):
            raise JobError(f"state directory {state_dir!r} belongs to another job "
                           f"({saved_spec.kind} {saved_spec.op} of 0x{','.join(saved_spec.inputs)}): "
                           f"use a new directory")
        if resume == "restart":
            state.clear()
            saved = None
        else:
            if resume == "auto":
                check_resume(db, state_dir, saved_spec, spec)
            spec, pieces = saved_spec, saved_pieces     # the same snapshot and pieces as before
    if saved is None:
        state.save(spec, pieces)
    if finish is None:
        if spec.kind == "reduce":
            finish = reduce_finisher(db, spec)
        else:
            finish = blocks.map_finisher(db, spec)
    return Job(spec, pieces, executor, finish, state_dir=state_dir, progress=progress,
               attempts_max=attempts_max).run()


def commits_since(db: ZODB.DB, before: bytes, upto: bytes) -> list[tuple[bytes, str]] | None:
    """``(tid, description)`` of the transactions in ``[before, upto)``, newest first;
    None when not known (the storage lists no transactions, or more than
    :data:`TXNS_SINCE_MAX`)."""
    undo_log = getattr(db.storage, "undoLog", None)
    if undo_log is None:
        return None
    try:
        entries = undo_log(0, TXNS_SINCE_MAX + 1)
    except NotImplementedError:
        return None
    since = []
    for entry in entries:
        tid = entry["id"]
        if tid < before:
            return since
        if tid < upto:
            description = entry.get("description", b"")
            if isinstance(description, bytes):
                description = description.decode("utf-8", "replace")
            since.append((tid, description))
    return None if len(entries) > TXNS_SINCE_MAX else since


def check_resume(db: ZODB.DB, state_dir: str, saved: JobSpec, current: JobSpec) -> None:
    """Refuse to resume ``saved`` when the database changed since its snapshot (other
    than by the job's own pieces), or when that is not known: the answer would be the
    old snapshot's."""
    if saved.before == current.before:
        return
    old, now = bytes.fromhex(saved.before), bytes.fromhex(current.before)
    if now < old:
        return       # the caller reads an older snapshot: the saved one is newer still
    commits = commits_since(db, old, now)
    if commits is not None:
        own = _note_prefix(saved)
        others = [tid for tid, description in commits if not description.startswith(own)]
        if not others:
            return
        what = (f"the database changed since: {len(others)} transaction(s) other than the "
                f"job's own pieces, the latest 0x{others[0].hex()}")
    else:
        what = (f"whether the database changed since is not known (more than "
                f"{TXNS_SINCE_MAX} transactions, or the storage does not list them)")
    raise JobError(
        f"state directory {state_dir!r} holds this job as of snapshot 0x{saved.before}, and "
        f"{what}; the current snapshot is 0x{current.before}.  Resuming would give the "
        f"answer as of 0x{saved.before}.  Start afresh with resume='restart' "
        f"(neoarray job run --restart), finish as of 0x{saved.before} with resume='saved' "
        f"(--resume-saved), or use another state directory")


def _identity(spec: JobSpec):
    """What must match for a state directory to be resumed (not the snapshot)."""
    return (spec.kind, spec.op, tuple(spec.inputs), spec.out,
            json.dumps(spec.params, sort_keys=True), spec.colour)


def run_map(fn_name: str, arrays: Sequence[ndarray], out: ndarray, *, executor: str | Any = "threads",
            workers: int | None = None, state_dir: str | None = None, resume: str = "auto",
            progress: bool | None = False, colour: str | None = None, piece_bytes: int | None = None,
            attempts_max: int = ATTEMPTS_MAX, **executor_options: Any) -> JobResult:
    """Run ``map_blocks`` of ``fn_name`` over ``arrays`` into the committed ``out`` as a job
    (``state_dir`` and ``resume`` as in :func:`neoarray.jobs.run`)."""
    if executor == "storage":
        raise JobError("storage nodes run only built-in reductions, not map_blocks: "
                       "use another executor")
    spec, pieces = blocks.prepare_map(fn_name, arrays, out, piece_bytes=piece_bytes, colour=colour)
    db = arrays[0]._p_jar.db()
    return run(spec, pieces, db,
                         executor=make_executor(executor, db, workers, **executor_options),
                         state_dir=state_dir, resume=resume, progress=progress,
                         attempts_max=attempts_max)
