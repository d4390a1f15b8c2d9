"""``neoctl``: administer a neoarray cluster through its master.

    neoctl -a HOST:PORT -c CLUSTER print ids|pt|node|cluster
    neoctl --dir DIR start|stop          (a LocalCluster directory: address and name from it)

Plain tables for people (like NEO's neoctl), ``--json`` for scripts; the exit status is
non-zero on failure, with the reason on standard error.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

from .admin import CELL_LETTERS, NODE_PREFIX, AdminClient, node_name
from .errors import NeoError
from .ids import tid_repr
from .proto import common_pb2 as cpb

NODE_STATES = {cpb.RUNNING: "RUNNING", cpb.PENDING: "PENDING", cpb.DOWN: "DOWN", cpb.UNKNOWN: "UNKNOWN"}
NODE_TYPES = {cpb.STORAGE: "STORAGE", cpb.CLIENT: "CLIENT", cpb.ADMIN: "ADMIN", cpb.MASTER: "MASTER"}


def _ids(admin, opts):
    ids = admin.ids()
    if opts.json:
        return {"last_oid": f"0x{ids['last_oid'].hex()}", "last_tid": f"0x{ids['last_tid'].hex()}",
                "last_ptid": ids["last_ptid"]}
    return (f"last_oid = 0x{ids['last_oid'].hex()}\nlast_tid = {tid_repr(ids['last_tid'])}\n"
            f"last_ptid = {ids['last_ptid']}")


def _pt(admin, opts):
    pt = admin.partition_table()
    nodes = {n.node_id: n for n in admin.nodes()}
    ids = sorted({c.node_id for row in pt.rows for c in row.cells})
    if opts.json:
        return {"ptid": pt.ptid, "replicas": pt.replicas, "partitions": [
            {f"S{c.node_id}": CELL_LETTERS.get(c.state, "?") for c in row.cells} for row in pt.rows]}
    lines = [f"# ptid: {pt.ptid}, replicas: {pt.replicas}"]
    for nid in ids:
        letters = "".join(next((CELL_LETTERS.get(c.state, "?") for c in row.cells if c.node_id == nid), ".")
                          for row in pt.rows)
        state = NODE_STATES.get(nodes[nid].state, "?")[0] if nid in nodes else "?"
        lines.append(f"S{nid} {state} {letters}")
    return "\n".join(lines)


def _node(admin, opts):
    rows = sorted(admin.nodes(), key=lambda n: (NODE_PREFIX.get(n.type, "?"), n.node_id))
    if opts.json:
        return [{"id": node_name(n), "type": NODE_TYPES.get(n.type), "address": n.address,
                 "state": NODE_STATES.get(n.state), "host": n.host, "since": n.state_since} for n in rows]
    return "\n".join(
        f"{node_name(n)} | {NODE_TYPES.get(n.type)} | {n.address or '-'} | {NODE_STATES.get(n.state)} | "
        f"{datetime.datetime.fromtimestamp(n.state_since).isoformat(sep=' ', timespec='seconds')}"
        for n in rows)


def _cluster(admin, opts):
    state = admin.cluster_state()
    return {"state": state} if opts.json else state


def _set_state(state):
    def run(admin, opts):
        new = admin.set_cluster_state(state)
        return {"state": new} if opts.json else "Cluster state changed"
    return run


PRINTERS = {"ids": _ids, "pt": _pt, "node": _node, "cluster": _cluster}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="neoctl", description="Administer a neoarray cluster.")
    p.add_argument("-a", "--address", help="master host:port")
    p.add_argument("-c", "--cluster", help="cluster name")
    p.add_argument("--dir", help="a local cluster directory (neoarray cluster up DIR)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout-s", type=float, default=10.0, help="time limit of each call")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("print", help="print ids, the partition table, nodes or the cluster state")
    pr.add_argument("what", choices=sorted(PRINTERS))
    sub.add_parser("start", help="start the cluster (RECOVERING -> RUNNING) with the storages present")
    sub.add_parser("stop", help="stop every node of the cluster")
    return p.parse_args(argv)


def resolve(opts) -> tuple[str, str]:
    address, cluster = opts.address, opts.cluster
    if opts.dir:
        address = address or open(os.path.join(opts.dir, "master.address")).read().strip()
        cluster = cluster or open(os.path.join(opts.dir, "cluster.name")).read().strip()
    if not address or not cluster:
        raise NeoError("give the master address and cluster name (-a, -c) or a cluster directory (--dir)")
    return address, cluster


def main(argv=None) -> int:
    opts = parse_args(argv)
    try:
        address, cluster = resolve(opts)
        admin = AdminClient(address, cluster, opts.timeout_s)
        if opts.command == "print":
            out = PRINTERS[opts.what](admin, opts)
        else:
            out = _set_state({"start": "RUNNING", "stop": "STOPPING"}[opts.command])(admin, opts)
    except (NeoError, OSError) as exc:
        print(f"neoctl: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=None if not isinstance(out, list) else 1) if opts.json else out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
