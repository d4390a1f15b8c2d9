"""``scripts/simulate.py``: run seeded schedules, report violations with the
shortest failing prefix found, end with ``N schedules, M violations``."""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

from .client import ClientActor, StoresInVoteClient
from .run import Components, run_schedule, shortest_prefix

SHRUNK_MAX = 5                # failing seeds searched for their shortest prefix
TRACE_TAIL = 40               # trace lines printed for a failing prefix


def _parts(stores_in_vote: bool, tweaks: bool = False) -> Components | None:
    if not (stores_in_vote or tweaks):
        return None
    return Components(client=StoresInVoteClient if stores_in_vote else ClientActor, tweaks=tweaks)


def _flags(parts: Components | None) -> str:
    """The command-line options that make ``parts``."""
    if parts is None:
        return ""
    return f"{' --stores-in-vote' if parts.client is StoresInVoteClient else ''}{' --tweaks' if parts.tweaks else ''}"


def _one(job: tuple) -> tuple[int, list[str], int, int, str]:
    seed, store, steps_max, skipped, modes = job
    r = run_schedule(seed, store, steps_max, _parts(*modes), skipped)
    return r.seed, r.violations, r.steps, r.digest, r.shape


def _skipped(text: str) -> frozenset | None:
    """The fault indexes of ``--skip-faults`` (None: not indexes)."""
    if text == "none":
        return frozenset()
    parts = text.split(",")
    if not all(p.isdigit() for p in parts):
        return None
    return frozenset(int(p) for p in parts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--schedules", type=int, default=None, help="how many schedules (default 1 with --seed, else 100)")
    p.add_argument("--seed", type=int, default=None, help="the first seed (replay: --seed S alone runs seed S)")
    p.add_argument("--store", choices=("memory", "lmdb"), default="memory", help="the storage nodes' store")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--trace", action="store_true", help="print the trace of each schedule (with --seed)")
    p.add_argument("--steps", type=int, default=None, help="stop the faults after this many steps (a prefix)")
    p.add_argument("--skip-faults", default="none", help="indexes of the drawn faults to leave out: 1,3 or none")
    p.add_argument("--stores-in-vote", action="store_true",
                   help="clients send half of each transaction's stores inside its vote (as the real client "
                        "sends its last ones); by default every store apart, then the vote")
    p.add_argument("--tweaks", action="store_true",
                   help="an operator runs neoctl tweak 1-4 times during the faults, moving cells off a node "
                        "or back (with 2 storage nodes or more)")
    return p


def _results(seeds: list[int], store: str, jobs: int, steps_max=None, skipped=frozenset(), modes=(False, False)):
    jobs_list = [(s, store, steps_max, skipped, modes) for s in seeds]
    if jobs <= 1 or len(seeds) < 2:
        yield from map(_one, jobs_list)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_one, jobs_list, chunksize=16)


def report(seed: int, violations: list[str], steps: int, store: str, shrink: bool, parts=None) -> None:
    """Print a failing seed, and when ``shrink`` its shortest failing prefix."""
    print(f"seed {seed}: {len(violations)} violation(s) in {steps} steps")
    for v in violations:
        print(f"  {v}")
    if not shrink:
        return
    best = shortest_prefix(seed, steps, store, parts)
    if best is None:
        print("  (no shorter failing prefix: the violation needs the whole schedule)")
        return
    skip = ",".join(map(str, sorted(best.skipped))) or "none"
    print(f"  shortest failing prefix: faults stop after step {best.steps_max}, faults left out: {skip} "
          f"of {best.planned} ({best.shape}); replay: python scripts/simulate.py --seed {seed} "
          f"--steps {best.steps_max} --skip-faults {skip} --trace{_flags(parts)}")
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
    skipped = _skipped(args.skip_faults)
    if skipped is None:
        print(f"--skip-faults {args.skip_faults!r}: give fault indexes separated by commas (1,3) or none",
              file=sys.stderr)
        return 2
    modes = (args.stores_in_vote, args.tweaks)
    parts = _parts(*modes)
    for seed, violations, steps, digest, shape in _results(seeds, args.store, args.jobs, args.steps, skipped,
                                                           modes):
        if args.seed is not None and count == 1:
            print(f"seed {seed}: {shape}, {steps} steps, trace digest {digest:08x}")
            if args.trace:
                for line in run_schedule(seed, args.store, args.steps, parts, skipped).trace:
                    print(f"  | {line}")
        if violations:
            failing += 1
            report(seed, violations, steps, args.store, failing <= SHRUNK_MAX, parts)
    elapsed_s = time.monotonic() - started
    print(f"{elapsed_s:.1f} s, {count / elapsed_s:.1f} schedules/s", file=sys.stderr)
    print(f"{count} schedules, {failing} violations")
    return 1 if failing else 0
