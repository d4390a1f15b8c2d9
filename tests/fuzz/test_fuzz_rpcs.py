"""Fuzz every RPC of every service of a real cluster; nothing may crash or change data.

A real cluster (a master and two storage nodes, replicas=1, as processes on
127.0.0.1) gets a known data set through ZODB (objects and a chunked array, two
transactions).  Then every method of the Master, Admin and Storage services, read
from the protobuf descriptors (``tests/fuzz/rpc_fuzz.py``: a new RPC is fuzzed without
a change here), is called in turn over real gRPC with raw request bytes: random
bytes, valid messages truncated or with bits flipped, and messages whose fields get
hostile values (ids of 0, 7 or 9 bytes, huge counts and sizes, out-of-range node ids,
partitions and enum values, repeated fields with thousands of entries), in no
protocol order (Vote without Store, Lock or Finish of an unknown ttid, Unlock,
AbortNode, SetPartitionTable with garbage...).  Most calls carry the cluster name;
one in twenty carries another name or none, and must be refused at the door.

Afterwards: every node process is alive; every answer was a status of ``ALLOWED``
(never INTERNAL or UNKNOWN: an unexpected exception in a servicer) and every OK
answer decodes as the method's reply; no node logged a traceback; the partition
table has the same cells; the data set reads back identical, transaction by
transaction (``storage.iterator``) and through ZODB; ``neoctl check`` finds the
replicas identical; the cluster is RUNNING and a new commit works.

What is not sent, and why (``rpc_fuzz.SAFETY``): some methods change the cluster
*legitimately* when their request is valid (Pack, Truncate, Tweak, DropNode,
KillNode, SetReplicas, SetClusterState STOPPING, RepairRecords, SetPartitionTable,
a restore Begin with a new tid, a storage Identify claiming a real node's id or
raising the last ids).  Obeying a valid order is not a bug, and such a change would
make the "data set unchanged" check meaningless, so these methods get only requests
they must refuse whole before changing anything (an id of the wrong length, a bad
checksum, an unknown node, a stale or malformed partition table...).  Whether a
request is valid is decided on the bytes actually sent (parsed here), so random
bytes that happen to decode into a valid order are not sent either.  Shutdown gets
only calls from another cluster, which must leave the node running: a fuzz that
shuts a node down proves nothing.  The ttids given to Store/Vote/Unvote/Abort and
those given to Finish/Lock are kept apart (the fuzz's own, and every hostile value
actually sent: seed 3599493006 once voted ttid MAX_TID on one node and locked it there),
so that the fuzz never completes a two-phase commit by chance (a commit of random stores on one node would be a
legitimate client's doing, not a crash); the stores and votes left behind are
aborted at the end (every ttid still voted on a node), as a departing client's are:
a vote from a client the master never knew holds its write locks until then (see
the report of this test's branch: an open problem, not fixed here).  Calls that legitimately wait (Subscribe
streams for ever, Finish waits for its turn) may end with DEADLINE_EXCEEDED.

``NEOARRAY_FUZZ_ITERATIONS`` (default ``DEFAULT_ITERATIONS``) calls are made; the
seed is printed, and ``NEOARRAY_SEED`` replays a run.
"""
from __future__ import annotations

import collections
import glob
import os
import random
import time

import grpc
import numpy as np
import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping

import neoarray
from neoarray import wire
from neoarray.ids import p64
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc
from neoarray.states import NodeType
from tests.cluster_helpers import letters, neoctl
from tests.conftest import running_cluster

from .rpc_fuzz import Known, RequestMaker, all_methods, examples, may_send, parse

DEFAULT_ITERATIONS = 3000
CALL_TIMEOUT_S = 10.0
PARTITIONS = 4
WRONG_CLUSTER_SHARE = 0.05
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE,
           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED,
           grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.ABORTED,
           grpc.StatusCode.OUT_OF_RANGE}
WAITING = {"Master.Subscribe", "Master.Finish"}    # may also end with DEADLINE_EXCEEDED


@pytest.fixture
def fuzz_cluster(tmp_path):
    yield from running_cluster(tmp_path / "cluster", storages=2, replicas=1, partitions=PARTITIONS)


# -- the known data set ------------------------------------------------------------------

def write_data_set(cluster) -> dict:
    """Commit objects and an array through ZODB (two transactions); what they hold."""
    db = ZODB.DB(cluster.open_storage())
    try:
        tm = transaction.TransactionManager()
        root = db.open(tm).root()
        root["objects"] = PersistentMapping({f"key-{i}": f"value-{i}" * i for i in range(20)})
        root["array"] = neoarray.zeros((1000,), dtype="f8", chunks=(100,))
        root["array"][:] = np.arange(1000.0)
        tm.commit()
        root["objects"]["key-3"] = b"\x00" * 5000          # a second revision, large data
        root["array"][250:350] = -1.0
        tm.commit()
        return {"objects": dict(root["objects"]), "array": np.asarray(root["array"][:]),
                "transactions": transactions_of(db.storage)}
    finally:
        db.close()


