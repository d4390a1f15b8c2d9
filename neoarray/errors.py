"""The neoarray error tree.

ZODB's ``POSException`` classes are reused where ZODB semantics apply (conflicts,
missing objects, read-only storage); what is ours derives from ``NeoError``.  Every
class survives pickling (tests check it), so errors cross process boundaries intact.
"""
from ZODB import POSException


class NeoError(Exception):
    """Base of neoarray's own errors."""


class ClusterNameMismatch(NeoError):
    """A peer belongs to another cluster: the request was refused."""


class ClusterUnavailable(NeoError, POSException.StorageError):
    """The cluster cannot serve the request now (not RUNNING, no readable cell, no master)."""


class StaleCopy(ClusterUnavailable):
    """A master that took over from a copy of the primary's state found a storage node
    that recorded a newer state (``master/cluster.py``, rule B): it must not serve.
    ``stamp``: that newer state's ``(epoch, version)``."""

    def __init__(self, message: str = "", stamp=None):
        super().__init__(message)
        self.stamp = tuple(stamp) if stamp else None

    def __reduce__(self):
        return type(self), (str(self), self.stamp)


class Unwitnessed(ClusterUnavailable):
    """A primary master wrote a state that no running storage node recorded (rule A of
    ``master/cluster.py``: cut off from all of them): it does not act on it and steps
    down, so that a standby that takes over from an older copy contradicts nothing
    that was acted on."""


class StaleEpoch(ClusterUnavailable):
    """A storage node refused a master's order: it follows a newer master (a standby
    took over, ``master/standby.py``); the master that gets it steps down."""


class ChecksumError(NeoError, POSException.StorageError):
    """Data did not match its checksum: it was corrupted on the wire or on disk."""


class RequestRefused(NeoError, ValueError):
    """A request was malformed or exceeded a limit; the message names what was wrong."""


class LimitExceeded(RequestRefused):
    """A request exceeded a configured limit (gRPC RESOURCE_EXHAUSTED); the message
    names the limit and its value.  The node refused it whole and keeps running."""


class StorageFull(NeoError, POSException.StorageError):
    """A storage node's disk or map is full: the transaction was aborted."""


class DirectoryInUse(NeoError):
    """Another live process runs the local cluster of this directory; the message says
    which, where its master listens, and what to do."""


class AccessDenied(NeoError):
    """The peer's credential (certificate role or admin token) does not allow the call;
    the message names the method and the role it needs."""


class NotCommitted(NeoError, POSException.StorageError):
    """``tpc_finish`` failed and the transaction was not committed, and never will be
    (the master refused it, or decided it dead): retry it from the start."""


class OutcomeUnknown(NeoError, POSException.StorageError):
    """``tpc_finish`` ended without learning whether the transaction committed (the
    master was lost and had not decided yet).  The master decides it alone; a read of
    what it wrote tells.  See the README's "Durability" section."""


class CodecUnavailable(NeoError, ImportError):
    """An array's chunk codec needs a package this process lacks (numcodecs: ``pip
    install 'neoarray[codecs]'``); the message names it."""
