"""Random and mutated requests for every RPC of every neoarray service.

``all_methods()`` reads the methods from the protobuf descriptors, so an RPC added to a
``.proto`` file is fuzzed without touching this module.  ``RequestMaker`` builds the
bytes of one request from a seeded ``random.Random``: random bytes, a valid message
truncated or with bits flipped, or a message whose fields get hostile values (ids of
0, 7, 9 bytes, huge counts, out-of-range node ids, partitions and enum values, repeated
fields with many entries).  ``SAFETY`` says, per method that changes the cluster
legitimately, which parsed requests may be sent without changing the known data set
(see the docstring of ``tests/fuzz/test_fuzz_rpcs.py`` for why).
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

import xxhash
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message import DecodeError

from neoarray.ids import MAX_TID, Z64, p64, u64
from neoarray.proto import common_pb2, master_pb2, standby_pb2, storage_pb2

MANY_ENTRIES_MAX = 3_000          # a "many entries" repeated field has at most this many
BYTES_HUGE = 256 * 1024           # the largest random bytes value
DEPTH_MAX = 3                     # nesting of generated messages
FOREIGN_NODE_ID = 1_000_000       # node ids from here on are never known to the cluster
REPAIR_RECORDS_MAX = 10_000       # storage_node.node.Limits.repair_records_per_batch_max

_ID_NAMES = ("oid", "tid", "ttid", "serial", "before", "min_tid", "max_tid", "until_tid",
             "data_tid", "last_tid", "last_oid", "after_oid", "committed_serial", "busy_with")
_NODE_ID_NAMES = ("node_id", "node_ids", "storage_ids", "exclude_node_ids")
_PARTITION_NAMES = ("partition", "partitions")


@dataclass(frozen=True)
class Method:
    """One RPC: where it is served and what it takes and answers."""
    service: str            # "Master", "Admin", "Standby" (the master's port), "Storage"
    name: str
    path: str               # "/neoarray.v1.Storage/Load"
    request: type
    reply: type
    streaming: bool

    @property
    def key(self) -> str:
        return f"{self.service}.{self.name}"


def all_methods() -> list[Method]:
    """Every method of every service of the neoarray protocol, in a stable order."""
    out = []
    for module in (master_pb2, standby_pb2, storage_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                out.append(Method(service.name, m.name, f"/{service.full_name}/{m.name}",
                                  message_factory.GetMessageClass(m.input_type),
                                  message_factory.GetMessageClass(m.output_type),
                                  m.server_streaming))
    return out


@dataclass
class Known:
    """What the fuzz knows of the cluster under test, to aim values near real ones."""
    partitions: int
    storage_ids: list[int]
    addresses: list[str]                 # the master's and the storages' gRPC addresses
    data_oids: list[bytes]
    data_tids: list[bytes]
    ptid: int
    store_ttids: list[bytes] = field(default_factory=list)    # Store/Vote/Unvote/Abort only
    finish_ttids: list[bytes] = field(default_factory=list)   # Finish/Lock/FinalTid only
    # every ttid actually sent to Store/Vote/Unvote/Abort, and to Finish/Lock: a hostile
    # value (MAX_TID, a random one) sent to both sides would complete a commit by chance
    sent_store: set[bytes] = field(default_factory=set)
    sent_finish: set[bytes] = field(default_factory=set)
    examples: dict[str, list] = field(default_factory=dict)   # method key -> valid requests


def parse(cls, raw: bytes):
    """The message ``raw`` decodes to, or None when it does not decode."""
    try:
        return cls.FromString(raw)
    except (DecodeError, ValueError):
        return None


class RequestMaker:
    """Hostile request bytes from one seeded ``random.Random``."""

    def __init__(self, rng: random.Random, known: Known):
        self.rng = rng
        self.known = known

    # -- whole requests ---------------------------------------------------------------
    def request(self, method: Method) -> tuple[str, bytes]:
        """``(how it was made, request bytes)``."""
        roll = self.rng.random()
        valid = self.known.examples.get(method.key)
        if roll < 0.10:
            return "random bytes", self.random_bytes()
        if roll < 0.25:
            base = self.rng.choice(valid) if valid else self.message(method.request, 0)
            return "mutated bytes", self.mutate(base.SerializeToString())
        if roll < 0.60 and valid:
            return "valid, fields mutated", self.mutate_fields(self.rng.choice(valid))
        return "hostile fields", self.message(method.request, 0).SerializeToString()

    def mutate_fields(self, example) -> bytes:
        """A copy of the valid ``example`` with one to three fields (maybe nested) given
        a hostile value, cleared, or grown."""
        msg = type(example)()
        msg.CopyFrom(example)
        for _ in range(self.rng.randint(1, 3)):
            self._mutate_one(msg, 0)
        return msg.SerializeToString()

    def _mutate_one(self, msg, depth: int) -> None:
        fd = self.rng.choice(msg.DESCRIPTOR.fields)
        if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            return
        if fd.is_repeated:
            target = getattr(msg, fd.name)
            if fd.type == FD.TYPE_MESSAGE and len(target) and self.rng.random() < 0.6:
                self._mutate_one(self.rng.choice(target), depth + 1)
            elif self.rng.random() < 0.3:
                del target[:]
            else:
                self._fill_repeated(msg, fd, depth)
        elif fd.type == FD.TYPE_MESSAGE:
            if depth < DEPTH_MAX and self.rng.random() < 0.7:
                self._mutate_one(getattr(msg, fd.name), depth + 1)
            else:
                msg.ClearField(fd.name)
        else:
            setattr(msg, fd.name, self.scalar(fd))

    def random_bytes(self) -> bytes:
        n = self.rng.choice([0, 1, 2, 5, 16, 64, 300, 4096])
        return self.rng.randbytes(n)

    def mutate(self, raw: bytes) -> bytes:
        """``raw`` truncated, with bits flipped, or with bytes inserted."""
        data = bytearray(raw or b"\x08\x01")
        how = self.rng.randrange(3)
        if how == 0:
            return bytes(data[:self.rng.randrange(len(data))])
        if how == 1:
            for _ in range(self.rng.randint(1, 4)):
                i = self.rng.randrange(len(data))
                data[i] ^= 1 << self.rng.randrange(8)
            return bytes(data)
        i = self.rng.randrange(len(data) + 1)
        return bytes(data[:i] + self.rng.randbytes(self.rng.randint(1, 8)) + data[i:])

    def message(self, cls, depth: int):
        """A message of ``cls`` whose fields (each present or not) get hostile values."""
        msg = cls()
        for fd in cls.DESCRIPTOR.fields:
            if self.rng.random() < 0.35:
                continue
            if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
                continue            # no request has a map field
            if fd.type == FD.TYPE_MESSAGE and depth >= DEPTH_MAX:
                continue
            if fd.is_repeated:
                self._fill_repeated(msg, fd, depth)
            elif fd.type == FD.TYPE_MESSAGE:
                cls_of_field = message_factory.GetMessageClass(fd.message_type)
                getattr(msg, fd.name).CopyFrom(self.message(cls_of_field, depth + 1))
            else:
                setattr(msg, fd.name, self.scalar(fd))
        return msg

    def _fill_repeated(self, msg, fd, depth: int) -> None:
        target = getattr(msg, fd.name)
        many = self.rng.random() < 0.05
        count = self.rng.randint(100, MANY_ENTRIES_MAX) if many else self.rng.choice([0, 1, 2, 3, 5])
        if fd.type == FD.TYPE_MESSAGE:
            cls = message_factory.GetMessageClass(fd.message_type)
            count = min(count, 300)     # nested messages are costlier to build
            target.extend(self.message(cls, depth + 1) for _ in range(count))
        else:
            target.extend(self.scalar(fd) for _ in range(count))

    # -- values -----------------------------------------------------------------------
    def scalar(self, fd):
        name = fd.name
        if fd.type == FD.TYPE_BYTES:
            return self.an_id(name) if name in _ID_NAMES or name.endswith(("oids", "ttids")) \
                else self.some_bytes(name)
        if fd.type == FD.TYPE_ENUM:
            return self.rng.choice([*(v.number for v in fd.enum_type.values), -1, 99, 2**31 - 1])
        if fd.type == FD.TYPE_BOOL:
            return self.rng.random() < 0.5
        if fd.type == FD.TYPE_STRING:
            return self.some_string()
        if fd.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            return self.rng.choice([0.0, -1.0, 1.0, float("nan"), float("inf"), float("-inf"),
                                    1e308, -1e308, self.rng.uniform(-1e6, 1e6)])
        if name in _NODE_ID_NAMES:
            return self.node_id()
        if name in _PARTITION_NAMES:
            return self.partition()
        if fd.type in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
            return self.rng.choice([0, 1, 2, 3, 7, 100, 2**16, 2**31 - 1, 2**31, 2**32 - 1,
                                    self.rng.randrange(2**32)])
        if fd.type in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
            return self.rng.choice([0, 1, 2, 1000, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
                                    self.rng.randrange(2**64)])
        if fd.type in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
            return self.rng.choice([0, 1, -1, 2**31 - 1, -2**31])
        return self.rng.choice([0, 1, -1, 2**63 - 1, -2**63])

    def an_id(self, name: str) -> bytes:
        """An 8-byte id near the real ones, or one of the wrong length."""
        k = self.known
        choices = [
            lambda: b"", lambda: self.rng.randbytes(7), lambda: self.rng.randbytes(9),
            lambda: self.rng.randbytes(8), lambda: Z64, lambda: b"\xff" * 8, lambda: MAX_TID,
            lambda: self.rng.choice(k.data_oids), lambda: self.rng.choice(k.data_tids),
            lambda: p64(u64(self.rng.choice(k.data_tids)) + self.rng.choice([-1, 1, 2**32])),
            lambda: p64(u64(self.rng.choice(k.data_oids)) + self.rng.randint(1, 50)),
        ]
        if "ttid" in name or name in ("tid", "busy_with"):
            choices += [lambda: self.rng.choice(k.store_ttids), lambda: self.rng.choice(k.finish_ttids)]
        return self.rng.choice(choices)()

    def some_bytes(self, name: str) -> bytes:
        roll = self.rng.random()
        if roll < 0.05:
            return self.rng.randbytes(self.rng.choice([65_536, BYTES_HUGE]))
        if roll < 0.2 and name in ("after", "next_after", "keys"):
            return self.rng.choice(self.known.data_oids) + self.rng.choice(self.known.data_tids)
        return self.rng.randbytes(self.rng.choice([0, 1, 8, 16, 33, 200]))

    def some_string(self) -> str:
        k = self.known
        return self.rng.choice([
            "", "C", "F", "zlib", "<f8", "|b1", "O", "V8", "<f8,<i4", "S0", "sum", "histogram",
            "mean", "count", "\x00", "é" * 5, "x" * 10_000, self.rng.choice(k.addresses),
            "127.0.0.1:1", "not an address", "[::1]:99999",
            "".join(self.rng.choice(string.printable) for _ in range(self.rng.randint(1, 20)))])

    def node_id(self) -> int:
        return self.rng.choice([0, *self.known.storage_ids, *range(1, 12), FOREIGN_NODE_ID,
                                2**31, 2**32 - 1, self.rng.randrange(FOREIGN_NODE_ID, 2**32)])

    def partition(self) -> int:
        p = self.known.partitions
        return self.rng.choice([0, p - 1, p, p + 1, 2**31, 2**32 - 1, self.rng.randrange(p)])


# -- which requests may be sent (see the docstring of test_fuzz_rpcs.py) ----------------

def _is_id(value: bytes) -> bool:
    return len(value) == 8


def _foreign(node_ids) -> bool:
    """None of ``node_ids`` can be a storage node of the cluster (a real one, or one
    that a fuzzed Identify registered)."""
    return all(n == 0 or n >= FOREIGN_NODE_ID for n in node_ids)


def _identify(req, k: Known) -> bool:
    """A storage may not claim a real node's id (a restart) nor raise the last ids."""
    if req.type != 2:       # STORAGE
        return True
    refused = (req.last_tid and (not _is_id(req.last_tid) or req.last_tid > MAX_TID)) or \
        (req.last_oid and not _is_id(req.last_oid))
    raises = any(_is_id(i) and i != Z64 for i in (req.last_tid, req.last_oid))
    return req.node_id not in k.storage_ids and (refused or not raises) \
        and req.address not in k.addresses[1:]


