"""``neoarray job run``: launch a job from a workflow engine and read one JSON answer.

    neoarray job run --dir DIR --array PATH --reduce NAME [--axis A] [--bins N --range LO HI]
    neoarray job run -a HOST:PORT -c CLUSTER --array PATH [--array PATH...]
                     --map-blocks MODULE:FUNCTION --out PATH [--dtype DTYPE]
    common: [--executor threads|processes|dask|storage] [--workers N] [--scheduler ADDR]
            [--state-dir DIR [--restart|--resume-saved]] [--piece-mib M] [--colour NAME]
            [--attempts N] [--progress|--no-progress]

``PATH`` names an object from the database root through mappings: ``prices`` is
``root['prices']``, ``market/prices`` is ``root['market']['prices']``.  With
``--dir``, the cluster of that directory is used when it runs (``neoarray cluster
up DIR``), else (said on standard error) an embedded one is started over it for the job.  A ``--map-blocks``
output that does not exist is created (committed) first.

Standard output gets one JSON document: ``{"job": ..., "result": ..., "stats": ...}``
on success (exit status 0; a ``--map-blocks`` result is ``{"path": PATH, "out": OID}``), ``{"error": ...}`` on failure (exit status 1; the
reason is on standard error too).  The progress bar goes to standard error, on a
terminal only unless ``--progress``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys

import transaction
import ZODB

import neoarray

from .. import security
from ..array.core import ndarray
from ..client import NeoStorage
from ..errors import NeoError
from . import blocks, core, spec


def add_parser(sub):
    job = sub.add_parser("job", help="parallel analytics jobs (JSON result)")
    jsub = job.add_subparsers(dest="action", required=True)
    p = jsub.add_parser("run", help="run a reduction or a map_blocks job and print JSON")
    where = p.add_argument_group("cluster")
    where.add_argument("--dir", help="a local cluster directory (running, or started for the job)")
    where.add_argument("-a", "--address", help="master host:port")
    where.add_argument("-c", "--cluster", help="cluster name")
    p.add_argument("--array", action="append", required=True,
                   help="input array path from the root (repeat for map_blocks inputs)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--reduce", metavar="NAME", help="sum, mean, std, var, min, max, prod, "
                      "argmin, argmax, any, all, count_nonzero, histogram")
    what.add_argument("--map-blocks", metavar="MODULE:FUNCTION",
                      help="function applied to each block of the inputs")
    p.add_argument("--axis", type=int, action="append", help="reduction axis (repeatable)")
    p.add_argument("--ddof", type=int, default=0)
    p.add_argument("--bins", type=int, help="histogram bins (default 10)")
    p.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="histogram range (default: min and max of the items)")
    p.add_argument("--out", help="map_blocks output array path (created if missing)")
    p.add_argument("--dtype", help="map_blocks output dtype of a new output (default: the function's)")
    p.add_argument("--executor", default="threads",
                   choices=("threads", "processes", "dask", "storage"))
    p.add_argument("--workers", type=int, help="parallel pieces (default: CPU count, at most 8)")
    p.add_argument("--scheduler", help="Dask scheduler address (dask executor; default: "
                   "a local Dask cluster for the job)")
    p.add_argument("--state-dir", help="directory that makes the job resumable")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--restart", dest="resume", action="store_const", const="restart",
                       default="auto", help="forget the pieces the state directory holds and "
                       "start afresh as of now")
    again.add_argument("--resume-saved", dest="resume", action="store_const", const="saved",
                       help="finish the job as of the snapshot the state directory holds, "
                       "even if the data changed since")
    p.add_argument("--piece-mib", type=float, help="bytes of chunks per piece (default 256 MiB)")
    p.add_argument("--colour", help="cache colour of the reads (default: the array's)")
    p.add_argument("--attempts", type=int, default=3, help="tries of a piece before failing")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on standard error (default: on a terminal)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="cluster connection time limit")
    return p


LISTEN_PROBE_S = 1.0       # how long a connection to the master's port may take to open


def _read(name: str) -> str:
    with open(name) as f:
        return f.read().strip()


def listens(address: str, timeout_s: float = LISTEN_PROBE_S) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (False at once on a
    refused connection; True when the answer is not known within ``timeout_s``)."""
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (ConnectionRefusedError, socket.gaierror, ValueError):
        return False
    except OSError:
        return True          # unreachable or slow: let the client say what is wrong


