"""``neoctl set replication-rate``: the catch-up copy rate of storage nodes, at runtime.

An object of ``Master`` (``master/node.py``: ``master.rates``), given the master's
state database, its lock and the storage nodes it knows.  Rates are persisted in the master's state
(``replication_rates``: {node id: bytes per second}, ``replication_rate_default``) and
sent in every heartbeat reply, so a node applies a change within one heartbeat, a
restarted node gets it again, and a node that joins later gets the default.  A node
for which no rate was ever set keeps its own ``--replication-bytes-per-s``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from neoarray.errors import RequestRefused

log = logging.getLogger("neoarray.master")

REPLICATION_RATE_MAX = 1 << 50        # bytes per second; more is a typo, not a rate


class ReplicationRates:
    """``state_db``: the master's ``MasterState``; ``lock``: the master's lock (held for
    a change); ``storages()``: the ids of the storage nodes the master knows."""

    def __init__(self, state_db, lock, storages: Callable[[], Iterable[int]]):
        self.state_db = state_db
        self.lock = lock
        self.storages = storages
        self.replication_rates = {int(k): v for k, v in state_db.get("replication_rates", {}).items()}
        self.replication_rate_default = state_db.get("replication_rate_default")

    def set_replication_rate(self, bytes_per_s: int, node_ids: list[int]) -> dict:
        """Set the rate of ``node_ids`` (none: every storage node, now and later);
        returns ``{"rates": {node: rate}, "default": rate or None}``."""
        if not 0 <= bytes_per_s <= REPLICATION_RATE_MAX:
            raise RequestRefused(f"replication rate {bytes_per_s} out of range 0..{REPLICATION_RATE_MAX} "
                                 f"bytes per second (0: unlimited)")
        with self.lock:
            storages = list(self.storages())
            known = set(storages)
            unknown = [n for n in node_ids if n not in known]
            if unknown:
                raise RequestRefused(f"set replication-rate: {', '.join(f'S{n}' for n in unknown)} "
                                     f"is not a storage node of this cluster")
            if node_ids:
                self.replication_rates.update(dict.fromkeys(node_ids, bytes_per_s))
            else:
                self.replication_rates.clear()
                self.replication_rate_default = bytes_per_s
            self.state_db.put(replication_rates={str(k): v for k, v in self.replication_rates.items()},
                              replication_rate_default=self.replication_rate_default)
            log.info("replication rate of %s set to %d bytes/s",
                     ", ".join(f"S{n}" for n in node_ids) or "every storage node", bytes_per_s)
            return {"rates": {n: r for n in storages if (r := self.replication_rate(n)) is not None},
                    "default": self.replication_rate_default}

    def replication_rate(self, nid: int) -> int | None:
        """The rate the operator set for ``nid`` (None: its own setting)."""
        return self.replication_rates.get(nid, self.replication_rate_default)
