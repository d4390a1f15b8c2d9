"""A standby master's follower around its take-over, with its real LMDB state."""
import threading
import time
from concurrent import futures

import grpc

from master import standby
from master.cluster import EPOCH_ROUND
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import standby_pb2 as pb
from neoarray.proto import standby_pb2_grpc as pb_grpc


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


class _Roles(pb_grpc.StandbyServicer):
    """A master's Role over real gRPC: ``answers`` in turn, the last one then on."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), 0

    def Role(self, request, context):
        self.calls += 1
        role, epoch = self.answers[min(self.calls, len(self.answers)) - 1]
        return pb.RoleReply(role=role, epoch=epoch)


def _peer(answers):
    server = grpc.server(futures.ThreadPoolExecutor(2))
    roles = _Roles(answers)
    pb_grpc.add_StandbyServicer_to_server(roles, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, roles, f"127.0.0.1:{port}"


def test_a_standby_asks_twice_for_a_primary_before_it_takes_over(tmp_path):
    """Simulation seeds 207482, 808312: a round of Role calls begun while the primary
    was cut off ended unanswered just after it came back, and a standby with an older
    copy took over and deposed it.  A primary answering the second round, a second
    later, is followed instead; a standby takes over when no primary answers twice."""
    for answers, takes_over, asks in (([(pb.STANDBY, 0), (pb.PRIMARY, 2 * EPOCH_ROUND + 1)], False, 2),
                                      ([(pb.STANDBY, 0)], True, 2)):
        server, roles, address = _peer(answers)
        follower = standby.StandbyFollower(str(tmp_path / str(takes_over)), "c", [address, "127.0.0.1:9"],
                                           "127.0.0.1:9", node_timeout_s=2.0, rpc_timeout_s=5.0)
        try:
            follower.state.put(cluster="c", epoch=EPOCH_ROUND + 1)      # a copy it may take over from
            follower.last_contact = time.monotonic() - 60               # the primary silent for long
            assert follower._must_take_over(threading.Event()) is takes_over
            assert roles.calls == asks
        finally:
            follower.close()
            server.stop(0)