def _dir_cluster(opts):
    """``(address, cluster)`` of ``--dir``'s running cluster, or ``(None, None)`` when it
    is not running (said on standard error, at once: an embedded one is started)."""
    names = {"address": os.path.join(opts.dir, "master.address"),
             "cluster": os.path.join(opts.dir, "cluster.name")}
    address = opts.address or (_read(names["address"]) if os.path.exists(names["address"])
                               else None)
    cluster = opts.cluster or (_read(names["cluster"]) if os.path.exists(names["cluster"])
                               else None)
    if address and cluster and not opts.address and not listens(address):
        print(f"neoarray job: the cluster in {opts.dir} is not running (nothing listens at "
              f"{address} from {names['address']}): starting an embedded one for this job; "
              f"start it with `neoarray cluster up {opts.dir}` to keep it running",
              file=sys.stderr, flush=True)
        return None, None
    return address, cluster


@contextlib.contextmanager
def open_database(opts):
    """A ``ZODB.DB`` on the cluster the options name (see the module docstring)."""
    address, cluster = _dir_cluster(opts) if opts.dir else (opts.address, opts.cluster)
    db = None
    if address and cluster:
        try:
            tls = security.cluster_tls(opts.dir, "client") if opts.dir else None   # a --tls cluster
            db = ZODB.DB(NeoStorage(address, cluster, connect_timeout_s=opts.timeout_s
                                    if not opts.dir else min(opts.timeout_s, 3.0),
                                    **(tls.options() if tls else {})))
        except NeoError:
            if not opts.dir:
                raise
    if db is None:
        if not opts.dir:
            raise NeoError("give a cluster directory (--dir) or the master address and "
                           "cluster name (-a, -c)")
        if not os.path.isdir(opts.dir):
            raise NeoError(f"no cluster directory {opts.dir!r}")
        db = neoarray.open(opts.dir)
    try:
        yield db
    finally:
        db.close()


def lookup(root, path: str, create=None):
    """The object at ``path`` from ``root``; ``create()`` makes it when missing."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise NeoError(f"empty object path {path!r}")
    node = root
    for i, part in enumerate(parts):
        try:
            child = node[part]
        except (KeyError, TypeError):
            if create is not None and i == len(parts) - 1 and hasattr(node, "__setitem__"):
                child = node[part] = create()
            else:
                raise NeoError(f"no object at {'/'.join(parts[:i + 1])!r} "
                               f"(path {path!r} from the root)") from None
        node = child
    return node


def run_job(opts) -> dict:
    piece_bytes = int(opts.piece_mib * (1 << 20)) if opts.piece_mib else None
    executor_options = {"scheduler": opts.scheduler} if opts.executor == "dask" and opts.scheduler else {}
    with open_database(opts) as db:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        try:
            root = conn.root()
            arrays = [lookup(root, path) for path in opts.array]
            common = dict(executor=opts.executor, workers=opts.workers, state_dir=opts.state_dir,
                          resume=opts.resume, progress=opts.progress, colour=opts.colour, piece_bytes=piece_bytes,
                          attempts_max=opts.attempts, **executor_options)
            if opts.reduce:
                if len(arrays) != 1:
                    raise NeoError("a reduction takes one --array")
                axis = None if not opts.axis else (opts.axis[0] if len(opts.axis) == 1
                                                   else tuple(opts.axis))
                result = core.reduce(arrays[0], opts.reduce, axis=axis, ddof=opts.ddof,
                                     bins=opts.bins, range=opts.range, stats=True, **common)
            else:
                if not opts.out:
                    raise NeoError("--map-blocks needs --out PATH")
                fn = spec.resolve_function(opts.map_blocks)

                def create():
                    for a in arrays:
                        if not isinstance(a, ndarray):
                            raise NeoError(f"input {type(a).__name__} is not a neoarray.ndarray")
                    blocks._check_inputs(arrays)
                    dtype, fill = blocks.probe_fill(fn, arrays, arrays[0].chunks, opts.dtype)
                    return blocks.new_output(arrays, dtype, fill)
                out = lookup(root, opts.out, create)
                tm.commit()
                tm.begin()
                arrays = [lookup(conn.root(), path) for path in opts.array]
                result = core.run_map(opts.map_blocks, arrays, out, **common)
        finally:
            tm.abort()
            conn.close()
    if not opts.reduce:                 # the output by its path from the root, and its oid
        result.value = {"path": opts.out, **result.value}
    job = {"kind": "reduce" if opts.reduce else "map_blocks",
           "op": opts.reduce or opts.map_blocks, "arrays": opts.array, "out": opts.out,
           "executor": opts.executor}
    return {"job": job, **result.to_json()}


def main(opts) -> int:
    try:
        answer = run_job(opts)
    except (NeoError, ValueError, TypeError, MemoryError, OSError) as exc:
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, NeoError) else str(exc)
        print(json.dumps({"error": message}))
        print(f"neoarray job: {message}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0
