"""Calls whose records carry data (Load, LoadMany, Store, Vote, blob chunks), over either transport.

The caller always deals in a message without record data plus one data segment per
record (``objects`` of a Store or Vote request; the reply of a Load, each ``loads`` of a
LoadMany reply): the framed data plane carries the segments as raw bytes, never through
protobuf; over gRPC (a node without a data plane) they are put into, and taken out of,
the messages' ``data`` fields here.  Failures are domain exceptions (``wire.call``'s).
"""
from __future__ import annotations

import grpc

from .. import wire
from ..proto import storage_pb2 as spb


def _records(message) -> list:
    if isinstance(message, (spb.StoreRequest, spb.VoteRequest)):
        return list(message.objects)
    if isinstance(message, spb.LoadManyReply):
        return list(message.loads)
    if isinstance(message, (spb.LoadReply, spb.StoreBlobChunkRequest, spb.LoadBlobChunkReply)):
        return [message]
    return []


def _fill(request, segments) -> None:
    for record, data in zip(_records(request), segments):
        record.data = bytes(data)


def _take(reply) -> list:
    out = []
    for record in _records(reply):
        out.append(record.data)
        record.data = b""
    return out


class _Started:
    def __init__(self, future=None, error: Exception | None = None, framed: bool = True):
        self.future, self.error, self.framed = future, error, framed


def start(method, request, segments=(), timeout_s: float | None = None) -> _Started:
    """Send ``request`` (its records' data in ``segments``); ``finish`` reads the reply."""
    framed = hasattr(method, "with_segments")
    try:
        if framed:
            return _Started(method.future(request, timeout_s, None, segments))
        if segments:
            _fill(request, segments)
        return _Started(method.future(request, timeout=timeout_s), framed=False)
    except grpc.RpcError as err:
        return _Started(error=err)


def finish(started: _Started, what: str = ""):
    """``(reply, segments)`` of a started call; a domain exception when it failed."""
    try:
        if started.error is not None:
            raise started.error
        if started.framed:
            return started.future.result_with_segments()
        reply = started.future.result()
        return reply, _take(reply)
    except grpc.RpcError as err:
        raise wire.to_exception(err, what) from None


def call(method, request, segments=(), timeout_s: float | None = None, what: str = ""):
    """``(reply, segments)``: ``start`` and ``finish`` at once."""
    if hasattr(method, "with_segments"):
        try:
            return method.with_segments(request, segments, timeout_s)
        except grpc.RpcError as err:
            raise wire.to_exception(err, what) from None
    return finish(start(method, request, segments, timeout_s), what)
