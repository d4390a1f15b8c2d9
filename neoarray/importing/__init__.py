"""Moving in: ``neoarray import`` copies a FileStorage, or any ZODB storage a ZConfig
file opens, into a running cluster with its whole history (tids, user, description,
extension, undo records, blobs), verifying every transaction on the target; it
resumes after an interruption and, with ``--follow``, keeps up with a source still
in use until it is stopped.

``core``: the decisions, without I/O (where to start, what to compare); ``source``:
opening and reading the source; ``run``: the copy, its progress and its stops;
``cli``: the command line.
"""
from .core import ImportRefused, VerificationFailed

__all__ = ["ImportRefused", "VerificationFailed"]
