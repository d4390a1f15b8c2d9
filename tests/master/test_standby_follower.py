"""A standby master's follower around its take-over, with its real LMDB state."""
from master import standby
from master.cluster import EPOCH_ROUND
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import standby_pb2 as pb


def test_role_answers_while_a_standby_takes_over_and_after_its_state_closed(tmp_path):
    """Between closing its state (taking over) and the primary's handlers replacing the
    standby's, the gRPC server still answers Role: with the new epoch, not an INTERNAL
    error from the closed database (seen in test_standby_master's take-over test)."""
    follower = standby.StandbyFollower(str(tmp_path), "c", ["127.0.0.1:1", "127.0.0.1:2"], "127.0.0.1:2",
                                       node_timeout_s=3.0)
    assert follower.epoch() == 0
    epoch = follower.take_over()
    assert epoch // EPOCH_ROUND == 1 and epoch % EPOCH_ROUND > 0
    servicer = standby.StandbyServicer(follower)
    reply = servicer.Role(cpb.Empty(), None)
    assert (reply.role, reply.epoch) == (pb.STANDBY, epoch)

    stopped = standby.StandbyFollower(str(tmp_path / "other"), "c", ["127.0.0.1:1", "127.0.0.1:2"],
                                      "127.0.0.1:2", node_timeout_s=3.0)
    stopped.close()
    assert stopped.epoch() == 0
