"""The shell of ``neoarray import``: copy a source's transactions into a cluster with
``restore`` / ``restoreBlob`` (``IStorageRestoreable``: tids, metadata, undo
back-pointers and blobs kept), verify each one, report progress, resume, follow.

One transaction at a time: its records stream from the source iterator into the
client's store batches (``store_batch_bytes_max``; a restore keeps no record data for
conflict resolution) and each blob goes chunk by chunk from a link to the source's
file, so memory holds a batch and a few chunks whatever the transaction's size.
A stop (SIGINT, SIGTERM) is taken between transactions; ``kill -9`` loses at most the
transaction in progress, which is not committed (or committed whole: the next run
verifies the target's last transaction against the source before it goes on).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

import xxhash

from ..client.blobs import private_copy
from ..errors import ClusterUnavailable, NeoError, RequestRefused
from ..ids import Z64
from . import source as src
from .core import (
    RecordDigest,
    Totals,
    TransactionDigest,
    VerificationFailed,
    differences,
    lag_s,
    start_after,
    tid_text,
)

BEGIN_WAIT_S = 60.0          # a restarted import waits this long for the killed one's session to end
BEGIN_RETRY_S = 0.5


def checksum(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data)


class Importer:
    """Copies ``source`` into ``target`` (a ``NeoStorage``); ``stop`` (an Event) is
    checked between transactions; ``out``: where lines go (None: nothing)."""

    def __init__(self, source, target, stop: threading.Event | None = None, out=sys.stderr,
                 progress: bool = True, poll_s: float = 1.0):
        self.source, self.target = source, target
        self.stop = stop or threading.Event()
        self.out = out
        self.progress = progress and out is not None
        self.poll_s = poll_s
        self.totals = Totals()
        self.last_tid: bytes | None = None      # the last transaction on the target, verified
        self.lag_s = 0.0                        # how long before its import the last one was committed

    def say(self, line: str) -> None:
        if self.out is not None:
            print(line, file=self.out, flush=True)

    # -- where to start ---------------------------------------------------------------
    def resume_point(self) -> bytes | None:
        """The tid after which to copy (None: from the start); refuses a target that
        is not empty and not an earlier import of this source (``ImportRefused``), and
        verifies the target's last transaction against the source."""
        self.target.sync()
        last = self.target.lastTransaction()
        if last == Z64:
            return None
        first = self._target_first()
        after = start_after(last, first, src.has_transaction(self.source, last),
                            first is not None and src.has_transaction(self.source, first))
        self.verify(src.digest_of_tid(self.source, last, checksum), resumed=True)
        self.say(f"neoarray import: the target holds this source up to {tid_text(after)}: continuing after it")
        return after

    def _target_first(self) -> bytes | None:
        it = self.target.iterator()
        try:
            return next(iter(it)).tid
        except StopIteration:
            return None
        finally:
            it.close()

    # -- one transaction --------------------------------------------------------------
    def copy(self, txn) -> tuple[TransactionDigest, int]:
        """Restore ``txn`` on the target: its digest and the bytes it moved (data and
        blobs); returns once committed (or raises, nothing committed)."""
        target = self.target
        if not self._begin(txn):
            return src.digest_of(self.source, txn, checksum), 0     # a killed run committed it
        records, nbytes = [], 0
        try:
            for r in txn:
                blob_bytes = None
                if src.is_blob_record(r.data):
                    path = src.blob_path(self.source, r.oid, r.tid)
                    if path is None:
                        self.totals.blobs_missing += 1
                    else:
                        blob_bytes = os.path.getsize(path)
                        target.restoreBlob(r.oid, r.tid, r.data, private_copy(path, target.temporaryDirectory()),
                                           r.data_txn, txn)
                if blob_bytes is None:
                    target.restore(r.oid, r.tid, r.data, r.version, r.data_txn, txn)
                records.append(RecordDigest(r.oid, r.data is None, 0 if r.data is None else checksum(r.data),
                                            r.data_txn, blob_bytes))
                nbytes += len(r.data or b"") + (blob_bytes or 0)
            target.tpc_vote(txn)
            target.tpc_finish(txn)
        except BaseException:
            target.tpc_abort(txn)
            raise
        return TransactionDigest(txn.tid, *src.metadata(txn), tuple(records)), nbytes

    def _begin(self, txn) -> bool:
        """``tpc_begin`` with the source's tid and status; False when the target holds
        that transaction already (a killed run's commit that ended after this run
        looked).  A tid that the killed run began is refused while its session lives
        on (master/commit.py): retried for ``BEGIN_WAIT_S``."""
        deadline = time.monotonic() + BEGIN_WAIT_S
        while True:
            try:
                self.target.tpc_begin(txn, txn.tid, txn.status)
                return True
            except ClusterUnavailable:
                if time.monotonic() > deadline:
                    raise
            except RequestRefused:
                self.target.sync()
                if self.target.lastTransaction() >= txn.tid:
                    return False
                raise
            time.sleep(BEGIN_RETRY_S)

    def verify(self, digest: TransactionDigest, resumed: bool = False) -> None:
        """Compare the target's copy of ``digest``'s transaction with it (see
        ``core``); ``VerificationFailed`` naming what differs and what to do."""
        found = differences(digest, self.target.transaction_info(digest.tid),
                            self.target.revisions(digest.tid, digest.oids))
        if found:
            raise VerificationFailed(
                f"transaction {tid_text(digest.tid)} on the target differs from the source"
                f"{' (found when resuming)' if resumed else ''}: {'; '.join(found)}. Nothing after it was "
                f"imported; remove it with `neoctl truncate TID` (TID: the transaction before it) and run "
                f"the import again, or import into an empty cluster")
        self.last_tid = digest.tid

    # -- the run ----------------------------------------------------------------------
    def run(self, follow: bool = False) -> Totals:
        """Import until the source's end (``follow``: until ``stop`` is set)."""
        after = self.resume_point()
        self.last_tid = after
        started = time.monotonic()
        with self._bar() as bar:
            while not self.stop.is_set():
                copied = self._pass(after, bar, started, follow)
                after = self.last_tid
                if not follow:
                    break
                if copied:
                    self._note(bar, f"caught up at {tid_text(after)}, lag {self.lag_s:.1f} s; following the "
                                    f"source (every {self.poll_s:g} s; Ctrl-C stops)")
                self.stop.wait(self.poll_s)
        self.totals.elapsed_s = time.monotonic() - started
        return self.totals

    def _pass(self, after, bar, started: float, follow: bool) -> int:
        """Copy what the source has after ``after``; the number copied."""
        copied = 0
        for txn in src.transactions(self.source, after):
            if self.stop.is_set():
                break
            digest, nbytes = self.copy(txn)
            self.verify(digest)
            self.lag_s = lag_s(txn.tid)
            self.totals.add(digest, nbytes)
            self.totals.elapsed_s = time.monotonic() - started
            copied += 1
            if bar is not None:
                _, mbps = self.totals.rates()
                postfix = {"MB/s": f"{mbps:.2f}", "MB": f"{self.totals.data_bytes / 1e6:.1f}"}
                if follow:
                    postfix["lag_s"] = f"{self.lag_s:.1f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
        return copied

    def _note(self, bar, line: str) -> None:
        if bar is not None:
            bar.write(line, file=self.out)
        else:
            self.say(line)

    @contextmanager
    def _bar(self):
        if not self.progress:
            yield None
            return
        from tqdm import tqdm
        bar = tqdm(unit="txn", desc="import", file=self.out, dynamic_ncols=True, mininterval=0.5)
        try:
            yield bar
        finally:
            bar.close()


