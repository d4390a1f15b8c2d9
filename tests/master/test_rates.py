"""``ReplicationRates``: an object given the master's state, lock and storage ids."""
import threading

import pytest

from master.rates import REPLICATION_RATE_MAX, ReplicationRates
from master.state import MasterState
from neoarray.errors import RequestRefused


def test_rates_persist_and_a_default_covers_later_nodes(tmp_path):
    storages = [1, 2]
    db = MasterState(str(tmp_path / "m"))
    rates = ReplicationRates(db, threading.RLock(), lambda: storages)
    assert rates.replication_rate(1) is None                     # the node's own setting
    assert rates.set_replication_rate(1000, [2]) == {"rates": {2: 1000}, "default": None}
    assert rates.set_replication_rate(500, []) == {"rates": {1: 500, 2: 500}, "default": 500}
    storages.append(3)
    again = ReplicationRates(db, threading.RLock(), lambda: storages)   # a restarted master
    assert [again.replication_rate(n) for n in (1, 2, 3)] == [500, 500, 500]
    with pytest.raises(RequestRefused, match="S7 is not a storage node"):
        again.set_replication_rate(10, [7])
    with pytest.raises(RequestRefused, match="out of range"):
        again.set_replication_rate(REPLICATION_RATE_MAX + 1, [1])
    db.close()
