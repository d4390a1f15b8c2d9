"""One piece of a job, computed with any ``ZODB.DB`` opened on the job's storage:
executors call :func:`run_piece` in threads, worker processes and Dask workers."""
from __future__ import annotations

import contextlib
import math

from ..client import colours
from .blocks import run_map_piece
from .spec import (
    JobError,
    JobSpec,
    Piece,
    PieceResult,
    load_array,
    make_plan,
    piece_keys,
    snapshot,
    worker_counters,
)


def run_piece(db, spec: JobSpec, piece: Piece) -> PieceResult:
    """Compute ``piece`` of the job ``spec`` with a connection to ``db``."""
    with colours.cache_colour(spec.colour) if spec.colour else contextlib.nullcontext():
        if spec.kind == "reduce":
            with snapshot(db, spec) as conn:
                array = load_array(conn, spec.inputs[0])
                plan = make_plan(array, spec)
                keys = piece_keys(piece, array)
                partial = plan.fold(array, keys)
                nbytes = len(keys) * math.prod(array.chunks) * array.itemsize
                result = PieceResult(plan.encode(partial), len(keys), nbytes)
        elif spec.kind == "map_blocks":
            result = run_map_piece(db, spec, piece)
        else:
            raise JobError(f"unknown job kind {spec.kind!r}")
    result.worker, result.cache, result.traffic = worker_counters(db)
    return result
