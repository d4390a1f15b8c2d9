"""Jobs' plain data and the helpers every side of a job shares: the spec, pieces and
their results, how a piece finds its arrays (the job's snapshot), and the notes of its
commits.  The runner (:mod:`.core`), the executors and the workers all import this
module; it imports none of them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
from dataclasses import dataclass, field

import numpy as np
import transaction
from ZODB.utils import p64, u64

from .. import wire
from ..array import core as array_core
from ..array import fetch, layout, plans
from ..errors import NeoError

STATE_FORMAT = 1
PIECE_BYTES_TARGET = 256 << 20       # default piece: about this many bytes of chunks
PIECES_MAX = 1_000_000               # a job never lists more pieces than this
ATTEMPTS_MAX = 3                     # tries of one piece before the job fails
RETRY_DELAY_S = 0.2                  # first pause before a retry (doubles, at most 5 s)
RESUME_MODES = ("auto", "saved", "restart")
TXNS_SINCE_MAX = 10_000              # transactions read to decide whether a resume is safe
PROGRESS_INTERVAL_S = 0.1            # the progress bar is redrawn at most this often



class JobError(NeoError):
    """A job cannot start or did not finish; the message says why (and how to resume)."""


@dataclass(frozen=True)
class JobSpec:
    """What a job computes (JSON-serialisable; see the module docstring).

    ``kind`` is ``"reduce"`` (``op`` a reduction name, ``params`` its numpy
    arguments: ``axis``, ``dtype``, ``ddof``, ``bins``, ``range``) or
    ``"map_blocks"`` (``op`` a ``"module:function"`` name, ``out`` the oid of the
    output array, ``params['sparse']`` whether only stored chunks are computed).
    Oids and ``before`` are hex strings.
    """

    kind: str
    op: str
    inputs: tuple
    before: str
    out: str | None = None
    params: dict = field(default_factory=dict)
    colour: str | None = None

    def to_json(self) -> dict:
        """The spec as a JSON-serialisable dict (what the state directory holds)."""
        return {**dataclasses.asdict(self), "inputs": list(self.inputs)}

    @classmethod
    def from_json(cls, data: dict) -> JobSpec:
        """The spec of a :meth:`to_json` dict."""
        return cls(**{**data, "inputs": tuple(data["inputs"])})


@dataclass(frozen=True)
class Piece:
    """Piece ``index``: chunk keys with flat C-order index in ``[start, stop)``, or
    exactly ``keys`` (flat indices) when given."""

    index: int
    start: int
    stop: int
    keys: tuple | None = None

    def to_json(self):
        return [self.index, self.start, self.stop, None if self.keys is None else list(self.keys)]

    @classmethod
    def from_json(cls, data):
        index, start, stop, keys = data
        return cls(index, start, stop, None if keys is None else tuple(keys))


@dataclass
class PieceResult:
    """What a piece sends back: the encoded partial (reductions), work done, and the
    worker's counters (``worker`` identifies the process that ran it)."""

    partial: bytes | None
    chunks: int
    nbytes: int
    worker: str = ""
    cache: dict | None = None
    traffic: dict | None = None


@dataclass
class JobResult:
    """The answer (``value``) and figures of a finished job (``stats``)."""

    value: object
    stats: dict

    def to_json(self) -> dict:
        """``{"result": value as JSON values, "stats": ...}`` (``neoarray job run``'s output)."""
        return {"result": to_jsonable(self.value), "stats": self.stats}


# --------------------------------------------------------------------------- pieces

def oid_hex(obj) -> str:
    return obj._p_oid.hex()


def resolve_function(name: str):
    """The function named ``"package.module:function"``."""
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise JobError(f"a function is named 'module:function', not {name!r}")
    try:
        target = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise JobError(f"cannot load function {name!r}: {exc}") from None
    if not callable(target):
        raise JobError(f"{name!r} is not callable")
    return target