def _begin(req, k: Known) -> bool:
    """No restore transaction with a new tid (it would move the TID clock)."""
    return not _is_id(req.tid) or req.tid <= max(k.data_tids) or req.tid > MAX_TID


def _finish_side(req, k: Known) -> bool:
    """Finish/Lock: never a ttid of the store side (remembered when sent)."""
    if req.ttid in k.store_ttids or req.ttid in k.sent_store:
        return False
    k.sent_finish.add(req.ttid)
    return True


def _add_nodes(req, k: Known) -> bool:
    return (not req.all and _foreign(req.node_ids)) or (req.all and len(req.node_ids) > 0)


def _tweak(req, k: Known) -> bool:
    """A dry run, or one naming a node that cannot be a member (refused whole)."""
    return req.dry_run or any(n == 0 or n >= FOREIGN_NODE_ID for n in req.exclude_node_ids)


def _node_request(req, k: Known) -> bool:
    return req.node_id == 0 or req.node_id >= FOREIGN_NODE_ID


def _set_replicas(req, k: Known) -> bool:
    return req.replicas >= len(k.storage_ids)


def _set_cluster_state(req, k: Known) -> bool:
    return req.state != 4   # STOPPING


def _admin_truncate(req, k: Known) -> bool:
    return not _is_id(req.tid)


