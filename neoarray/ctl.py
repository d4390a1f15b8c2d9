"""``neoctl``: administer a neoarray cluster through its master.

    neoctl -a HOST:PORT -c CLUSTER --token-file FILE print ids|pt|node|cluster|summary
    neoctl --dir DIR start|stop          (a LocalCluster directory: address and name from it)
    neoctl --dir DIR check [--repair] [PARTITION...]
    neoctl --dir DIR add NODE...|all     (PENDING storage nodes join the cluster)
    neoctl --dir DIR tweak [-n] [NODE...] (spread cells evenly; NODE...: nodes to empty)
    neoctl --dir DIR drop NODE | kill NODE | set replicas N
    neoctl --dir DIR pack [TID] [--no-gc]  (default TID: the last committed transaction)
    neoctl --dir DIR truncate TID          (delete every transaction after TID)
    neoctl --dir DIR set replication-rate BYTES_PER_S [NODE...]   (e.g. 50M; 0: unlimited)

``truncate``, ``drop``, ``kill``, lowering ``set replicas``, ``pack`` and ``check
--repair`` say what they remove and ask first; ``--yes`` answers for scripts, and
without a terminal they change nothing unless given ``--yes`` (``neoarray.confirm``).

Credentials: the master's Admin service wants an admin certificate (``--ca --cert
--key``, mutual TLS) or the cluster's admin token (``--token-file``); ``--dir`` finds
both in a local cluster directory (``tls/admin.crt``, ``admin.token``).

Plain tables for people (like NEO's neoctl), ``--json`` for scripts (before or after the
command: one JSON object per command, keys in snake_case, ids as ``0x`` hex, nodes named
``S1``/``M1``); the exit status is non-zero on failure, with the reason on standard error.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

from . import __version__, diagnose, security
from .admin import AdminClient, partition_ranges
from .check import check_command
from .confirm import (
    confirm,
    node_text,
    pack_text,
    repair_text,
    replicas_text,
    truncate_text,
)
from .errors import NeoError
from .ids import tid_repr
from .states import READABLE, CellState, NodeState, NodeType
from .views import running_storages


def _ids(admin, opts):
    ids = admin.ids()
    if opts.json:
        return {"last_oid": f"0x{ids['last_oid'].hex()}", "last_tid": f"0x{ids['last_tid'].hex()}",
                "last_ptid": ids["last_ptid"]}
    return (f"last_oid = 0x{ids['last_oid'].hex()}\nlast_tid = {tid_repr(ids['last_tid'])}\n"
            f"last_ptid = {ids['last_ptid']}")


def _pt(admin, opts):
    return _pt_out(admin.partition_table(), admin, opts)


def _pt_out(pt, admin, opts):
    nodes = {n.node_id: n for n in admin.nodes()}
    ids = sorted({c.node_id for row in pt.rows for c in row.cells})
    if opts.json:
        return {"ptid": pt.ptid, "replicas": pt.replicas, "partitions": [
            {f"S{c.node_id}": c.state.letter for c in row.cells} for row in pt.rows]}
    lines = [f"# ptid: {pt.ptid}, replicas: {pt.replicas}"]
    for nid in ids:
        letters = "".join(next((c.state.letter for c in row.cells if c.node_id == nid), ".")
                          for row in pt.rows)
        state = nodes[nid].state.value[0] if nid in nodes else "?"
        lines.append(f"S{nid} {state} {letters}")
    return "\n".join(lines)


def _node(admin, opts):
    """Every node the master knows, and every master: standbys as the master lists them
    (MASTER nodes), the primary (the master answering, which does not list itself) as
    ``M0`` unless it lists itself (a standby that took over)."""
    rows = sorted(admin.nodes(), key=lambda n: (n.type.prefix, n.node_id))
    docs = [{"id": n.name, "type": n.type.value, "address": n.address,
             "state": n.state.value, "host": n.host, "since": n.state_since or None,
             "primary": n.type is NodeType.MASTER and n.address == admin.master} for n in rows]
    if not any(d["primary"] for d in docs):
        docs.insert(0, {"id": f"{NodeType.MASTER.prefix}0", "type": NodeType.MASTER.value, "address": admin.master,
                        "state": NodeState.RUNNING.value, "host": admin.master.rpartition(":")[0],
                        "since": None, "primary": True})
    if opts.json:
        return {"nodes": docs}
    return "\n".join(
        f"{d['id']} | {d['type']}{' (primary)' if d['primary'] else ''} | {d['address'] or '-'} | "
        f"{d['state']} | {_date(d['since'])}" for d in docs)


def _date(epoch_s: float | None) -> str:
    return datetime.datetime.fromtimestamp(epoch_s).isoformat(sep=" ", timespec="seconds") if epoch_s else "-"


def _cluster(admin, opts):
    state = admin.cluster_state().value
    return {"state": state} if opts.json else state


def _set_state(state):
    def run(admin, opts):
        new = admin.set_cluster_state(state).value
        return {"state": new} if opts.json else f"cluster {new}"
    return run


def _stop(admin, opts):
    """Stop every node, and wait (``--timeout-s``) for the master and the storage nodes
    to stop listening: the final state, STOPPED, or STOPPING with the nodes still up
    (exit status 1)."""
    storages = {n.name: n.address for n in admin.nodes() if n.type is NodeType.STORAGE
                and n.state is not NodeState.DOWN and n.address}
    admin.set_cluster_state("STOPPING")
    deadline = time.monotonic() + opts.timeout_s
    up = {"master": admin.master, **storages}
    while up and time.monotonic() < deadline:
        time.sleep(0.1)
        up = {name: a for name, a in up.items() if diagnose.listening(a)}
    doc = {"state": "STOPPING" if up else "STOPPED", "master": admin.master,
           "storages": sorted(storages), "still_listening": sorted(up)}
    if opts.json:
        return doc, 1 if up else 0
    if up:
        return (f"cluster STOPPING: still listening after {opts.timeout_s:g} s: "
                f"{', '.join(f'{n} at {a}' for n, a in sorted(up.items()))}"), 1
    return f"cluster STOPPED: the master at {admin.master} and {len(storages)} storage node(s) shut down"


def _summary(admin, opts):
    """Whether anything needs attention; exit status 1 unless RUNNING and every
    partition has a readable copy."""
    doc = health(admin)
    status = 0 if doc["state"] == "RUNNING" and not doc["partitions_unreadable"] else 1
    if opts.json:
        return doc, status
    lines = [f"cluster: {doc['state']}",
             f"storage nodes: {doc['storages_up']} up, {doc['storages_down']} not running"]
    for n in doc["storages"]:
        cells = " ".join(f"{k}={v}" for k, v in sorted(n["cells"].items())) or "no cells"
        lines.append(f"  {n['id']} {n['state']:<8} {n['address'] or '-'}  {cells}")
    lines.append(f"partitions: {doc['partitions']}, replicas: {doc['replicas']} "
                 f"({doc['replicas'] + 1} readable copies wanted)")
    lines.append(f"  without a readable copy: {partition_ranges(doc['partitions_unreadable'])}")
    lines.append(f"  without an UP_TO_DATE copy: {partition_ranges(doc['partitions_without_up_to_date'])}")
    lines.append(f"  fewer readable copies than wanted: {partition_ranges(doc['partitions_under_replicated'])}")
    lines.append(f"last_oid = {doc['last_oid']}; last_tid = {doc['last_tid']}; last_ptid = {doc['last_ptid']}")
    lines.append("attention needed" if doc["attention"] else "nothing needs attention")
    return "\n".join(lines), status


def health(admin) -> dict:
    """Cluster state, storage nodes with their cells, partitions lacking copies, last ids."""
    state, pt, ids = admin.cluster_state().value, admin.partition_table(), admin.ids()
    storages = sorted((n for n in admin.nodes() if n.type is NodeType.STORAGE), key=lambda n: n.node_id)
    running = running_storages(storages)
    cells: dict[int, dict[str, int]] = {n.node_id: {} for n in storages}
    unreadable, no_up_to_date, under = [], [], []
    for p, row in enumerate(pt.rows):
        for c in row.cells:
            letter = c.state.letter
            cells.setdefault(c.node_id, {})[letter] = cells.get(c.node_id, {}).get(letter, 0) + 1
        live = [c for c in row.cells if c.node_id in running]
        readable = sum(1 for c in live if c.state in READABLE)
        if not readable:
            unreadable.append(p)
        elif readable < pt.replicas + 1:
            under.append(p)
        if not any(c.state is CellState.UP_TO_DATE for c in live):
            no_up_to_date.append(p)
    return {"state": state, "storages_up": len(running), "storages_down": len(storages) - len(running),
            "storages": [{"id": n.name, "state": n.state.value, "address": n.address,
                          "cells": cells.get(n.node_id, {})} for n in storages],
            "partitions": len(pt.rows), "replicas": pt.replicas,
            "partitions_unreadable": unreadable, "partitions_without_up_to_date": no_up_to_date,
            "partitions_under_replicated": under,
            "last_oid": f"0x{ids['last_oid'].hex()}", "last_tid": f"0x{ids['last_tid'].hex()}",
            "last_ptid": ids["last_ptid"],
            "attention": bool(state != "RUNNING" or unreadable or no_up_to_date or under)}


def node_id(text: str) -> int:
    """``S3``, ``s3`` or ``3`` -> 3."""
    digits = text[1:] if text[:1] in ("S", "s") else text
    if not digits.isdigit() or not 0 < int(digits) < 1 << 32:
        raise NeoError(f"bad storage node {text!r}: write it S<id> or <id> (see neoctl print node)")
    return int(digits)


def _letter(state: CellState | None) -> str:
    """A cell's state in a change: ``-`` where there is no cell (before or after)."""
    return "-" if state is None else state.letter