def piece_chunks_for(array, piece_bytes: int | None) -> int:
    nbytes = math.prod(array.chunks) * array.itemsize
    return max(1, (piece_bytes or PIECE_BYTES_TARGET) // max(1, nbytes))


def pieces_of_keys(flat_keys, per_piece: int, explicit: bool) -> list[Piece]:
    """Group sorted flat chunk indices into pieces of ``per_piece`` chunks."""
    pieces = []
    for i in range(0, len(flat_keys), per_piece):
        group = flat_keys[i:i + per_piece]
        pieces.append(Piece(len(pieces), group[0], group[-1] + 1,
                            tuple(group) if explicit else None))
        if len(pieces) > PIECES_MAX:
            raise JobError(f"more than {PIECES_MAX} pieces: use larger pieces")
    return pieces


def dense_pieces(grid, per_piece: int) -> list[Piece]:
    """Pieces covering every chunk of ``grid``."""
    total = math.prod(grid)
    count = -(-total // per_piece)
    if count > PIECES_MAX:
        raise JobError(f"{total} chunks to compute make more than {PIECES_MAX} pieces: "
                       f"use larger pieces")
    return [Piece(i, i * per_piece, min(total, (i + 1) * per_piece)) for i in range(count)]


def piece_keys(piece: Piece, array) -> list:
    """Grid keys of ``array``'s stored chunks in ``piece``."""
    if piece.keys is not None:
        grid = layout.chunk_grid(array.shape, array.chunks)
        tree = array._tree
        return [k for k in (plans.unflatten(f, grid) for f in piece.keys) if k in tree]
    return plans.stored_keys(array, piece.start, piece.stop)


# ------------------------------------------------------------------- piece execution

@contextlib.contextmanager
def snapshot(db, spec: JobSpec):
    """A read-only connection to ``db`` as of the job's snapshot."""
    conn = db.open(before=bytes.fromhex(spec.before))
    try:
        yield conn
    finally:
        conn.close()


def load_array(conn, oid: str):
    try:
        array = conn.get(bytes.fromhex(oid))
    except KeyError:
        raise JobError(f"no object 0x{oid} in the job's snapshot") from None
    if not isinstance(array, array_core.ndarray):
        raise JobError(f"object 0x{oid} is a {type(array).__name__}, not a neoarray.ndarray")
    return array


def make_plan(array, spec: JobSpec):
    params = dict(spec.params)
    if "range" in params and params["range"] is not None:
        params["range"] = tuple(params["range"])
    return plans.plan(array, spec.op, **params)


def worker_counters(db) -> tuple[str, dict | None, dict]:
    stats = getattr(db.storage, "cache_stats", None)
    return f"{os.getpid()}", (stats() if stats is not None else None), wire.traffic()


def snapshot_before(array) -> str:
    """The ``before`` tid of the committed snapshot that ``array``'s connection sees."""
    conn = array._p_jar
    if conn is None or array._p_oid is None:
        raise JobError("a job reads a committed array: this one is not stored in a "
                       "database yet (add it to a connection and commit)")
    if getattr(conn, "_registered_objects", None) or getattr(conn, "_added", None):
        raise JobError("this transaction has uncommitted changes: a job reads committed "
                       "data only; commit (or abort) first")
    snapshot = fetch.snapshot_of(conn._storage)       # MVCC or historical connection
    if snapshot is not None:
        return snapshot[1].hex()
    return p64(u64(conn.db().storage.lastTransaction()) + 1).hex()     # none started yet


def piece_note(spec: JobSpec, index: int) -> str:
    """The description of the transaction a ``map_blocks`` piece commits (how a resumed
    job tells its own commits from others')."""
    return f"{_note_prefix(spec)}{index}"


def _note_prefix(spec: JobSpec) -> str:
    return f"neoarray {spec.kind} {spec.op} into 0x{spec.out} as of 0x{spec.before}: piece "


def to_jsonable(value):
    """numpy results as JSON values (arrays as nested lists)."""
    if isinstance(value, tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist()) if value.dtype.kind == "c" else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, complex):
        return {"real": value.real, "imag": value.imag}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def abort_quietly(tm: transaction.TransactionManager):
    with contextlib.suppress(Exception):
        tm.abort()
