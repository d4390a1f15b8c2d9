"""kill -9 of a process writing to a real LMDB backend, at a random moment.

A child process stores, votes, locks and aborts transactions of large and small data,
and prints each lock and abort once it returned.  The test kills it with SIGKILL
after a random number of those lines, reopens the environment (with the transaction
manager's recovery, as a restarted node does) and checks: every acknowledged lock is
there with its data; nothing aborted, and nothing unvoted, is visible; every record
loads with a valid checksum; every data row belongs to exactly one record.  Several
rounds run on the same environment.  The test prints its seed; ``NEOARRAY_SEED=<seed>``
replays it.
"""
import os
import random
import signal
import subprocess
import sys

from neoarray.ids import Z64, p64, u64
from neoarray.kv import LMDBStore
from storage_node.backend import Backend, Stored, TransactionInfo, checksum
from storage_node.manager import TransactionManager

from .test_backend import assert_data_owned_once

PARTITIONS = 3
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def payload(i: int, oid: int, size: int) -> bytes:
    return (b"%d:%d;" % (i, oid) * (size // 4 + 1))[:size]


def writer(path: str, seed: int, first: int) -> None:
    """The child: commits, leaves voted and aborts transactions until it is killed."""
    rng = random.Random(seed)
    b = Backend(LMDBStore(path, 1 << 30), partitions=PARTITIONS)
    for i in range(first, first + 100_000):
        ttid = p64(i)
        oids = rng.sample(range(1, 16), rng.randint(1, 4))
        records = []
        for oid in oids:
            data = None if rng.random() < 0.1 else payload(i, oid, rng.choice((100, 3000, 70_000, 300_000)))
            records.append(Stored(p64(oid), Z64, data, 0 if data is None else checksum(data)))
        for k in range(0, len(records), 2):              # stores arrive in batches
            b.store_voted(ttid, records[k:k + 2])
        action = rng.random()
        if action < 0.2:
            b.abort(ttid)
            print("aborted", i, flush=True)
            continue
        meta = TransactionInfo(b"", b"u", b"d", b"", [p64(o) for o in oids], ttid)
        b.vote(ttid, meta, [p64(o) for o in oids], node=1)
        if action < 0.3:
            continue                                     # left voted, undecided
        b.lock(ttid, ttid)                               # tid = ttid: increasing
        print("locked", i, *(f"{o}:{-1 if r.data is None else len(r.data)}"
                             for o, r in zip(oids, records)), flush=True)


def run_child(path, seed, first, lines):
    """Run the writer until it printed ``lines`` lines, kill -9 it, return all it printed."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = f"from tests.storage_node.test_kill import writer; writer({path!r}, {seed}, {first})"
    proc = subprocess.Popen([sys.executable, "-c", code],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out = []
    try:
        while len(out) < lines:
            line = proc.stdout.readline()
            assert line, f"writer died: {proc.stderr.read()}"
            out.append(line.split())
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
    return out + [line.split() for line in rest.splitlines()]


def check(path, acked, aborted):
    b = Backend(LMDBStore(path, 1 << 30), partitions=PARTITIONS)
    try:
        TransactionManager(b)                            # a restarted node's recovery
        assert b.pending_ttids() == set(b.voted())       # unvoted stores are gone
        for i, sizes in acked.items():
            for oid, size in sizes:
                rec = b.load(p64(oid), serial=p64(i))
                assert rec.data == (None if size < 0 else payload(i, oid, size)), (i, oid)
        with b.kv.read() as txn:
            keys = [k for k, _ in txn.scan("obj", b"")]
        for key in keys:                                 # every record loads, checksum valid
            b.load(key[4:12], serial=key[12:])
            assert u64(key[12:]) not in aborted
        assert_data_owned_once(b)
        return max((u64(k) for k in b.voted()), default=0), max((u64(k[12:]) for k in keys), default=0)
    finally:
        b.kv.close()


def test_kill_9_loses_no_lock_and_exposes_no_half_write(tmp_path):
    seed = int(os.environ.get("NEOARRAY_SEED", random.randrange(1 << 30)))
    print(f"NEOARRAY_SEED={seed}")
    rng = random.Random(seed)
    path = str(tmp_path / "db")
    acked, aborted, first = {}, set(), 1
    for _ in range(4):
        for line in run_child(path, rng.randrange(1 << 30), first, rng.randint(1, 40)):
            if line[0] == "locked":
                acked[int(line[1])] = [tuple(map(int, x.split(":"))) for x in line[2:]]
            elif line[0] == "aborted":
                aborted.add(int(line[1]))
        # past every ttid the child used (at most one unvoted one after the last line)
        first = max(*check(path, acked, aborted), *acked, *aborted, first) + 2
