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


# -- time limits of a FrameReader: deadlines that the watchdog enforces -------------------

@pytest.fixture
def watched():
    """A reader on one end of a socket pair, and the other end, which closes after
    30 s whatever happens: a reader the watchdog failed to cut then ends with "closed
    by the peer", not "time limit", and the test fails instead of hanging."""
    a, b = _pair()
    guard = threading.Timer(30.0, a.close)
    guard.start()
    reader = conn.FrameReader(b)
    yield a, reader
    guard.cancel()
    reader.close()
    a.close()
    b.close()


def test_a_frame_that_does_not_come_in_time_is_cut_by_the_watchdog(watched):
    _, reader = watched
    with pytest.raises(conn.PeerGone, match="time limit passed while reading"):
        reader.read(LIMIT, 0.2, 5.0)
    assert reader.expired


def test_a_frame_that_stops_midway_is_cut_by_the_watchdog(watched):
    peer, reader = watched
    peer.sendall(_header(frames.HEADER_BYTES - 4 + 100, body=100) + b"x" * 10)
    with pytest.raises(conn.PeerGone, match="time limit passed while reading"):
        reader.read(LIMIT, None, 0.2)       # no limit on the wait, 0.2 s for the rest


def test_a_write_the_peer_does_not_read_is_cut_by_the_watchdog(watched):
    _, reader = watched
    frame = frames.Frame(frames.REPLY, 1, 0, b"", [bytes(32 << 20)])     # far more than the socket buffers
    with pytest.raises(conn.PeerGone, match="time limit passed while writing"):
        reader.write(frame, 0.2)


def test_no_limit_runs_between_frames():
    """The limits of a read end with it: a frame that comes long after the frame
    limit of the one before, with no idle limit, is read whole."""
    a, b = _pair()
    reader = conn.FrameReader(b)
    first = frames.Frame(frames.REQUEST, 1, 0, b"one")
    later = frames.Frame(frames.REQUEST, 2, 0, b"two", [b"x" * 100])
    try:
        conn.write_frame(a, first)
        assert reader.read(LIMIT, 0.2, 0.2).body == b"one"
        assert reader.deadline is None
        sender = threading.Timer(0.6, conn.write_frame, args=(a, later))     # 3 frame limits later
        sender.start()
        frame = reader.read(LIMIT, None, 0.2)
        sender.join()
        assert (frame.rid, frame.body, [bytes(s) for s in frame.segments]) == (2, b"two", [b"x" * 100])
        assert not reader.expired
    finally:
        reader.close()
        a.close()
        b.close()


def test_a_forked_child_has_a_watchdog_of_its_own(watched):
    """A child forked while the parent's watchdog runs (its lock possibly held) gets
    a fresh one: a frame that does not come in time is cut there too."""
    import os
    pid = os.fork()
    if pid == 0:                                # the child: exit status 0 when cut in time
        code = 1
        try:
            c, d = _pair()
            threading.Timer(20, c.close).start()
            try:
                conn.FrameReader(d).read(LIMIT, 0.2, 5.0)
            except conn.PeerGone as exc:
                code = 0 if "time limit" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
