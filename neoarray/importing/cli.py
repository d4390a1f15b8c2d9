"""``neoarray import``: the command line of :mod:`neoarray.importing`.

    neoarray import Data.fs [--blob-dir DIR] (--dir CLUSTER_DIR | -a HOST:PORT -c NAME)
                    [--ca --cert --key] [--follow [--poll-s S]] [--quiet]
    neoarray import --source-config source.conf ...
"""
from __future__ import annotations

import sys

from .. import security
from ..errors import NeoError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "import", help="copy a FileStorage or any ZODB storage, whole history and blobs, into a cluster",
        description="Copy every transaction of a FileStorage (PATH) or of the storage of a ZConfig file "
                    "(--source-config: <zeoclient>, <filestorage>...) into a running neoarray cluster, tids, "
                    "metadata, undo records and blobs kept, verifying each one on the target. Run again after "
                    "an interruption to continue; --follow keeps importing what the source commits.")
    p.add_argument("path", nargs="?", metavar="PATH", help="the FileStorage file (Data.fs) to import")
    p.add_argument("--blob-dir", help="the FileStorage's blob directory (its blob-dir), if it has blobs")
    p.add_argument("--source-config", metavar="FILE",
                   help="a ZConfig file with the source storage's section, instead of PATH")
    where = p.add_argument_group("target cluster")
    where.add_argument("--dir", help="a local cluster directory (neoarray cluster up DIR), running")
    where.add_argument("-a", "--address", help="master host:port, or host:port,host:port... with standbys")
    where.add_argument("-c", "--cluster", help="cluster name")
    security.add_arguments(p)
    p.add_argument("--timeout-s", type=float, default=30.0, help="cluster connection time limit "
                   "(default: %(default)s)")
    p.add_argument("--follow", action="store_true",
                   help="after the source's end, keep polling it and importing new transactions until "
                        "SIGINT or SIGTERM (which stop after the transaction in progress)")
    p.add_argument("--poll-s", type=float, default=1.0, help="--follow: seconds between polls of the source "
                   "(default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary; errors only")


def open_target(opts):
    """The ``NeoStorage`` of the target cluster the options name."""
    from ..client import NeoStorage
    from ..ctl import resolve
    address, cluster = resolve(opts)
    tls = security.tls_of(opts)
    if tls is None and opts.dir:
        tls = security.cluster_tls(opts.dir, "client")
    return NeoStorage(address, cluster, connect_timeout_s=opts.timeout_s, **(tls.options() if tls else {}))


def main(opts) -> int:
    from .run import import_storage
    from .source import open_source
    if opts.poll_s <= 0:
        raise NeoError(f"--poll-s must be > 0, not {opts.poll_s}")
    if opts.blob_dir and opts.source_config:
        raise NeoError("--blob-dir goes with a FileStorage PATH; in a ZConfig file, give blob-dir in its section")
    source = open_source(opts.path, opts.source_config, opts.blob_dir)
    try:
        target = open_target(opts)
        try:
            import_storage(source, target, follow=opts.follow, quiet=opts.quiet, poll_s=opts.poll_s,
                           out=sys.stderr)
        finally:
            target.close()
    finally:
        source.close()
    return 0
