"""``neoarray-storage``: run a storage node over an LMDB directory."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from neoarray.errors import NeoError

from .node import Limits, StorageNode


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="neoarray-storage", description=__doc__)
    p.add_argument("--cluster", required=True, help="cluster name")
    p.add_argument("--master", required=True,
                   help="host:port of the master, or host:port,host:port... of the primary and its standbys")
    p.add_argument("--data", help="LMDB directory (default: memory, for tests)")
    p.add_argument("--bind", default="127.0.0.1:0", help="host:port to listen on")
    p.add_argument("--host", help="host name reported to the master (replicas go to different hosts)")
    p.add_argument("--map-bytes-max", type=int, default=1 << 40, help="LMDB map size: the most this node holds")
    p.add_argument("--no-vote-sync", dest="vote_sync", action="store_false",
                   help="do not fsync at vote (faster commits; a machine crash between vote and "
                        "lock can lose a vote: see storage_node/backend.py)")
    p.add_argument("--replication-bytes-per-s", type=int, default=0,
                   help="most bytes per second this node copies when catching up OUT_OF_DATE cells "
                        "(0: unlimited)")
    p.add_argument("--replication-batch-records-max", type=int, default=1_000,
                   help="keys listed and records asked per replication request")
    p.add_argument("--replication-batch-bytes-max", type=int, default=4 << 20,
                   help="data bytes per replication reply (at least one record)")
    p.add_argument("--address-file", help="write the bound address to this file once listening")
    p.add_argument("--log-file")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def _limits(opts) -> Limits:
    for name in ("replication_bytes_per_s", "replication_batch_records_max", "replication_batch_bytes_max"):
        value = getattr(opts, name)
        if value < (0 if name == "replication_bytes_per_s" else 1):
            raise NeoError(f"--{name.replace('_', '-')} must be "
                           f"{'>= 0' if name == 'replication_bytes_per_s' else '>= 1'}, not {value}")
    return Limits(map_bytes_max=opts.map_bytes_max, vote_sync=opts.vote_sync,
                  replication_bytes_per_s=opts.replication_bytes_per_s,
                  replication_batch_records_max=opts.replication_batch_records_max,
                  replication_batch_bytes_max=opts.replication_batch_bytes_max)


def main(argv=None) -> int:
    opts = parse_args(argv)
    logging.basicConfig(filename=opts.log_file, level=opts.log_level,
                        format="%(asctime)s %(levelname)s S %(name)s: %(message)s")
    try:
        node = StorageNode(opts.data, opts.cluster, opts.master, opts.bind,
                           _limits(opts), host=opts.host)
    except NeoError as exc:
        print(f"neoarray-storage: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: node.stopped.set())
    node.start()
    logging.getLogger("neoarray.storage").info("storage node listening on %s", node.address)
    if opts.address_file:
        tmp = opts.address_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(node.address)
        os.replace(tmp, opts.address_file)
    node.stopped.wait()
    fatal = getattr(node, "fatal", None)
    node.stop()
    if fatal:
        print(f"neoarray-storage: {fatal}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