def _changes_out(reply, admin, opts, applied: bool, none_text: str):
    changes = [{"partition": c.partition, "node": f"S{c.node_id}", "from": _letter(c.old),
                "to": _letter(c.new)} for c in reply.changes]
    if opts.json:
        return {"applied": applied and bool(changes), "changes": changes, "pt": _pt_out(reply.table, admin, opts)}
    if not changes:
        return none_text
    head = "Planned (not applied):" if not applied else f"{len(changes)} cell changes applied:"
    lines = [head] + [f"  partition {c['partition']} {c['node']}: {c['from']} -> {c['to']}" for c in changes]
    return "\n".join(lines + [_pt_out(reply.table, admin, opts)])


def _add(admin, opts):
    everyone = opts.nodes == ["all"]
    added = admin.add_nodes([] if everyone else [node_id(n) for n in opts.nodes], everyone)
    names = [f"S{n}" for n in added]
    if opts.json:
        return {"added": names}
    return f"Nodes added: {', '.join(names)}" if names else "No pending node to add."


def _tweak(admin, opts):
    reply = admin.tweak([node_id(n) for n in opts.nodes], opts.dry_run)
    return _changes_out(reply, admin, opts, not opts.dry_run, "No change done.")


def _drop(admin, opts):
    nid = node_id(opts.node)
    confirm(opts, node_text(admin, nid, "drop"))
    reply = admin.drop_node(nid)
    if opts.json:
        return {"dropped": f"S{nid}", **_changes_out(reply, admin, opts, True, "")}
    return f"S{nid} dropped ({len(reply.changes)} cells removed); run tweak to restore the replica count"


