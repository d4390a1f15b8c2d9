"""Fuzz the framed data plane of a real cluster; nothing may crash or change data.

The same cluster, data set and hostile requests as ``test_fuzz_rpcs.py`` (every method
of every service, read from the descriptors), sent over the framed ports of the master
and the storage nodes (``neoarray/transport``): each call on a new connection, its
HELLO naming the cluster (or, one time in twenty, another name or none: refused at the
door).  Then frames no client of this protocol sends: random bytes, a valid request cut
short, headers announcing too much, lengths that do not add up, unknown kinds and
methods, frames out of protocol order (a reply, a push, a second HELLO from the
client), a sender that stalls mid-frame, one that drops the connection mid-frame.

Afterwards, as for gRPC: every node process is alive, every answer was an allowed
status (a method not served on a framed port answers UNIMPLEMENTED), no node logged a
traceback, the partition table, the data set and the replicas are unchanged, and a new
commit works.  ``NEOARRAY_FUZZ_ITERATIONS`` sets the number of calls, ``NEOARRAY_SEED``
replays a run.
"""
from __future__ import annotations

import os
import random
import socket
import struct
import time

import grpc

from neoarray import wire
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import master_pb2 as mpb
from neoarray.proto import master_pb2_grpc as mrpc
from neoarray.proto import storage_pb2_grpc as srpc
from neoarray.states import NodeType
from neoarray.transport import conn, frames
from tests.cluster_helpers import letters

from .rpc_fuzz import parse
from .test_fuzz_rpcs import (
    DEFAULT_ITERATIONS,
    abort_stores,
    assert_unharmed,
    dead_processes,
    fuzz,
    fuzz_cluster,  # noqa: F401 - the fixture
    known_of,
    write_data_set,
)

CALL_TIMEOUT_S = 10.0
FRAME_ATTACKS = 200


def _connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=CALL_TIMEOUT_S)
    conn.tune(sock)
    return sock


class FramedCaller:
    """Raw-bytes calls over the framed ports; ``.call`` as ``test_fuzz_rpcs.Caller``'s."""

    def __init__(self, cluster, master_data: str, storage_data: list[str], storage_grpc: list[str]):
        self.cluster = cluster.cluster
        self.master = master_data
        self.storages = storage_data
        self.grpc = dict(zip(storage_data, storage_grpc))
        self.typed: dict[str, grpc.Channel] = {}

    def stub(self, address: str) -> srpc.StorageStub:
        """gRPC, for the cleanup (not the fuzz)."""
        target = self.grpc[address]
        if target not in self.typed:
            self.typed[target] = wire.open_channel(target, self.cluster)
        return srpc.StorageStub(self.typed[target])

    def close(self) -> None:
        for channel in self.typed.values():
            channel.close()

    def call(self, method, address: str, raw: bytes, cluster_name: str | None):
        sock = _connect(address)
        try:
            conn.write_frame(sock, frames.Frame(frames.HELLO, 0, body=frames.hello_body(cluster_name or "")))
            hello = conn.read_frame(sock, 1 << 20, CALL_TIMEOUT_S, CALL_TIMEOUT_S)
            if hello.kind == frames.ERROR:
                return _status(hello)
            conn.write_frame(sock, frames.Frame(frames.REQUEST, 1, frames.METHOD_IDS[method.path], raw))
            reply = conn.read_frame(sock, wire.MESSAGE_BYTES_MAX + (2 << 20), CALL_TIMEOUT_S, CALL_TIMEOUT_S)
        except conn.PeerGone as exc:
            return grpc.StatusCode.DEADLINE_EXCEEDED if "time limit" in str(exc) else "CLOSED", str(exc)
        finally:
            sock.close()
        if reply.kind == frames.ERROR:
            return _status(reply)
        if reply.kind not in (frames.REPLY, frames.PUSH) or parse(method.reply, reply.body) is None:
            return "UNDECODABLE REPLY", reply.body[:64].hex()
        return grpc.StatusCode.OK, ""


def _status(frame):
    code, details = frames.parse_error(frame.body)
    return getattr(grpc.StatusCode, code, code), details