def _store(req, k: Known) -> bool:
    """Store/Vote/Unvote/Abort: never a ttid of the finish side (remembered when sent)."""
    if req.ttid in k.finish_ttids or req.ttid in k.sent_finish:
        return False
    k.sent_store.add(req.ttid)
    return True


def _pack(req, k: Known) -> bool:
    return not _is_id(req.tid) or any(not _is_id(o) for o in req.gc_oids)


def _repair(req, k: Known) -> bool:
    """Only repairs refused before anything is written: a bad id or a bad checksum."""
    def bad_object(o):
        return (not _is_id(o.oid) or not _is_id(o.tid) or (o.data_tid and not _is_id(o.data_tid))
                or (not o.deleted and xxhash.xxh3_64_intdigest(o.data) != o.checksum))
    bad_txn = any(not _is_id(t.tid) or any(not _is_id(o) for o in t.oids) for t in req.transactions)
    too_many = len(req.objects) + len(req.transactions) > REPAIR_RECORDS_MAX
    return too_many or bad_txn or any(bad_object(o) for o in req.objects)


def _repair_blob_chunk(req, k: Known) -> bool:
    """Only chunks refused before anything is written: a bad id or a bad checksum."""
    return (not _is_id(req.oid) or not _is_id(req.blob_tid)
            or xxhash.xxh3_64_intdigest(req.data) != req.checksum)