def _kill(admin, opts):
    nid = node_id(opts.node)
    confirm(opts, node_text(admin, nid, "kill"))
    admin.kill_node(nid)
    return {"killed": f"S{nid}"} if opts.json else f"S{nid} asked to shut down"


def _set(admin, opts):
    if opts.what == "replication-rate":
        return _set_rate(admin, opts)
    if opts.what == "cluster":
        if opts.value.upper() not in ("RUNNING", "STOPPING"):
            raise NeoError(f"set cluster: {opts.value!r} is not RUNNING or STOPPING")
        return _set_state(opts.value.upper())(admin, opts)
    try:
        replicas = int(opts.value)
    except ValueError:
        raise NeoError(f"set replicas: {opts.value!r} is not a whole number") from None
    if replicas < 0:
        raise NeoError(f"set replicas: {replicas} is negative")
    fewer = replicas_text(admin, replicas)
    if fewer:
        confirm(opts, fewer)
    reply = admin.set_replicas(replicas)
    if opts.json:
        return {"replicas": reply.table.replicas, "ptid": reply.table.ptid}
    return f"replicas = {reply.table.replicas} (ptid {reply.table.ptid}); run tweak to apply"


def parse_bytes_per_s(text: str) -> int:
    """A rate in bytes per second: a whole number with an optional K, M or G (powers of
    1024) suffix, e.g. ``50M``; 0 is unlimited."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    digits, unit = (text[:-1], text[-1].upper()) if text[-1:].upper() in "KMG" else (text, "")
    try:
        value = int(digits) * units[unit]
    except ValueError:
        raise NeoError(f"set replication-rate: {text!r} is not a rate in bytes per second "
                       f"(a whole number, optional K/M/G suffix; 0: unlimited)") from None
    if value < 0:
        raise NeoError(f"set replication-rate: {text!r} is negative")
    return value


def _set_rate(admin, opts):
    rate = parse_bytes_per_s(opts.value)
    nodes = [node_id(n) for n in opts.nodes]
    reply = admin.set_replication_rate(rate, nodes)
    rates = {f"S{n}": r for n, r in sorted(reply.rates.items())}
    if opts.json:
        return {"rates": rates, "default": reply.default_bytes_per_s}
    lines = [f"{name}: {_rate_text(r)}" for name, r in rates.items()]
    if reply.default_bytes_per_s is not None:
        lines.append(f"nodes joining later: {_rate_text(reply.default_bytes_per_s)}")
    return "\n".join(lines)


def _rate_text(bytes_per_s: int) -> str:
    return "unlimited" if bytes_per_s == 0 else f"{bytes_per_s} bytes/s"


def _truncate(admin, opts):
    """Delete every transaction after TID on every node; clients reconnect and drop
    their caches, a transaction committing meanwhile is not committed."""
    tid = parse_tid(opts.tid)
    last = admin.ids()["last_tid"]
    if tid > last:
        raise NeoError(f"truncate to 0x{tid.hex()} refused: it is after the last committed "
                       f"transaction 0x{last.hex()} (see neoctl print ids)")
    if tid < last:
        confirm(opts, truncate_text(admin, tid, last))
    reply = admin.truncate(tid, opts.long_timeout_s)
    if opts.json:
        return {"truncated_to": f"0x{reply.tid.hex()}", "last_tid_before": f"0x{reply.last_tid_before.hex()}",
                "transactions_removed": reply.transactions_removed,
                "revisions_removed": reply.revisions_removed}
    if reply.last_tid_before <= reply.tid:
        return f"nothing after {tid_repr(tid)}: nothing removed"
    return (f"truncated to {tid_repr(tid)} (last was {tid_repr(reply.last_tid_before)}): "
            f"{reply.transactions_removed} transaction record(s) and {reply.revisions_removed} "
            f"revision(s) removed over all nodes")


def parse_tid(text: str) -> bytes:
    """A tid given as 16 hex digits (``0x`` optional)."""
    digits = text[2:] if text.lower().startswith("0x") else text
    try:
        if len(digits) != 16:
            raise ValueError
        return bytes.fromhex(digits)
    except ValueError:
        raise NeoError(f"a TID is 16 hex digits (as `neoctl print ids` shows it), not {text!r}; "
                       f"nothing changed") from None


def _pack(admin, opts):
    """Pack every node to TID (default: the last committed one), with garbage collection
    of the objects unreachable from the root unless ``--no-gc``."""
    from ZODB import POSException
    from ZODB.serialize import referencesf

    from .client import NeoStorage
    last = admin.ids()["last_tid"]
    tid = last if opts.tid is None else parse_tid(opts.tid)
    if tid > last:
        raise NeoError(f"TID 0x{tid.hex()} is after the last committed transaction 0x{last.hex()}")
    confirm(opts, pack_text(tid, not opts.no_gc))
    storage = NeoStorage(",".join(admin.masters), admin.cluster, local_reads=False,
                         connect_timeout_s=opts.timeout_s, **(admin.tls.options() if admin.tls else {}))
    try:       # what a snapshot at ``tid`` (or later) sees is kept
        removed = storage.pack_to_tid(tid, referencesf, gc=not opts.no_gc)
    except POSException.StorageError as exc:       # a node refused (packed later already)
        raise NeoError(f"pack refused: {exc}") from None
    finally:
        storage.close()
    if opts.json:
        return {"packed_to": f"0x{tid.hex()}", "revisions_removed": removed, "gc": not opts.no_gc}
    return f"packed to {tid_repr(tid)}: {removed} revision(s) removed"


def _check(admin, opts):
    if opts.repair:
        confirm(opts, repair_text(opts.partition, len(admin.partition_table().rows)))
    return check_command(admin, opts)


COMMANDS = {"add": _add, "tweak": _tweak, "drop": _drop, "kill": _kill, "set": _set, "pack": _pack,
            "truncate": _truncate, "check": _check, "stop": _stop, "start": _set_state("RUNNING")}


CALL_S = 10.0
LONG_CALL_S = 600.0

PRINTERS = {"ids": _ids, "pt": _pt, "node": _node, "cluster": _cluster, "summary": _summary}


DESTRUCTIVE = "truncate, drop, kill, lowering set replicas, pack, check --repair"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="neoctl", description="Administer a neoarray cluster.",
        epilog=f"{DESTRUCTIVE} say what they remove and ask first; --yes answers for scripts "
               f"(without a terminal they change nothing unless given --yes).")
    p.add_argument("--version", action="version", version=f"neoctl (neoarray) {__version__}")
    p.add_argument("-a", "--address", help="master host:port, or host:port,host:port... "
                   "(the primary and its standbys: the first that answers as primary is used)")
    p.add_argument("-c", "--cluster", help="cluster name")
    p.add_argument("--dir", help="a local cluster directory (neoarray cluster up DIR)")
    p.add_argument("--timeout-s", type=float, default=None,
                   help=f"time limit of each call (default {CALL_S:.0f} s; truncate: {LONG_CALL_S:.0f} s)")
    security.add_arguments(p)
    p.add_argument("--token-file", help="file holding the cluster's admin token")
    _add_common(p, argparse.SUPPRESS)        # before the command; after it too (each subparser)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, **kw):
        sp = sub.add_parser(name, **kw)
        _add_common(sp, argparse.SUPPRESS)
        return sp
    pr = command("print", help="print ids, the partition table, nodes or the cluster state")
    pr.add_argument("what", choices=sorted(PRINTERS))
    command("start", help="start the cluster (RECOVERING -> RUNNING) with the storages present")
    command("stop", help="stop every node of the cluster and wait until they stopped listening")
    ck = command("check", help="compare every copy of partitions (keys, checksums, data)")
    ck.add_argument("--repair", action="store_true",
                    help="rewrite missing and corrupt copies from a sound one (asks first)")
    ck.add_argument("partition", nargs="*", type=int, help="partitions to check (default: all)")
    ad = command("add", help="PENDING storage nodes join the cluster (no cells until tweak)")
    ad.add_argument("nodes", nargs="+", metavar="NODE", help="S<id>..., or all")
    tw = command("tweak", help="spread cells evenly over the running storage nodes")
    tw.add_argument("-n", "--dry-run", action="store_true", help="print the plan, change nothing")
    tw.add_argument("nodes", nargs="*", metavar="NODE", help="nodes to empty")
    dr = command("drop", help="remove a storage node and its cells from the partition table (asks first)")
    dr.add_argument("node", metavar="NODE", help="S<id>, as neoctl print node shows it")
    kl = command("kill", help="ask a storage node to shut down (asks first)")
    kl.add_argument("node", metavar="NODE", help="S<id>, as neoctl print node shows it")
    st = command("set", help="set replicas N (tweak applies it; fewer asks first), set cluster STATE, "
                             "or set replication-rate BYTES_PER_S [NODE...] (0: unlimited)")
    st.add_argument("what", choices=["replicas", "cluster", "replication-rate"])
    st.add_argument("value")
    st.add_argument("nodes", nargs="*", metavar="NODE",
                    help="replication-rate: these storage nodes only (default: all, and later ones)")
    pk = command("pack", help="drop revisions older than TID and unreachable objects (asks first)")
    pk.add_argument("tid", nargs="?", metavar="TID", help="16 hex digits (default: the last tid)")
    pk.add_argument("--no-gc", action="store_true", help="keep objects unreachable from the root")
    tr = command("truncate", help="delete every transaction after TID, on every node (asks first)")
    tr.add_argument("tid", metavar="TID", help="16 hex digits, as neoctl print ids shows them: "
                                               "the last transaction kept")
    opts = p.parse_args(argv)
    if opts.command == "set" and opts.nodes and opts.what != "replication-rate":
        p.error(f"set {opts.what} takes one value")
    opts.json = getattr(opts, "json", False)
    opts.yes = getattr(opts, "yes", False)
    opts.long_timeout_s = opts.timeout_s or LONG_CALL_S
    opts.timeout_s = opts.timeout_s or CALL_S
    return opts


def _add_common(parser, default) -> None:
    """Options taken before or after the command (``neoctl --json print node`` or
    ``neoctl print node --json``): ``default`` SUPPRESS, so that a subparser does not
    overwrite what was given before the command."""
    parser.add_argument("--json", action="store_true", default=default,
                        help="machine-readable output: one JSON object")
    parser.add_argument("-y", "--yes", action="store_true", default=default,
                        help=f"confirm a command that removes something ({DESTRUCTIVE}) without asking")


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def resolve(opts) -> tuple[str, str]:
    address, cluster = opts.address, opts.cluster
    if opts.dir:
        masters = os.path.join(opts.dir, "masters.address")    # with standby masters
        address = address or _read_text(masters if os.path.exists(masters)
                                        else os.path.join(opts.dir, "master.address"))
        cluster = cluster or _read_text(os.path.join(opts.dir, "cluster.name"))
    if not address or not cluster:
        raise NeoError("give the master address and cluster name (-a, -c) or a cluster directory (--dir)")
    return address, cluster


def credentials(opts) -> tuple[security.TLSConfig | None, str | None]:
    """``(tls, admin token)``: from the options, else from ``--dir``'s files."""
    tls = security.tls_of(opts)
    token = security.read_token(opts.token_file) if opts.token_file else None
    if opts.dir:
        tls = tls or security.cluster_tls(opts.dir, "admin")
        token = token or security.cluster_token(opts.dir)
    return tls, token


def main(argv=None) -> int:
    opts = parse_args(argv)
    try:
        address, cluster = resolve(opts)
        tls, token = credentials(opts)
        admin = AdminClient(address, cluster, opts.timeout_s, tls=tls, admin_token=token)
        if opts.command == "print":
            out = PRINTERS[opts.what](admin, opts)
        else:
            out = COMMANDS[opts.command](admin, opts)
    except (NeoError, OSError) as exc:
        print(f"neoctl: {exc}", file=sys.stderr)
        return 1
    out, status = out if isinstance(out, tuple) else (out, 0)
    print(json.dumps(out) if opts.json else out)
    return status


if __name__ == "__main__":
    sys.exit(main())