def _attack(rng: random.Random, address: str, cluster: str) -> str:
    """One connection sending something this protocol does not allow; what it was."""
    sock = _connect(address)
    try:
        hello = frames.encode(frames.Frame(frames.HELLO, 0, body=frames.hello_body(cluster)))[0]
        load = frames.METHOD_IDS["/neoarray.v1.Storage/Load"]
        request = b"".join(bytes(b) for b in frames.encode(frames.Frame(frames.REQUEST, 5, load, b"\n\x08" + b"\1" * 8)))
        kind = rng.choice(["random", "cut", "huge", "lengths", "kind", "method", "order", "hello2", "stall", "drop"])
        if kind == "random":
            sock.sendall(rng.randbytes(rng.randrange(1, 4096)))
        elif kind == "cut":
            sock.sendall(hello + request[:rng.randrange(1, len(request))])
        elif kind == "huge":
            sock.sendall(hello + frames.HEADER.pack(0xFFFFFFF0, 1, load, frames.REQUEST, 0, 0, 0xFFFFFF00))
        elif kind == "lengths":
            sock.sendall(hello + frames.HEADER.pack(100, 1, load, frames.REQUEST, 2, 0, 10) + struct.pack("!II", 50, 60))
        elif kind == "kind":
            sock.sendall(hello + frames.HEADER.pack(17, 1, load, rng.choice([0, 7, 255]), 0, 0, 0))
        elif kind == "method":
            sock.sendall(hello + frames.HEADER.pack(17, 1, rng.randrange(len(frames.METHODS), 0xFFFF), frames.REQUEST, 0, 0, 0))
        elif kind == "order":
            bad = rng.choice([frames.REPLY, frames.PUSH, frames.END, frames.ERROR])
            sock.sendall(hello + b"".join(bytes(b) for b in frames.encode(frames.Frame(bad, 3, load, b"x"))))
        elif kind == "hello2":
            sock.sendall(hello + hello)
        elif kind == "stall":
            sock.sendall(hello + request[:10])
            time.sleep(rng.uniform(0, 0.3))
            sock.sendall(request[10:])
        else:
            sock.sendall(hello + request[:rng.randrange(1, len(request))])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # reset
        return kind
    except OSError as exc:      # the server closed first: what it should do with these
        return f"closed ({exc.__class__.__name__})"
    finally:
        sock.close()


def _data_addresses(cluster) -> tuple[str, list[str], list[str]]:
    admin = cluster.admin()
    try:
        storages = [n for n in admin.nodes() if n.type is NodeType.STORAGE]
    finally:
        admin.close()
    with wire.open_channel(cluster.address, cluster.cluster) as channel:
        reply = wire.call(mrpc.MasterStub(channel).Identify, mpb.IdentifyRequest(type=cpb.ADMIN), CALL_TIMEOUT_S)
    return reply.data_address, [n.data_address for n in storages], [n.address for n in storages]


def test_every_framed_call_survives_hostile_frames(fuzz_cluster):  # noqa: F811 - the fixture
    cluster = fuzz_cluster
    seed = int(os.environ.get("NEOARRAY_SEED", random.randrange(2**32)))
    iterations = int(os.environ.get("NEOARRAY_FUZZ_ITERATIONS", DEFAULT_ITERATIONS))
    print(f"framed fuzz seed: NEOARRAY_SEED={seed} NEOARRAY_FUZZ_ITERATIONS={iterations}")
    expected = write_data_set(cluster)
    cells = letters(cluster)
    known = known_of(cluster, expected)
    master_data, storage_data, storage_grpc = _data_addresses(cluster)
    caller = FramedCaller(cluster, master_data, storage_data, storage_grpc)
    try:
        _, bad = fuzz(caller, known, seed, iterations,
                           also_allowed={grpc.StatusCode.UNIMPLEMENTED})
        rng = random.Random(seed)
        attacks = [_attack(rng, rng.choice([master_data, *storage_data]), cluster.cluster)
                   for _ in range(FRAME_ATTACKS)]
        print(f"{iterations} framed requests and {len(attacks)} hostile connections")
        assert not dead_processes(cluster), f"seed {seed}"
        assert not bad, f"seed {seed}: {len(bad)} answers outside the allowed statuses:\n" + "\n".join(bad[:30])
        abort_stores(caller, known)
    finally:
        caller.close()
    time.sleep(1.0)                 # the stalled connections end (frame_s) before the checks
    assert_unharmed(cluster, cells, expected, seed)