def transactions_of(storage, stop=None) -> list:
    """Every transaction with its records: ``[(tid, [(oid, data tid, data)])]``."""
    return [(t.tid, sorted((r.oid, r.data_txn, r.data) for r in t))
            for t in storage.iterator(None, stop)]


def assert_data_set_unchanged(cluster, expected: dict) -> None:
    db = ZODB.DB(cluster.open_storage())
    try:
        last_tid = expected["transactions"][-1][0]
        now = transactions_of(db.storage, last_tid)
        assert [tid for tid, _ in now] == [tid for tid, _ in expected["transactions"]]
        for (tid, records), (_, before) in zip(now, expected["transactions"]):
            changed = sorted(set(records) ^ set(before))
            assert not changed, f"transaction 0x{tid.hex()} changed: {[(o.hex(), t) for o, t, _ in changed]}"
        tm = transaction.TransactionManager()
        root = db.open(tm).root()
        assert dict(root["objects"]) == expected["objects"]
        np.testing.assert_array_equal(np.asarray(root["array"][:]), expected["array"])
        root["after-fuzz"] = "a new commit works"
        tm.commit()
    finally:
        db.close()


# -- calling ------------------------------------------------------------------------------

class Caller:
    """Raw-bytes calls to every node of the cluster, one channel per address."""

    def __init__(self, cluster, storage_addresses: list[str]):
        self.cluster = cluster.cluster
        self.master = cluster.address
        self.storages = storage_addresses
        self.channels = {a: grpc.insecure_channel(a, options=wire.grpc_options(wire.MESSAGE_BYTES_MAX))
                         for a in [self.master, *storage_addresses]}
        self.typed: dict[str, grpc.Channel] = {}

    def stub(self, address: str) -> srpc.StorageStub:
        """A typed stub carrying the cluster name (for the cleanup, not the fuzz)."""
        if address not in self.typed:
            self.typed[address] = wire.open_channel(address, self.cluster)
        return srpc.StorageStub(self.typed[address])

    def close(self) -> None:
        for channel in [*self.channels.values(), *self.typed.values()]:
            channel.close()

    def call(self, method, address: str, raw: bytes, cluster_name: str | None):
        """``(status code, details)``; an OK reply must decode as the method's reply."""
        metadata = () if cluster_name is None else ((wire.CLUSTER_KEY, cluster_name),)
        channel = self.channels[address]
        try:
            if method.streaming:
                return self._first_of_stream(channel, method, raw, metadata)
            reply = channel.unary_unary(method.path, request_serializer=None, response_deserializer=None)(
                raw, metadata=metadata, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            return err.code(), err.details()
        if parse(method.reply, reply) is None:
            return "UNDECODABLE REPLY", reply[:64].hex()
        return grpc.StatusCode.OK, ""

    @staticmethod
    def _first_of_stream(channel, method, raw, metadata):
        """A stream answers one message then waits: read it and cancel."""
        call = channel.unary_stream(method.path, request_serializer=None, response_deserializer=None)(
            raw, metadata=metadata, timeout=CALL_TIMEOUT_S)
        try:
            first = next(call, None)
        finally:
            call.cancel()
        if first is not None and parse(method.reply, first) is None:
            return "UNDECODABLE REPLY", first[:64].hex()
        return grpc.StatusCode.OK, ""


def known_of(cluster, expected: dict) -> Known:
    admin = cluster.admin()
    try:
        storages = [n for n in admin.nodes() if n.type is NodeType.STORAGE]
        ptid = admin.partition_table().ptid
    finally:
        admin.close()
    rng = random.Random(0)
    data_oids = sorted({oid for _, records in expected["transactions"] for oid, _, _ in records})
    known = Known(partitions=PARTITIONS, storage_ids=[n.node_id for n in storages],
                  addresses=[cluster.address, *(n.address for n in storages)],
                  data_oids=data_oids, data_tids=[tid for tid, _ in expected["transactions"]], ptid=ptid,
                  store_ttids=[p64((7 << 32) | i) for i in range(1, 6)] + [rng.randbytes(8)],
                  finish_ttids=[p64((9 << 32) | i) for i in range(1, 6)] + [rng.randbytes(8)])
    known.examples = examples(known)
    return known


def fuzz(caller: Caller, known: Known, seed: int, iterations: int,
         also_allowed=frozenset()) -> tuple[collections.Counter, list]:
    """Call the methods in turn with hostile requests; ``(counts, bad answers)``
    (``also_allowed``: statuses a port may answer besides ``ALLOWED``)."""
    rng = random.Random(seed)
    maker = RequestMaker(rng, known)
    methods = all_methods()
    counts, bad = collections.Counter(), []
    for i in range(iterations):
        method = methods[i % len(methods)]
        how, raw = maker.request(method)
        wrong_cluster = rng.random() < WRONG_CLUSTER_SHARE or method.key == "Storage.Shutdown"
        if not wrong_cluster and not may_send(method, raw, known):
            counts[(method.key, "not sent")] += 1
            continue
        address = caller.master if method.service != "Storage" else rng.choice(caller.storages)
        name = rng.choice([None, "another-cluster", ""]) if wrong_cluster else caller.cluster
        code, details = caller.call(method, address, raw, name)
        counts[(method.key, code)] += 1
        allowed = {grpc.StatusCode.FAILED_PRECONDITION} if wrong_cluster else (
            ALLOWED | {grpc.StatusCode.DEADLINE_EXCEEDED} if method.key in WAITING else ALLOWED) | also_allowed
        if code not in allowed:
            bad.append(f"#{i} {method.key} ({how}, cluster {name!r}): {code} {details!r}; "
                       f"request {raw[:48].hex()}")
    return counts, bad


def abort_stores(caller: Caller, known: Known) -> None:
    """Drop what the fuzz stored or voted (votes hold write locks), as the master does
    for a departed client: the fuzz's ttids, and every ttid still voted on a node."""
    methods = {m.key: m for m in all_methods()}
    for address in caller.storages:
        info = caller.stub(address).RecoveryInfo(cpb.Empty(), timeout=CALL_TIMEOUT_S)
        for ttid in {*known.store_ttids, *info.voted_ttids}:
            raw = spb.AbortTransactionRequest(ttid=ttid).SerializeToString()
            code, details = caller.call(methods["Storage.AbortTransaction"], address, raw, caller.cluster)
            assert code == grpc.StatusCode.OK, details
        assert not caller.stub(address).RecoveryInfo(cpb.Empty(), timeout=CALL_TIMEOUT_S).voted_ttids


def tracebacks(cluster) -> list[str]:
    found = []
    for path in glob.glob(os.path.join(cluster.path, "logs", "*")):
        with open(path, errors="replace") as f:
            text = f.read()
        if "Traceback" in text:
            at = text.index("Traceback")
            found.append(f"{os.path.basename(path)}: {text[max(0, at - 300):at + 1500]}")
    return found


def dead_processes(cluster) -> dict[str, int]:
    """Node processes that exited: name -> exit status."""
    procs = {"master": cluster.master_proc, **{cluster.storage_name(i): p for i, p in cluster.storage_procs.items()}}
    return {name: proc.poll() for name, proc in procs.items() if proc.poll() is not None}


def assert_unharmed(cluster, cells, expected: dict, seed: int) -> None:
    """After a fuzz: the cluster RUNNING with the same cells, the data set unchanged
    (and a new commit working), the replicas identical, every node alive, no
    traceback in any log."""
    admin = cluster.admin()
    try:
        assert admin.cluster_state() == "RUNNING"
    finally:
        admin.close()
    assert letters(cluster) == cells, f"seed {seed}: the partition table changed"
    assert_data_set_unchanged(cluster, expected)
    neoctl(cluster, "check")
    assert not dead_processes(cluster), f"seed {seed}"
    assert not tracebacks(cluster), f"seed {seed}: " + "\n\n".join(tracebacks(cluster))


def test_every_rpc_survives_hostile_requests(fuzz_cluster):
    cluster = fuzz_cluster
    seed = int(os.environ.get("NEOARRAY_SEED", random.randrange(2**32)))
    iterations = int(os.environ.get("NEOARRAY_FUZZ_ITERATIONS", DEFAULT_ITERATIONS))
    print(f"fuzz seed: NEOARRAY_SEED={seed} NEOARRAY_FUZZ_ITERATIONS={iterations}")
    expected = write_data_set(cluster)
    cells = letters(cluster)
    known = known_of(cluster, expected)
    caller = Caller(cluster, known.addresses[1:])
    try:
        started = time.monotonic()
        counts, bad = fuzz(caller, known, seed, iterations)
        print(f"{iterations} requests in {time.monotonic() - started:.1f} s")
        for key, n in sorted(counts.items(), key=str):
            print(f"  {key[0]:28} {key[1]!s:40} {n}")
        assert not dead_processes(cluster), f"seed {seed}"
        assert not bad, f"seed {seed}: {len(bad)} answers outside the allowed statuses:\n" + "\n".join(bad[:30])
        sent = {key for key, code in counts if code != "not sent"}
        if iterations >= 20 * len(all_methods()):      # each method had its chances
            assert sent == {m.key for m in all_methods()}, f"never called: {sent ^ {m.key for m in all_methods()}}"
        abort_stores(caller, known)
    finally:
        caller.close()
    assert_unharmed(cluster, cells, expected, seed)
