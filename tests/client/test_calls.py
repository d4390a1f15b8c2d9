"""The client's wire (``neoarray/client/calls.py``) hands plain values inward: the
link's cluster view and the answers of loads are ``neoarray.views``,
``neoarray.states`` and ``neoarray.client.values`` values, never messages."""

from ZODB.Connection import TransactionMetaData

from neoarray.client import calls
from neoarray.client.values import LoadAnswer, LoadStatus
from neoarray.ids import Z64, p64
from neoarray.states import CellState, ClusterState, NodeState, NodeType
from neoarray.views import ClusterView, NodeView


def _commit(storage, oid: bytes, data: bytes) -> bytes:
    meta = TransactionMetaData()
    storage.tpc_begin(meta)
    storage.store(oid, Z64, data, "", meta)
    storage.tpc_vote(meta)
    return storage.tpc_finish(meta)


def test_the_link_keeps_the_cluster_view_in_domain_values(storage):
    view = storage._link.info
    assert isinstance(view, ClusterView) and view.state is ClusterState.RUNNING
    storages = [n for n in view.nodes if n.type is NodeType.STORAGE]
    assert len(storages) == 2
    assert all(type(n) is NodeView and n.state is NodeState.RUNNING for n in storages)
    cells = [c for row in view.table.rows for c in row.cells]
    assert len(cells) == 2 * len(view.table.rows)      # replicas=1: two copies of each partition
    assert all(c.state is CellState.UP_TO_DATE for c in cells)
    assert storage._link.running == {n.node_id for n in storages}


def test_loads_answer_plain_values(storage):
    oid = storage.new_oid()
    tid = _commit(storage, oid, b"the record")
    nid = storage._link.readable(storage._link.partition(oid))[0]
    stub = storage._link.storage(nid)

    found = calls.load(stub, nid, oid, b"", tid, 30.0)
    assert found == LoadAnswer(LoadStatus.FOUND, tid, None, b"the record", None)
    assert calls.load(stub, nid, oid, tid, b"", 30.0).status is LoadStatus.NO_REVISION
    absent = p64(1 << 60)
    assert calls.load(stub, nid, absent, b"", b"", 30.0).status is LoadStatus.NO_OBJECT

    after = p64(int.from_bytes(tid, "big") + 1)
    answers = dict(calls.finish_loads(calls.start_loads(stub, [oid, absent], after, 30.0), nid))
    assert answers[oid].status is LoadStatus.FOUND and bytes(answers[oid].data) == b"the record"
    assert answers[absent] == LoadAnswer(LoadStatus.NO_OBJECT)
