"""The frame codec of the data plane (neoarray/transport/frames.py and conn.py), over a
real socket pair: what is written is read back whole, and every frame this protocol
does not allow is refused with a reason before anything of it is used."""
import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neoarray.errors import LimitExceeded, RequestRefused
from neoarray.transport import conn, frames

LIMIT = 1 << 22


def _pair():
    a, b = socket.socketpair()
    return a, b


frames_st = st.builds(
    frames.Frame,
    kind=st.sampled_from(sorted(frames.KINDS)),
    rid=st.integers(0, 2**32 - 1),
    method=st.integers(0, len(frames.METHODS) - 1),
    body=st.binary(max_size=2000),
    segments=st.lists(st.one_of(st.binary(max_size=300), st.integers(conn.ALIGNED_BYTES_MIN, 3 * conn.ALIGNED_BYTES_MIN)
                                .map(lambda n: bytes(range(256)) * (n // 256))), max_size=6),
    meta=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3))


def _sent_and_read(frame):
    """``frame`` written on one end of a socket pair (by a thread: it may be larger than
    the socket buffers) and read on the other."""
    a, b = _pair()
    writer = threading.Thread(target=conn.write_frame, args=(a, frame))
    writer.start()
    try:
        return conn.read_frame(b, LIMIT, 5.0, 5.0)
    finally:
        writer.join(10)
        a.close()
        b.close()


@settings(max_examples=60, deadline=None)
@given(frames_st)
def test_a_frame_reads_back_whole(frame):
    got = _sent_and_read(frame)
    assert (got.kind, got.rid, got.method, got.body, got.meta) == (frame.kind, frame.rid, frame.method,
                                                                     frame.body, frame.meta)
    assert [bytes(s) for s in got.segments] == [bytes(s) for s in frame.segments]
    for s in got.segments:
        if len(s) >= conn.ALIGNED_BYTES_MIN:        # large segments land in aligned buffers
            import numpy as np
            assert np.frombuffer(s, dtype=np.uint8).ctypes.data % conn.ALIGN_BYTES == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=3 * conn.ALIGNED_BYTES_MIN), max_size=4), min_size=1, max_size=4))
def test_a_segment_given_as_parts_is_read_as_one_segment(records):
    """``Parts`` (a record spliced from a header, a payload buffer and a tail) travels as
    one segment holding its parts back to back, next to ordinary segments."""
    segments = [frames.Parts(parts) if i % 2 == 0 else b"".join(parts) for i, parts in enumerate(records)]
    frame = frames.Frame(frames.REQUEST, 7, 0, b"body", segments)
    got = _sent_and_read(frame)
    assert [bytes(s) for s in got.segments] == [b"".join(parts) for parts in records]
    assert bytes(frames.decode(b"".join(bytes(x) for x in frames.encode(frame)), LIMIT).segments[0]) == \
        b"".join(records[0])


def _header(frame_bytes, rid=1, method=0, kind=frames.REQUEST, segments=0, meta=0, body=0):
    return frames.HEADER.pack(frame_bytes, rid, method, kind, segments, meta, body)


@pytest.mark.parametrize("raw, error, words", [
    (_header(100, kind=9), RequestRefused, "unknown kind 9"),
    (_header(LIMIT + 1), LimitExceeded, "frame_bytes_max"),
    (_header(100, method=60000), RequestRefused, "names method 60000"),
    (_header(17, body=1000), RequestRefused, "cannot hold"),
    (_header(100, meta=frames.META_BYTES_MAX + 1), LimitExceeded, "metadata"),
])
def test_impossible_headers_are_refused(raw, error, words):
    a, b = _pair()
    try:
        a.sendall(raw + b"\0" * 64)
        with pytest.raises(error, match=words):
            conn.read_frame(b, LIMIT, 5.0, 5.0)
    finally:
        a.close()
        b.close()


def test_lengths_that_do_not_fill_the_frame_are_refused():
    a, b = _pair()
    try:
        rest = 4 + 10         # one segment length + 10 bytes of body, but the segment says 5
        a.sendall(_header(rest + frames.HEADER_BYTES - 4, segments=1, body=10) + struct.pack("!I", 5) + b"x" * 20)
        with pytest.raises(RequestRefused, match="do not add up"):
            conn.read_frame(b, LIMIT, 5.0, 5.0)
    finally:
        a.close()
        b.close()


def test_a_peer_stalling_mid_frame_is_cut_off():
    a, b = _pair()
    try:
        a.sendall(_header(frames.HEADER_BYTES - 4 + 100, body=100) + b"x" * 10)
        with pytest.raises(conn.PeerGone, match="time limit"):
            conn.read_frame(b, LIMIT, 5.0, 0.2)
    finally:
        a.close()
        b.close()


def test_a_peer_closing_mid_frame_is_gone():
    a, b = _pair()
    a.sendall(_header(frames.HEADER_BYTES - 4 + 100, body=100) + b"x" * 10)
    a.close()
    try:
        with pytest.raises(conn.PeerGone, match="closed"):
            conn.read_frame(b, LIMIT, 5.0, 5.0)
    finally:
        b.close()


def test_hello_of_another_version_or_method_table_is_refused():
    import msgpack
    good = frames.parse_hello(frames.hello_body("c", "t"))
    assert good["cluster"] == "c" and good["token"] == "t"
    with pytest.raises(RequestRefused, match="version"):
        frames.parse_hello(msgpack.packb({"v": 99, "cluster": "c", "token": "", "methods": frames.METHODS_HASH}))
    with pytest.raises(RequestRefused, match="method table"):
        frames.parse_hello(msgpack.packb({"v": 1, "cluster": "c", "token": "", "methods": "x"}))
    with pytest.raises(RequestRefused, match="undecodable"):
        frames.parse_hello(b"\xc1garbage")


@pytest.mark.skipif(conn.Block is None, reason="no native extension")
def test_a_client_reads_chunk_records_of_whole_pages_into_page_blocks():
    """The payload of a chunk record of whole pages lands on pages of its own (a mapped
    view moves them without copying); any other segment reads back as before."""
    import pickle

    import numpy as np

    from neoarray.array.chunks import Chunk
    from neoarray.payload import payload_view
    payload = np.arange(1 << 15, dtype=np.float64).tobytes()      # 256 KiB
    record = pickle.dumps(Chunk, 3) + pickle.dumps(payload, 3)
    assert payload_view(record) is not None
    odd = pickle.dumps(Chunk, 3) + pickle.dumps(payload + b"x", 3)    # not whole pages
    other = bytes(range(256)) * 512                                  # not a record
    frame = frames.Frame(frames.REPLY, 7, 0, b"body", [record, odd, other])
    a, b = _pair()
    writer = threading.Thread(target=conn.write_frame, args=(a, frame))
    writer.start()
    try:
        got = conn.FrameReader(b, page_blocks=True).read(LIMIT, 5.0, 5.0)
    finally:
        writer.join()
        a.close()
        b.close()
    assert [bytes(s) for s in got.segments] == [record, odd, other]
    block = got.segments[0].obj
    assert type(block) is conn.Block and block.address % conn.PAGE_BYTES == 0
    assert bytes(payload_view(got.segments[0])) == payload and block.payload_bytes == len(payload)
    assert all(type(getattr(s, "obj", None)) is not conn.Block for s in got.segments[1:])
