"""Chunk records stored without pickling their payload: staged, then spliced at ``store``.

ZODB's ``ObjectWriter`` pickles a state into a reused ``BytesIO``: a chunk's payload
(megabytes) is copied into that buffer, then copied again when the next object's pickle
unshares the buffer that ``getvalue`` handed out, both into fresh memory (0.33 GB/s for
8 MiB states on the machine this was measured on, against > 20 GB/s for the pickler
alone).  Here a chunk's state, when ZODB serialises it for a store into a neoarray
storage inside a commit (``neoarray.array.chunks.Chunk.__getstate__`` checks that),
is a small placeholder ``bytes``: the payload is staged in this thread's slot,
and ``store`` (called by the same ZODB loop right after) replaces the placeholder by
the payload.  The record is then three parts, sent back to back as one segment
(``neoarray.transport.frames.Parts``): the class pickle and the bytes opcode's header,
the payload buffer itself, the memo opcode and STOP.  Its bytes are exactly those of
the classic pickle (protocol 3: ``BINBYTES`` with a 4-byte length, then the same memo
index, as the placeholder was memoised at the same place), so nothing on a node or a
reader can tell the two apart.

What stays classic: savepoints (ZODB's ``TmpStore``), copies and pickles made outside a
commit, payloads a client keeps for conflict resolution (``resolvable_bytes_max`` or
less: only larger ones are staged, whose conflicts ZODB cannot resolve anyway) or that
ZODB would warn about (``large_record_size``).

A slot holds one payload per thread (ZODB serialises and stores one object at a time);
it is emptied by the store it was made for, by the next staging, or at the end of the
transaction.  Its placeholder names a random token, so a placeholder never matches any
other slot; ``store`` refuses a placeholder it cannot splice (``StorageError``) rather
than store it.
"""
from __future__ import annotations

import itertools
import os
import struct
import threading

from ZODB import POSException

from ..transport.frames import Parts

STAGE_BYTES_MIN = 64 << 10               # smaller payloads pickle fast enough
_BINBYTES_LENGTH_MAX = (1 << 32) - 1     # protocol 3 has no BINBYTES8
_PREFIX = b"\x00neoarray-staged-chunk:" + os.urandom(8).hex().encode() + b":"
_TOKEN = struct.Struct("<Q")
_MEMO_OPCODES = {b"q"[0]: 2, b"r"[0]: 5}     # BINPUT, LONG_BINPUT: opcode and argument
_STOP = b"."
_PLACEHOLDER_RECORD_BYTES_MAX = 4096    # a class pickle and a placeholder state


class _Staged:
    __slots__ = ("oid", "payload", "placeholder")

    def __init__(self, oid: bytes, payload, placeholder: bytes):
        self.oid, self.payload, self.placeholder = oid, payload, placeholder


class ChunkStaging:
    """The staged payloads of one storage, a slot per thread (see the module docstring)."""

    def __init__(self, resolvable_bytes_max: int):
        self.resolvable_bytes_max = resolvable_bytes_max
        self._local = threading.local()
        self._tokens = itertools.count(1)
        self.spliced_records = 0                # records stored from staged payloads

    def stage(self, oid: bytes, payload, large_record_bytes: int) -> bytes | None:
        """The placeholder state of the chunk ``oid`` whose state is ``payload`` (a
        bytes-like, C-contiguous), or None when it goes the classic way."""
        self._local.staged = None
        nbytes = memoryview(payload).nbytes
        if not (max(STAGE_BYTES_MIN, self.resolvable_bytes_max + 1) <= nbytes
                and nbytes + 4096 < min(large_record_bytes, _BINBYTES_LENGTH_MAX)):
            return None
        placeholder = _PREFIX + _TOKEN.pack(next(self._tokens))
        self._local.staged = _Staged(oid, payload, placeholder)
        return placeholder

    def take(self, oid: bytes, data) -> Parts | None:
        """The whole record for ``data`` as parts when it holds this thread's
        placeholder for ``oid``; None for any other record (stored as it is)."""
        staged = getattr(self._local, "staged", None)
        if staged is None:
            if _is_placeholder_record(data):
                self._refuse(oid, "its payload was not staged in this thread")
            return None
        self._local.staged = None
        opcode = b"C" + bytes([len(staged.placeholder)]) + staged.placeholder   # SHORT_BINBYTES
        at = data.rfind(opcode) if isinstance(data, bytes) else -1
        if at < 0:
            if _is_placeholder_record(data):
                self._refuse(oid, "it names another staged payload")
            return None
        if staged.oid != oid:
            self._refuse(oid, f"it was staged for oid 0x{staged.oid.hex()}")
        tail = data[at + len(opcode):]
        if not (tail == _STOP or (tail[:1] and _MEMO_OPCODES.get(tail[0]) == len(tail) - 1 and tail[-1:] == _STOP)):
            self._refuse(oid, "the placeholder is not the last opcode of its state")
        head = data[:at] + b"B" + struct.pack("<I", memoryview(staged.payload).nbytes)
        self.spliced_records += 1
        return Parts((head, staged.payload, tail))

    def clear(self) -> None:
        """Empty this thread's slot (its transaction ended)."""
        self._local.staged = None

    @staticmethod
    def _refuse(oid: bytes, why: str):
        raise POSException.StorageError(f"record of oid 0x{oid.hex()} holds a staged chunk placeholder but "
                                        f"{why}: it was not stored (the chunk must be stored by the commit "
                                        f"that serialised it)")



def _is_placeholder_record(data) -> bool:
    """Whether ``data`` holds a placeholder (records holding one are small)."""
    return isinstance(data, bytes) and len(data) <= _PLACEHOLDER_RECORD_BYTES_MAX and _PREFIX in data