def _set_pt(req, k: Known) -> bool:
    """Only tables a node must refuse: wrong row count, unknown cell states, stale ptid."""
    bad_state = any(not 1 <= c.state <= 4 for row in req.rows for c in row.cells)
    return len(req.rows) != k.partitions or bad_state or req.ptid < k.ptid


def _storage_truncate(req, k: Known) -> bool:
    return req.check_only or not _is_id(req.tid) or not _is_id(req.until_tid) or req.until_tid < req.tid


# method key -> predicate on the parsed request: True when it may be sent
SAFETY = {
    "Master.Identify": _identify,
    "Master.Begin": _begin,
    "Master.Finish": _finish_side,
    "Admin.SetClusterState": _set_cluster_state,
    "Admin.AddNodes": _add_nodes,
    "Admin.Tweak": _tweak,
    "Admin.DropNode": _node_request,
    "Admin.KillNode": _node_request,
    "Admin.SetReplicas": _set_replicas,
    "Admin.Truncate": _admin_truncate,
    "Storage.Store": _store,
    "Storage.StoreBlobChunk": _store,   # a valid chunk is kept under its ttid (dropped with it)
    "Storage.Vote": _store,
    "Storage.Unvote": _store,
    "Storage.AbortTransaction": _store,
    "Storage.Lock": _finish_side,
    "Storage.Pack": _pack,
    "Storage.RepairRecords": _repair,
    "Storage.RepairBlobChunk": _repair_blob_chunk,
    "Storage.SetPartitionTable": _set_pt,
    "Storage.Truncate": _storage_truncate,
    "Storage.Shutdown": lambda req, k: False,   # only undecodable or from another cluster
    # a valid FollowState makes the sender a standby the primary waits for (bounded):
    # only undecodable ones, or from another cluster
    "Standby.FollowState": lambda req, k: False,
}


