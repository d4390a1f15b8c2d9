"""The one vocabulary of states and its one mapping to the protobuf enums."""
import json

import msgpack

from neoarray.proto import common_pb2 as cpb
from neoarray.proto_states import (
    CELL_FROM_PB,
    CELL_TO_PB,
    CLUSTER_STATE_FROM_PB,
    CLUSTER_STATE_TO_PB,
    NODE_STATE_TO_PB,
    NODE_TYPE_FROM_PB,
    NODE_TYPE_TO_PB,
    cell_change_pb,
)
from neoarray.states import READABLE, CellState, ClusterState, NodeState, NodeType


def test_every_state_has_one_protobuf_twin_and_back():
    for enum, to_pb in ((CellState, CELL_TO_PB), (NodeState, NODE_STATE_TO_PB),
                        (ClusterState, CLUSTER_STATE_TO_PB), (NodeType, NODE_TYPE_TO_PB)):
        assert set(to_pb) == set(enum) and len(set(to_pb.values())) == len(enum)
    assert all(CELL_FROM_PB[CELL_TO_PB[s]] is s for s in CellState)
    assert CLUSTER_STATE_FROM_PB[cpb.CLUSTER_RUNNING] is ClusterState.RUNNING
    assert READABLE == {CellState.UP_TO_DATE, CellState.FEEDING}
    assert {CELL_TO_PB[s] for s in READABLE} == {cpb.UP_TO_DATE, cpb.FEEDING}
    assert {pb: s.letter for pb, s in CELL_FROM_PB.items()} == {
        cpb.UP_TO_DATE: "U", cpb.OUT_OF_DATE: "O", cpb.FEEDING: "F", cpb.CORRUPTED: "C"}
    assert NODE_TYPE_FROM_PB[cpb.STORAGE].prefix == "S" and NODE_TYPE_FROM_PB[cpb.MASTER].prefix == "M"
    assert cell_change_pb("", CellState.OUT_OF_DATE) == (cpb.CELL_STATE_UNSPECIFIED, cpb.OUT_OF_DATE)
    assert cell_change_pb(CellState.FEEDING, "") == (cpb.FEEDING, cpb.DISCARDED)


def test_states_read_and_write_as_their_text():
    """Logs, JSON and the master's msgpack state see the same text as before the enums."""
    assert f"{ClusterState.RUNNING}" == str(ClusterState.RUNNING) == "RUNNING"
    assert "%s" % CellState.FEEDING == "F" and CellState("U") is CellState.UP_TO_DATE  # noqa: UP031 (as logging formats)
    assert json.dumps([NodeState.DOWN, CellState.CORRUPTED]) == '["DOWN", "C"]'
    assert msgpack.unpackb(msgpack.packb([NodeType.STORAGE, CellState.OUT_OF_DATE])) == ["STORAGE", "O"]
