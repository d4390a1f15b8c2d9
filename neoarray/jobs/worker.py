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
import sys
import traceback

from .executors import close_worker_dbs, process_piece
from .pipes import ProtocolError, recv, send
from .spec import JobError


def _error(exc: BaseException):
    """``("error", exc, traceback)``, with a stand-in when ``exc`` does not pickle."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.dumps(exc)
    except Exception:  # noqa: BLE001 - any exception a user's function raised
        exc = JobError(f"{type(exc).__name__}: {exc}")
    return ("error", exc, text)


def serve(requests, answers) -> None:
    """Answer pieces from ``requests`` on ``answers`` until ``requests`` ends."""
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