def may_send(method: Method, raw: bytes, known: Known) -> bool:
    """Whether ``raw`` may be sent to ``method`` without changing the known data set:
    undecodable bytes always may (the server must refuse them)."""
    check = SAFETY.get(method.key)
    if check is None:
        return True
    req = parse(method.request, raw)
    return req is None or check(req, known)


def examples(k: Known) -> dict[str, list]:
    """Valid requests near the known data set, for ``mutate_fields`` to spoil a little:
    the paths behind the first checks are reached this way."""
    oid, tid = k.data_oids[-1], k.data_tids[-1]
    data = b"fuzz record"
    record = storage_pb2.ObjectRecord(oid=oid, serial=tid, data=data, checksum=xxhash.xxh3_64_intdigest(data))
    store_ttid, finish_ttid = k.store_ttids[0], k.finish_ttids[0]
    client = u64(store_ttid) >> 32
    load = storage_pb2.LoadRequest(oid=oid, before=tid)
    m, s, c = master_pb2, storage_pb2, common_pb2
    return {key: [value] if not isinstance(value, list) else value for key, value in {
        "Master.Identify": m.IdentifyRequest(type=c.CLIENT, host="fuzz"),
        "Master.Subscribe": m.SubscribeRequest(node_id=FOREIGN_NODE_ID),
        "Master.NewOids": m.NewOidsRequest(count=3),
        "Master.Begin": m.BeginRequest(node_id=client),
        "Master.Finish": m.FinishRequest(node_id=u64(finish_ttid) >> 32, ttid=finish_ttid, oids=[oid],
                                         storage_ids=k.storage_ids, view_ptid=k.ptid),
        "Master.Abort": m.AbortRequest(node_id=client, ttid=store_ttid, storage_ids=k.storage_ids),
        "Master.FinalTid": m.FinalTidRequest(ttid=finish_ttid),
        "Master.Heartbeat": m.HeartbeatRequest(node_id=k.storage_ids[0], replicated=[
            m.ReplicaDone(partition=0, tid=tid)]),
        "Admin.SetClusterState": m.SetClusterStateRequest(state=c.CLUSTER_RUNNING),
        "Admin.AddNodes": m.AddNodesRequest(node_ids=[FOREIGN_NODE_ID]),
        "Admin.Tweak": m.TweakRequest(dry_run=True),
        "Admin.DropNode": m.NodeRequest(node_id=FOREIGN_NODE_ID),
        "Admin.KillNode": m.NodeRequest(node_id=FOREIGN_NODE_ID),
        "Admin.SetReplicas": m.SetReplicasRequest(replicas=len(k.storage_ids)),
        "Admin.SetReplicationRate": m.SetReplicationRateRequest(bytes_per_s=0),
        "Storage.Load": load,
        "Storage.LoadMany": s.LoadManyRequest(loads=[load, s.LoadRequest(oid=k.data_oids[0])]),
        "Storage.Store": s.StoreRequest(ttid=store_ttid, node_id=client, objects=[record]),
        "Storage.StoreBlobChunk": s.StoreBlobChunkRequest(ttid=store_ttid, node_id=client, oid=oid, index=0,
                                                          checksum=xxhash.xxh3_64_intdigest(b"fuzz"), data=b"fuzz"),
        "Storage.LoadBlobChunk": s.LoadBlobChunkRequest(oid=k.data_oids[0], serial=tid, index=0),
        "Storage.RepairBlobChunk": s.RepairBlobChunkRequest(oid=k.data_oids[0], blob_tid=tid, index=0,
                                                            checksum=1, data=b"fuzz"),   # refused: checksum
        "Storage.Vote": s.VoteRequest(ttid=store_ttid, node_id=client, oids=[oid], has_meta=True,
                                      meta=c.TransactionMeta(user_raw=b"fuzz"), objects=[record],
                                      checks=[s.ObjectCheck(oid=k.data_oids[0], serial=tid)]),
        "Storage.AbortTransaction": s.AbortTransactionRequest(ttid=store_ttid),
        "Storage.Unvote": s.AbortTransactionRequest(ttid=store_ttid),
        "Storage.AbortNode": s.AbortNodeRequest(node_id=client, keep_ttids=[finish_ttid]),
        "Storage.History": s.HistoryRequest(oid=oid, size=5),
        "Storage.Transactions": s.TransactionsRequest(partitions=list(range(k.partitions)), limit=10),
        "Storage.ObjectsSince": s.ObjectsSinceRequest(partitions=[0, 1], after_oid=k.data_oids[0], limit=10),
        "Storage.Reduce": [
            s.ReduceRequest(oids=k.data_oids, kernel="sum", dtype="<f8", acc_dtype="<f8",
                            chunk_shape=[100], order="C",
                            extents=[s.ChunkExtent(sizes=[100]) for _ in k.data_oids]),
            s.ReduceRequest(oids=k.data_oids, kernel="envelope", dtype="<f8", acc_dtype="<f8",
                            chunk_shape=[100], order="C", bins=16, span_start=50, span_stop=1000,
                            extents=[s.ChunkExtent(sizes=[100], offset=100 * i)
                                     for i, _ in enumerate(k.data_oids)])],
        "Storage.CheckRecords": [s.CheckRecordsRequest(partition=p, table=t, max_tid=tid)
                                 for p in range(k.partitions) for t in (s.CHECK_OBJECTS, s.CHECK_TRANSACTIONS)],
        "Storage.ReplicaKeys": [s.ReplicaKeysRequest(partition=p, table=t, max_tid=tid)
                                for p in range(k.partitions) for t in (s.REPLICA_OBJECTS, s.REPLICA_TRANSACTIONS)],
        "Storage.ReplicaRecords": [s.ReplicaRecordsRequest(partition=u64(t) % k.partitions, keys=[t],
                                                           table=s.REPLICA_TRANSACTIONS, bytes_max=1 << 20)
                                   for t in k.data_tids],
        "Storage.Lock": s.LockRequest(ttid=finish_ttid, tid=p64(u64(tid) + 1)),
        "Storage.Unlock": s.UnlockRequest(ttids=[finish_ttid]),
        "Storage.Truncate": s.StorageTruncateRequest(tid=k.data_tids[0], until_tid=tid, check_only=True),
    }.items()}
