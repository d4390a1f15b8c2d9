"""The pipes between the ``processes`` executor and its workers
(:mod:`neoarray.jobs.worker`): each message is an 8-byte big-endian length and a
pickle, at most ``MESSAGE_BYTES_MAX`` bytes."""
from __future__ import annotations

import pickle
import struct

MESSAGE_BYTES_MAX = 1 << 34          # 16 GiB: a larger message is a corrupt stream
_LENGTH = struct.Struct(">Q")


class ProtocolError(EOFError):
    """The other end of a worker pipe closed, or sent something that is not a message."""


def send(f, obj) -> None:
    """Write one message (``obj`` pickled) to the binary file ``f``."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_LENGTH.pack(len(data)))
    f.write(data)
    f.flush()


def _read_exactly(f, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = f.read(left)
        if not chunk:
            raise ProtocolError(f"end of stream with {left} of {size} bytes missing")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv(f):
    """Read one message from the binary file ``f``; :class:`ProtocolError` at its end."""
    header = f.read(_LENGTH.size)
    if not header:
        raise ProtocolError("end of stream")
    if len(header) < _LENGTH.size:
        header += _read_exactly(f, _LENGTH.size - len(header))
    (size,) = _LENGTH.unpack(header)
    if size > MESSAGE_BYTES_MAX:
        raise ProtocolError(f"a message of {size} bytes (at most {MESSAGE_BYTES_MAX}): "
                            f"not a worker stream")
    return pickle.loads(_read_exactly(f, size))