@contextmanager
def stop_on_signals(stop: threading.Event, say):
    """SIGINT and SIGTERM set ``stop`` (the import ends after the transaction in
    progress); a second one stops at once (the transaction in progress is aborted)."""
    def handler(signum, frame):
        if stop.is_set():
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        stop.set()
        say(f"neoarray import: {signal.Signals(signum).name}: stopping after the transaction in progress "
            f"(again to stop at once)")
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def import_storage(source, target, follow: bool = False, quiet: bool = False, poll_s: float = 1.0,
                   out=sys.stderr) -> Totals:
    """Import ``source`` into ``target`` with progress on ``out`` and stops on
    signals (the command's body); returns the totals."""
    stop = threading.Event()
    importer = Importer(source, target, stop, out=None if quiet else out, progress=not quiet, poll_s=poll_s)
    with stop_on_signals(stop, lambda line: print(line, file=out, flush=True)):
        try:
            totals = importer.run(follow)
        except KeyboardInterrupt:
            raise NeoError(f"stopped at once; the target holds the source up to {tid_text(importer.last_tid)}: "
                           f"run the same command again to continue") from None
    if not quiet:
        state = "stopped" if stop.is_set() else "done"
        print(f"neoarray import: {state}: {totals.summary()}; the target holds the source up to "
              f"{tid_text(importer.last_tid)}" + ("; run the same command again to continue"
                                                  if stop.is_set() else ""), file=out, flush=True)
    return totals
