"""A worker process of the ``processes`` executor: ``python -m neoarray.jobs.worker IN OUT``.

Why not ``multiprocessing``: its ``spawn`` and ``forkserver`` start methods run the
parent's main script again in every worker (as ``__mp_main__``), so a user's script
without ``if __name__ == "__main__":`` re-created its arrays, printed everything twice
and started jobs of its own in each worker.  A worker started as this module imports
nothing of the parent's ``__main__``: only ``neoarray`` and the modules a job names
(``"module:function"``), found on the parent's ``sys.path`` (its ``PYTHONPATH``).

Protocol, over two pipes whose file descriptors are the arguments IN and OUT (standard
output and error stay the user's): each message is an 8-byte big-endian length and a
pickle.  The parent sends one ``(source, spec_json, piece_json)`` per piece; the worker
answers each with ``("ok", PieceResult)`` or ``("error", exception, traceback_text)``.
End of input (the parent closed the pipe or died) ends the worker.
"""
from __future__ import annotations

import os
import pickle
import struct
import sys
import traceback

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


def _error(exc: BaseException):
    """``("error", exc, traceback)``, with a stand-in when ``exc`` does not pickle."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.dumps(exc)
    except Exception:  # noqa: BLE001 - any exception a user's function raised
        from .core import JobError
        exc = JobError(f"{type(exc).__name__}: {exc}")
    return ("error", exc, text)


def serve(requests, answers) -> None:
    """Answer pieces from ``requests`` on ``answers`` until ``requests`` ends."""
    from .executors import close_worker_dbs, process_piece
    try:
        while True:
            try:
                source, spec, piece = recv(requests)
            except ProtocolError:
                return
            try:
                answer = ("ok", process_piece(source, spec, piece))
            except Exception as exc:  # noqa: BLE001 - sent to the parent: it retries or fails
                answer = _error(exc)
            send(answers, answer)
    finally:
        close_worker_dbs()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m neoarray.jobs.worker IN_FD OUT_FD (started by the "
              "processes executor, not by hand)", file=sys.stderr)
        return 2
    try:
        with os.fdopen(int(argv[0]), "rb") as requests, \
                os.fdopen(int(argv[1]), "wb") as answers:
            serve(requests, answers)
    except (KeyboardInterrupt, BrokenPipeError):
        return 1                      # the parent was interrupted or is gone
    return 0


if __name__ == "__main__":
    from neoarray.jobs.worker import main as worker_main  # one copy of this module
    sys.exit(worker_main())
