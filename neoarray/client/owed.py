"""Aborts the client owes the master: a ``tpc_abort`` whose Abort did not reach it.

A vote holds its objects' locks on the storage nodes until the master orders them
to lock or abort it.  The master keeps the vote of a live session, since its client
may still finish it, and aborts it by itself only when that session ends (rule 2 of
``master/commit.py``) or after ``pending_timeout_s`` (rule 4; 300 s by default).  So
an Abort lost on its way while the session lives (no answer within
``rpc_timeout_s``: a connection cut or a master too slow, while the event stream
stays) would leave every later commit on those objects busy for minutes.  The
simulation found it (``python scripts/simulate.py --seed 401504 --stores-in-vote``).

``OwedAborts`` keeps such an Abort and sends it again from a thread of its own,
waiting ``RETRY_S_MIN`` first and twice as long after each failure, up to
``RETRY_S_MAX``, until the master answers it (done, or refused: a transaction being
finished is not aborted, and the refusal says so), until the session that voted it
ends (the master then aborts it itself), or until the storage closes.  Sending an
Abort twice is harmless: the master records the transaction dead and orders its
abort again.  At most ``OWED_MAX`` are kept; beyond, the oldest is left to the
master's ``pending_timeout_s`` (logged).
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from ..errors import ClusterUnavailable

log = logging.getLogger("neoarray.client")

OWED_MAX = 1_000              # Aborts kept for sending again
RETRY_S_MIN = 0.2             # the first wait before sending one again
RETRY_S_MAX = 5.0             # the longest wait between two tries


class OwedAborts:
    """``send(session, ttid, nodes)`` is the Abort call (``calls.abort`` on the
    master in use); ``link`` tells the session (``node_id``), whether it is
    connected, and whether the storage closed (``closed``)."""

    def __init__(self, link, send):
        self.link = link
        self.send = send
        self._owed: OrderedDict[bytes, tuple[int, list[int]]] = OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._owed)

    def owe(self, session: int, ttid: bytes, nodes: list[int]) -> None:
        """The Abort of ``ttid`` (voted in ``session`` on ``nodes``) did not reach the
        master: send it again until it does."""
        with self._lock:
            self._owed[ttid] = (session, nodes)
            while len(self._owed) > OWED_MAX:
                old, _ = self._owed.popitem(last=False)
                log.warning("tpc_abort of 0x%s: more than %d aborts not carried out; this one is left to "
                            "the master's pending_timeout_s", old.hex(), OWED_MAX)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="neoarray-owed-aborts")
                self._thread.start()

    def _run(self) -> None:
        wait_s = RETRY_S_MIN
        while not self.link.closed.wait(wait_s):
            with self._lock:
                owed = list(self._owed.items())
            failed = False
            for ttid, (session, nodes) in owed:
                failed |= not self._try(ttid, session, nodes)
            with self._lock:
                if not self._owed:
                    self._thread = None
                    return
            wait_s = min(wait_s * 2, RETRY_S_MAX) if failed else RETRY_S_MIN
        with self._lock:
            self._thread = None

    def _try(self, ttid: bytes, session: int, nodes: list[int]) -> bool:
        """One try: False when the master could not be reached (owed still)."""
        if self.link.node_id != session:
            self._drop(ttid, "its session ended: the master aborts it")
            return True
        if not self.link.connected.is_set():
            return False
        try:
            self.send(session, ttid, nodes)
        except ClusterUnavailable as exc:
            log.debug("tpc_abort of 0x%s, sent again: %s", ttid.hex(), exc)
            return False
        except Exception as exc:  # noqa: BLE001 - refused: nothing more to do (the reason is logged)
            self._drop(ttid, f"refused: {exc}")
            return True
        self._drop(ttid, "carried out")
        return True

    def _drop(self, ttid: bytes, why: str) -> None:
        with self._lock:
            self._owed.pop(ttid, None)
        log.info("tpc_abort of 0x%s, owed to the master: %s", ttid.hex(), why)
