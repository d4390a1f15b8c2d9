"""The transport seam: how the client, the master and the storage nodes call each other.

Callers use stubs shaped like the generated gRPC ones (``stub.Method(request,
timeout=, metadata=)``, ``.future(...)``; failures are ``grpc.RpcError``s with gRPC
status codes, turned into domain exceptions by ``wire.call``), whichever transport
carries them:

- the framed data plane (``client.FramedChannel`` and ``server.FramedServer``, frames in
  ``frames.py``): the hot calls, loads, stores and votes, finish, the master's lock and
  unlock orders and its event pushes;
- gRPC (``neoarray.wire``): the control plane, where latency does not matter: neoctl's
  Admin service, node registration and heartbeats, replication, standby state;
- in process (``inproc.InProcessChannel``): the same servicers called through the
  frame codec without sockets, for tests of the cores.

Every port gets the same security: mutual TLS with the cluster's CA, the role table of
``neoarray.security`` checked for each call, the cluster name, the admin token, and
bounded frames, connections and time limits.
"""
