"""An exabyte-shaped persistent array: only what is written costs anything.

Creates ``A = neoarray.array.zeros((10**18, 2), order='F')`` (16 EB of float64 in
shape) in an embedded cluster (``neoarray.open(tmpdir)``), writes a few scattered
regions, commits, reads them back in a new connection, and reduces over the whole
array: reductions visit stored chunks only and add the unwritten items in closed
form.

    python examples/exabyte_demo.py
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np
import transaction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import neoarray  # noqa: E402
import neoarray.array as na  # noqa: E402

ROWS = 10**18
REGION_ROWS = 200_000
STARTS = [0, 123_456_789, 10**12, 5 * 10**16, ROWS - REGION_ROWS]


def region_values(start: int) -> np.ndarray:
    """Values written at rows ``start``..: column 0 = row offset, column 1 = 1."""
    values = np.ones((REGION_ROWS, 2))
    values[:, 0] = np.arange(REGION_ROWS) + (start % 1000)
    return values


def step(label: str, started: float) -> float:
    now = time.perf_counter()
    print(f"  {label:<50s} {now - started:7.3f} s")
    return now


def write(db) -> None:
    conn = db.open()
    t = time.perf_counter()
    A = na.zeros((ROWS, 2), dtype=np.float64, order="F")
    conn.root()["A"] = A
    print(f"created {A!r}")
    print(f"  logical size: {A.nbytes / 1e18:.0f} EB in {A.chunks} chunks")
    for start in STARTS:
        A[start:start + REGION_ROWS] = region_values(start)
    t = step(f"write {len(STARTS)} regions of {REGION_ROWS:,} rows", t)
    transaction.commit()
    step("commit", t)
    conn.close()


def read(db) -> None:
    conn = db.open()
    A = conn.root()["A"]
    t = time.perf_counter()
    for start in STARTS:
        got = A[start:start + REGION_ROWS]
        assert np.array_equal(got, region_values(start)), start
    t = step("read the regions back (new connection)", t)
    print(f"  A[{STARTS[3] + 7}] = {A[STARTS[3] + 7]}, A[{STARTS[3] - 1}] = {A[STARTS[3] - 1]}")
    lo, hi = STARTS[2], STARTS[2] + REGION_ROWS
    region_sum = A[lo:hi, 0].sum()
    t = step(f"sum of A[{lo}:{hi}, 0] = {region_sum:.0f}", t)
    total = A.sum(axis=0)
    t = step(f"A.sum(axis=0) over 10**18 rows = {total}", t)
    mean = A.mean(axis=0)
    t = step(f"A.mean(axis=0) = {mean}", t)
    try:
        A[:, 1]
    except na.ArrayTooLargeError as exc:
        print(f"  A[:, 1] refused: {str(exc)[:60]}...")
    expected = sum(region_values(s)[:, 0].sum() for s in STARTS)
    assert total[0] == expected and total[1] == len(STARTS) * REGION_ROWS
    print(f"  stored chunks: {sum(1 for _ in A.chunk_keys())} of "
          f"{(ROWS // A.chunks[0]) * 2:.2e} in the grid")
    conn.close()


def main() -> None:
    tmpdir = tempfile.mkdtemp(prefix="neoarray-exabyte-")
    started = time.perf_counter()
    try:
        db = neoarray.open(tmpdir)
        try:
            step("start an embedded cluster (neoarray.open)", started)
            write(db)
            read(db)
        finally:
            db.close()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
