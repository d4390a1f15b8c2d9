"""``scripts/simulate.py``: run seeded schedules, report violations with the
shortest failing prefix found, end with ``N schedules, M violations``."""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

from .run import run_schedule, shortest_prefix

SHRUNK_MAX = 5                # failing seeds searched for their shortest prefix
TRACE_TAIL = 40               # trace lines printed for a failing prefix


def _one(job: tuple[int, str]) -> tuple[int, list[str], int, int, str]:
    seed, store = job
    r = run_schedule(seed, store)
    return r.seed, r.violations, r.steps, r.digest, r.shape


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--schedules", type=int, default=None, help="how many schedules (default 1 with --seed, else 100)")
    p.add_argument("--seed", type=int, default=None, help="the first seed (replay: --seed S alone runs seed S)")
    p.add_argument("--store", choices=("memory", "lmdb"), default="memory", help="the storage nodes' store")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--trace", action="store_true", help="print the trace of each schedule (with --seed)")
    return p


def _results(seeds: list[int], store: str, jobs: int):
    jobs_list = [(s, store) for s in seeds]
    if jobs <= 1 or len(seeds) < 2:
        yield from map(_one, jobs_list)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_one, jobs_list, chunksize=16)


def _report(seed: int, violations: list[str], steps: int, store: str, shrink: bool) -> None:
    print(f"seed {seed}: {len(violations)} violation(s) in {steps} steps")
    for v in violations:
        print(f"  {v}")
    if not shrink:
        return
    best = shortest_prefix(seed, steps, store)
    if best is None:
        print("  (no shorter failing prefix: the violation needs the whole schedule)")
        return
    print(f"  shortest failing prefix: faults stop after step {best.steps_max} "
          f"({best.shape}); replay: python scripts/simulate.py --seed {seed} --trace")
    for v in best.violations:
        print(f"    {v}")
    prefix = [line for line in best.trace if int(line.split()[0]) <= best.steps_max]
    for line in prefix[-TRACE_TAIL:]:
        print(f"    | {line}")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.schedules is not None and args.schedules < 1:
        print("--schedules must be at least 1", file=sys.stderr)
        return 2
    count = args.schedules or (1 if args.seed is not None else 100)
    first = args.seed or 0
    seeds = list(range(first, first + count))
    started = time.monotonic()
    failing = 0
    for seed, violations, steps, digest, shape in _results(seeds, args.store, args.jobs):
        if args.seed is not None and count == 1:
            print(f"seed {seed}: {shape}, {steps} steps, trace digest {digest:08x}")
            if args.trace:
                for line in run_schedule(seed, args.store).trace:
                    print(f"  | {line}")
        if violations:
            failing += 1
            _report(seed, violations, steps, args.store, failing <= SHRUNK_MAX)
    elapsed_s = time.monotonic() - started
    print(f"{elapsed_s:.1f} s, {count / elapsed_s:.1f} schedules/s", file=sys.stderr)
    print(f"{count} schedules, {failing} violations")
    return 1 if failing else 0
