"""``LocalCluster``: a master and storage nodes as local processes over one directory.

Layout of the directory: ``cluster.name`` (the cluster name, chosen at creation),
``lock`` (the pid of the process running the cluster, locked while it runs: see
:mod:`neoarray.localdir`), ``master/`` (the master's state), ``master.address`` (its
``host:port``, reused on restart so clients find it again; a port that another
program took meanwhile is replaced by a free one), ``S<id>/`` (LMDB of the storage
node that the master calls ``S<id>``, as ``neoctl`` does), ``S<id>.address``,
``logs/`` (one log file per node: ``master.log``, ``S<id>.log``, and ``.err`` files
with their standard error), ``admin.token`` (0600: the admin credential that
``neoctl --dir`` and ``admin()`` send; the master refuses Admin RPCs without it) and,
for a cluster made with ``tls=True``, ``tls/`` (a CA and a certificate per role, see
``neoarray.security.generate``): every node then talks mutual TLS.  With
``metrics=True`` every node serves Prometheus metrics on a free port of 127.0.0.1,
written to ``master.metrics`` and ``S<id>.metrics`` (``host:port``; see
:meth:`LocalCluster.metrics_addresses`).  Standby masters (``start_standby_master``)
keep their state in ``master-N/`` and their address in ``master-N.address``;
``masters.address`` lists every master (``host:port,host:port``: what storages,
clients and ``neoctl --dir`` are given).

Storage names: a node gets its id from the master when it first joins, so a new
storage node starts in ``storage-K/`` (the next free K); once the master has named
it ``S<id>``, its directory, address, metrics and log files are renamed ``S<id>``,
and ``storage-K`` stays a link to ``S<id>`` until that first process ends (it still
uses the old path).  A ``storage-K/`` directory that cannot be renamed (a mount
point) stays, with ``S<id>`` a link to it; so does a storage directory moved
elsewhere with a link left at ``S<id>``.  ``storage-K/`` directories of older
versions are named the same way on their next start.

The nodes are tied to the process that starts them (``--exit-with-parent``): they
stop when it ends, however it ends.  Node processes left over ``DIR`` by an older
version are stopped on ``start``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from . import security
from .admin import AdminClient
from .errors import ClusterUnavailable, NeoError
from .localdir import DirectoryLock, pid_alive, stop_stale_nodes
from .states import NodeState, NodeType

if TYPE_CHECKING:
    from typing_extensions import Self

    from .client import NeoStorage

log = logging.getLogger("neoarray.cluster")

NAMED = re.compile(r"S(\d+)")               # a storage directory named after its node id
UNNAMED = re.compile(r"storage-(\d+)")      # one whose node has no id yet (or of an older version)
ERR_LINES_MAX = 12                          # lines of a failed node's standard error in the exception
PORT_TAKEN = ("cannot listen on", "Failed to bind")     # what a node says when its port is taken


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of ``host`` free now (another program may take it before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _PortTaken(NeoError):
    """A node exited because the address it was told to reuse is taken."""


@dataclasses.dataclass(eq=False)
class StorageSlot:
    """A storage node of the directory: where its data is, its id once the master gave
    one, its process, and the ``storage-K`` link left while a node renamed at its
    first start runs."""
    path: str
    node_id: int = 0
    proc: subprocess.Popen | None = None
    args: tuple[str, ...] = ()
    bind: str = ""
    link: str | None = None

    @property
    def name(self) -> str:
        return f"S{self.node_id}" if self.node_id else os.path.basename(self.path)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalCluster:
    """A cluster of node processes over one directory: a master (and standbys) and
    storage nodes on 127.0.0.1, what ``neoarray.open(path)`` and ``neoarray cluster up``
    run.  Also a context manager (``with LocalCluster(dir) as c:`` starts and stops it).

    Parameters
    ----------
    path : str
        The data directory (made if missing): nodes' data, logs, addresses, the admin
        token and the TLS files.
    storages, replicas, partitions : int
        Storage nodes to run (at least those the directory has), copies beyond the
        first, and partitions of a new cluster.
    cluster : str, optional
        The cluster's name (default: the directory's, or a new random one).
    node_timeout_s : float
        The master's heartbeat timeout of a node.
    log_level : str
        The nodes' log level.
    metrics : bool
        Give every node a Prometheus metrics port.
    master_args, storage_args : tuple of str
        More ``neoarray-master``/``neoarray-storage`` options for every start (limits
        such as ``("--message-bytes-max", "65536")``).
    tls : bool, optional
        True makes the directory's CA and certificates (once) and runs every node with
        mutual TLS; None (default) does so when the directory has them.
    standby_masters : int
        Standby masters to run.
    exit_with_parent : bool
        The nodes stop when this process ends.

    Raises
    ------
    DirectoryInUse
        Another live process runs this directory (raised before anything in ``path``
        changes).
    """

    def __init__(self, path: str, storages: int = 1, replicas: int = 0, partitions: int = 12,
                 cluster: str | None = None, node_timeout_s: float = 5.0, log_level: str = "INFO",
                 metrics: bool = False, master_args: tuple[str, ...] = (),
                 storage_args: tuple[str, ...] = (), tls: bool | None = None,
                 standby_masters: int = 0, exit_with_parent: bool = True) -> None:
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        self._owner_pid = os.getpid()       # a forked child inherits this object, not the nodes
        self._lock = DirectoryLock(self.path)
        self._lock.acquire(self._running_elsewhere)
        try:
            self._setup(storages, replicas, partitions, cluster, tls)
        except BaseException:
            self._lock.release()
            raise
        self.master_args, self.storage_args = tuple(master_args), tuple(storage_args)
        self.node_timeout_s = node_timeout_s
        self.log_level = log_level
        self.metrics = metrics
        self.standby_masters = standby_masters
        self.exit_with_parent = exit_with_parent
        self.master_proc: subprocess.Popen | None = None
        self.standby_procs: dict[int, subprocess.Popen] = {}    # index >= 1
        self.standby_addresses: dict[int, str] = {}
        self.address: str | None = None
        self._stderr: dict[subprocess.Popen, tuple[str, int]] = {}     # its .err file, and where this run began

    def _setup(self, storages: int, replicas: int, partitions: int, cluster: str | None, tls: bool | None):
        os.makedirs(os.path.join(self.path, "logs"), exist_ok=True)
        self.cluster = cluster or self._cluster_name()
        self.token_file = os.path.join(self.path, security.TOKEN_FILE)
        self.admin_token = security.write_token(self.token_file)
        self.tls_dir = os.path.join(self.path, security.TLS_DIR)
        if tls:
            security.generate(self.tls_dir, self.cluster)
        self.tls = tls is not False and security.cluster_tls(self.path, "client") is not None
        self._slots: dict[int, StorageSlot] = dict(enumerate(self._find_storages()))
        self.storages = max(storages, len(self._slots))
        self.replicas = replicas
        self.partitions = partitions

    def _cluster_name(self) -> str:
        name_file = os.path.join(self.path, "cluster.name")
        if os.path.exists(name_file):
            return open(name_file).read().strip()
        name = f"neoarray-{secrets.token_hex(4)}"
        with open(name_file, "w") as f:
            f.write(name)
        return name

    # -- who runs the directory -------------------------------------------------------
    def _read(self, name: str, default: str = "") -> str:
        try:
            with open(os.path.join(self.path, name)) as f:
                return f.read().strip()
        except OSError:
            return default

    def _use_it(self) -> str:
        address = self._read("masters.address") or self._read("master.address", "(address unknown)")
        return (f"use that cluster (neoctl --dir {self.path} ..., or neoarray.open(master={address!r}, "
                f"cluster={self._read('cluster.name')!r}))")

    def _running_elsewhere(self, pid: int | None) -> str:
        address = self._read("masters.address") or self._read("master.address", "(address unknown)")
        if pid == os.getpid():
            who = f"by this process, pid {pid}: close the other database or cluster first"
        else:
            who = "an unknown process" if pid is None else f"process {pid}" + (
                "" if pid_alive(pid) else f", which has ended: a process it forked holds {self._lock.path}")
        return (f"{self.path} is already running at {address} ({who}): {self._use_it()}, "
                f"or stop it first (neoctl --dir {self.path} stop)")

    def _started_elsewhere(self, procs) -> str:
        pids = " ".join(str(p.pid) for p in procs)
        parents = ", ".join(str(p) for p in sorted({p.ppid for p in procs}))
        return (f"{self.path} is served by node processes {pids}, started by process {parents}, which "
                f"still runs: {self._use_it()}, or stop them first (kill {pids})")

    def _clear_stale(self) -> None:
        """Stop node processes an ended process left over the directory, and the
        ``storage-K`` links of renamed nodes that no longer run."""
        ours = {s.proc.pid for s in self._slots.values() if s.running}
        ours |= {p.pid for p in [self.master_proc, *self.standby_procs.values()] if p and p.poll() is None}
        stale = stop_stale_nodes(self.path, self._started_elsewhere, exclude=ours)
        if stale:
            log.warning("stopped node processes %s left running over %s by a process that ended", stale, self.path)
        links = {s.link for s in self._slots.values() if s.running}
        for entry in os.listdir(self.path):
            full = os.path.join(self.path, entry)
            if UNNAMED.fullmatch(entry) and os.path.islink(full) and full not in links:
                os.unlink(full)
        for slot in self._slots.values():
            if slot.link not in links:
                slot.link = None

    # -- processes ----------------------------------------------------------------------
    def _spawn(self, module: str, args: list[str], log_name: str) -> subprocess.Popen:
        log_file = os.path.join(self.path, "logs", log_name)
        tie = ["--exit-with-parent", str(os.getpid())] if self.exit_with_parent else []
        cmd = [sys.executable, "-m", module, "--cluster", self.cluster, "--log-level", self.log_level,
               "--log-file", log_file, *tie, *args]
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        with open(log_file + ".err", "ab") as err:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            self._stderr[proc] = (err.name, err.tell())
        return proc

    def _new_stderr(self, proc: subprocess.Popen) -> tuple[str, str]:
        """The ``.err`` file of ``proc`` and what this run of it wrote there."""
        path, offset = self._stderr.get(proc, ("", 0))
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return path, f.read().decode(errors="replace")
        except OSError:
            return path, ""

    def _wait_file(self, path: str, proc: subprocess.Popen, timeout_s: float, what: str) -> str:
        """The content of ``path`` once ``proc`` wrote it.  Raises :class:`_PortTaken`
        when ``proc`` could not listen on its address, :class:`NeoError` when it exited
        otherwise, :class:`ClusterUnavailable` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if os.path.exists(path):
                return open(path).read().strip()
            if proc.poll() is not None:
                err_path, err = self._new_stderr(proc)
                lines = err.strip().splitlines()[-ERR_LINES_MAX:]
                if any(taken in line for line in lines for taken in PORT_TAKEN):
                    raise _PortTaken(lines[-1])
                raise NeoError(f"{what} exited with status {proc.returncode}: "
                               + ("\n".join(lines) or "(nothing on standard error)")
                               + f"\n(standard error in {err_path}, log in {err_path[:-4]})")
            time.sleep(0.02)
        raise ClusterUnavailable(f"{what} did not write {path} within {timeout_s} s "
                                 f"(see {self._stderr.get(proc, ('its log',))[0]})")

    def _recorded(self, name: str) -> str:
        """Where node ``name`` listened last time (``name.address``), else any free port."""
        return self._read(f"{name}.address") or "127.0.0.1:0"

    def _listen(self, name: str, proc: subprocess.Popen, bind: str, spawn, timeout_s: float):
        """Wait for ``proc``, node ``name`` started at ``bind``, to listen, and record its
        address in ``name.address``.  When ``bind`` is a recorded port that another
        program took meanwhile, it is started again on a free port (``spawn(bind)``).
        Returns ``(process, address)``."""
        fresh = os.path.join(self.path, f"{name}.address.new")
        try:
            address = self._wait_file(fresh, proc, timeout_s, name)
        except _PortTaken as exc:
            if bind.endswith(":0"):
                raise NeoError(f"{name} could not listen on a free port: {exc}") from None
            log.warning("%s: %s (taken by another program): listening on a free port instead", name, exc)
            proc = spawn(bind.rpartition(":")[0] + ":0")
            address = self._wait_file(fresh, proc, timeout_s, name)
        os.replace(fresh, os.path.join(self.path, f"{name}.address"))
        return proc, address

    def _fresh_address_file(self, name: str) -> str:
        """``name.address.new``, where a node starting writes its address (removed first)."""
        fresh = os.path.join(self.path, f"{name}.address.new")
        if os.path.exists(fresh):
            os.remove(fresh)
        return fresh

    def tls_of(self, role: str) -> security.TLSConfig | None:
        """The certificate of ``role`` (``master``, ``storage``, ``admin``, ``client``,
        ``reader``) when the cluster runs TLS, else ``None``."""
        return security.TLSConfig.in_dir(self.tls_dir, role) if self.tls else None

    def _security_args(self, role: str) -> list[str]:
        tls = self.tls_of(role)
        tls_args = ["--ca", tls.ca_path, "--cert", tls.cert_path, "--key", tls.key_path] if tls else []
        return [*tls_args, "--admin-token-file", self.token_file]

    def pids(self) -> dict[str, int]:
        """``{"master": pid, "master-1": pid, "S1": pid, ...}`` of the running nodes."""
        procs = {"master": self.master_proc, **{f"master-{i}": p for i, p in self.standby_procs.items()},
                 **{s.name: s.proc for s in self._slots.values()}}
        return {name: p.pid for name, p in procs.items() if p is not None and p.poll() is None}

    def log_path(self, node: str) -> str:
        """The log file of ``node`` (``master``, ``master-1``, ``S1``...; see :meth:`storage_name`)."""
        return os.path.join(self.path, "logs", f"{node}.log")

    # -- metrics ----------------------------------------------------------------------
    def _metrics_args(self, node: str) -> list[str]:
        """Options giving ``node`` a metrics port; its stale address file is removed
        (a node writes the new one before its gRPC address file)."""
        if not self.metrics:
            return []
        path = os.path.join(self.path, f"{node}.metrics")
        if os.path.exists(path):
            os.remove(path)
        return ["--metrics-bind", "127.0.0.1:0", "--metrics-address-file", path]

    def metrics_addresses(self) -> dict[str, str]:
        """``{"master": host:port, "S1": host:port, ...}`` of the nodes started with
        metrics (read from their ``.metrics`` files)."""
        nodes = (["master"] if self.master_proc else []) + [s.name for s in self._slots.values() if s.proc]
        out = {}
        for node in nodes:
            address = self._read(f"{node}.metrics")
            if address:
                out[node] = address
        return out

    # -- master -----------------------------------------------------------------------
    @property
    def masters(self) -> str:
        """Every master's address, ``host:port,host:port`` (the first master first)."""
        return ",".join([self.address, *(a for _, a in sorted(self.standby_addresses.items()))])

    def start_master(self, timeout_s: float = 30.0) -> str:
        """Start (or restart) the first master.  With standby masters it is given their
        addresses: restarted after one took over, it becomes a standby of it."""
        others = [a for _, a in sorted(self.standby_addresses.items())]
        proc, self.address = self._start_master_process(
            "master", ["--masters", ",".join(others)] if others else [], timeout_s)
        self.master_proc = proc
        self._write_masters()
        return self.address

    def start_standby_master(self, index: int | None = None, timeout_s: float = 30.0) -> str:
        """Start (or restart) standby master ``index`` (default: a new one), following the
        other masters; storages and clients started afterwards get its address."""
        index = index or max([0, *self.standby_addresses]) + 1
        others = [a for i, a in [(0, self.address), *sorted(self.standby_addresses.items())] if i != index and a]
        proc, address = self._start_master_process(f"master-{index}", ["--standby-of", ",".join(others)], timeout_s)
        self.standby_procs[index], self.standby_addresses[index] = proc, address
        self._write_masters()
        return address

    def _start_master_process(self, name: str, args: list[str], timeout_s: float, bind: str = "",
                              beside=None):
        """Start master ``name`` on ``bind`` (default: its recorded address) and wait
        until it listens; ``beside()`` is called once it is spawned."""
        def spawn(bind: str) -> subprocess.Popen:
            return self._spawn("master", [
                "--data", os.path.join(self.path, name), "--bind", bind,
                "--address-file", self._fresh_address_file(name),
                "--partitions", str(self.partitions), "--replicas", str(self.replicas),
                "--storages", str(self.storages), "--node-timeout-s", str(self.node_timeout_s),
                *self._metrics_args(name), *self._security_args("master"), *self.master_args, *args],
                f"{name}.log")
        bind = bind or self._recorded(name)
        proc = spawn(bind)
        if beside is not None:
            beside()
        return self._listen(name, proc, bind, spawn, timeout_s)

    def _write_masters(self) -> None:
        with open(os.path.join(self.path, "masters.address.tmp"), "w") as f:
            f.write(self.masters)
        os.replace(os.path.join(self.path, "masters.address.tmp"), os.path.join(self.path, "masters.address"))

    def kill_master(self, sig: int = signal.SIGKILL, index: int = 0) -> None:
        """Signal master ``index`` (0: the first one, else a standby) and wait for its end."""
        self._kill(self.master_proc if index == 0 else self.standby_procs.get(index), sig)

    # -- storages ---------------------------------------------------------------------
    def _find_storages(self) -> list[StorageSlot]:
        """The storage directories: ``S<id>`` by id, then ``storage-K`` by K (those not
        named yet, less the targets of ``S<id>`` links and the links of renamed ones)."""
        named, unnamed = [], []
        for entry in os.listdir(self.path):
            full = os.path.join(self.path, entry)
            if NAMED.fullmatch(entry) and os.path.isdir(full):
                named.append(StorageSlot(full, int(entry[1:])))
            elif UNNAMED.fullmatch(entry) and os.path.isdir(full) and not os.path.islink(full):
                unnamed.append(full)
        targets = {os.path.realpath(s.path) for s in named}
        unnamed = [p for p in unnamed if os.path.realpath(p) not in targets]
        return (sorted(named, key=lambda s: s.node_id)
                + [StorageSlot(p) for p in sorted(unnamed, key=lambda p: int(p.rpartition("-")[2]))])

    def _new_slot(self, index: int) -> StorageSlot:
        """A storage directory for a new node: ``storage-K``, K the first number free."""
        k = 1
        while os.path.lexists(os.path.join(self.path, f"storage-{k}")):
            k += 1
        path = os.path.join(self.path, f"storage-{k}")
        os.makedirs(path)
        self._slots[index] = StorageSlot(path)
        return self._slots[index]

    def storage_name(self, index: int) -> str:
        """What the master and ``neoctl`` call storage ``index`` (``S<id>``; ``storage-K``
        before it first joined).  Indexes follow the node ids after :meth:`start`."""
        return self._slots[index].name

    def storage_id(self, index: int) -> int:
        """The node id of storage ``index`` (0 before it first joined)."""
        return self._slots[index].node_id

    def storage_dir(self, index: int) -> str:
        """The data directory of storage ``index`` (``DIR/S<id>``, or ``DIR/storage-K`` before it joined)."""
        return self._slots[index].path

    @property
    def storage_procs(self) -> dict[int, subprocess.Popen]:
        """``{index: process}`` of the storage nodes this object started."""
        return {i: s.proc for i, s in self._slots.items() if s.proc is not None}

    def storage_pids(self) -> dict[str, int]:
        """``{"S1": pid, ...}``: the running storage processes by node name (as in
        :meth:`metrics_addresses` and neoctl)."""
        return {s.name: s.proc.pid for s in self._slots.values() if s.proc is not None}

    def start_storage(self, index: int, timeout_s: float = 30.0, args: tuple[str, ...] = ()) -> str:
        """Start storage node ``index`` (a new one when the directory has no such
        storage); ``args``: more ``neoarray-storage`` options (e.g.
        ``("--replication-bytes-per-s", "100000")``).

        Returns
        -------
        str
            Its ``host:port``.

        Raises
        ------
        ClusterUnavailable
            It did not start or join within ``timeout_s`` (its log says why).
        """
        self._spawn_storage(index, args)
        address = self._wait_storage(index, timeout_s)
        self._name_storages([index], timeout_s)
        return address

    def _spawn_storage(self, index: int, args: tuple[str, ...] = ()) -> None:
        slot = self._slots.get(index) or self._new_slot(index)
        if slot.link and not slot.running:      # the node that used the old path is gone
            if os.path.islink(slot.link):
                os.unlink(slot.link)
            slot.link = None
        slot.args, slot.bind = tuple(args), self._recorded(slot.name)
        slot.proc = self._storage_process(slot, slot.bind)

    def _storage_process(self, slot: StorageSlot, bind: str) -> subprocess.Popen:
        return self._spawn("storage_node", [
            "--data", slot.path, "--master", self.masters, "--bind", bind,
            "--address-file", self._fresh_address_file(slot.name),
            *self._metrics_args(slot.name), *self._security_args("storage"), *self.storage_args, *slot.args],
            f"{slot.name}.log")

    def _wait_storage(self, index: int, timeout_s: float) -> str:
        slot = self._slots[index]
        slot.proc, address = self._listen(slot.name, slot.proc, slot.bind,
                                          lambda bind: self._storage_process(slot, bind), timeout_s)
        return address

    def _name_storages(self, indexes, timeout_s: float) -> None:
        """Name the new nodes of ``indexes`` after the ids the master gave them."""
        new = [self._slots[i] for i in indexes if not self._slots[i].node_id]
        if not new:
            return
        admin = self.admin()
        try:
            for slot in new:
                self._rename(slot, self._node_id_of(admin, slot, timeout_s))
        finally:
            admin.close()

    def _node_id_of(self, admin: AdminClient, slot: StorageSlot, timeout_s: float) -> int:
        address = self._read(f"{slot.name}.address")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                for n in admin.nodes():
                    if (n.type is NodeType.STORAGE and n.data_path == slot.path and n.address == address
                            and n.state is not NodeState.DOWN):
                        return n.node_id
            except ClusterUnavailable:
                pass
            if slot.proc.poll() is not None:
                err_path, err = self._new_stderr(slot.proc)
                raise NeoError(f"storage node {slot.name} exited with status {slot.proc.returncode} before "
                               f"the master knew it: {err.strip()[-2000:]}\n(see {err_path[:-4]})")
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"the master did not know storage node {slot.name} ({slot.path}) "
                                         f"within {timeout_s} s (see {self.log_path(slot.name)})")
            time.sleep(0.05)

    def _rename(self, slot: StorageSlot, node_id: int) -> None:
        """``storage-K`` becomes ``S<id>``: its directory (``storage-K`` is left as a
        link while this process of the node runs), address, metrics and log files."""
        old = slot.name
        target = os.path.join(self.path, f"S{node_id}")
        if os.path.lexists(target):
            raise NeoError(f"{slot.path} holds storage node S{node_id}, but {target} exists too: two copies "
                           f"of one node's data? Stop the cluster and keep one of them")
        try:
            os.rename(slot.path, target)
        except OSError:         # a mount point, or another filesystem: S<id> links to it
            os.symlink(os.path.basename(slot.path), target)
        else:
            os.symlink(os.path.basename(target), slot.path)
            slot.link = slot.path
        slot.path, slot.node_id = target, node_id
        for name in (f"{old}.address", f"{old}.metrics", f"logs/{old}.log", f"logs/{old}.log.err"):
            new = name.replace(old, slot.name)
            if os.path.exists(os.path.join(self.path, name)):
                os.replace(os.path.join(self.path, name), os.path.join(self.path, new))
        offset = self._stderr.get(slot.proc, ("", 0))[1]
        self._stderr[slot.proc] = (self.log_path(slot.name) + ".err", offset)
        log.info("storage node %s of %s is %s (the master's id)", old, self.path, slot.name)

    def kill_storage(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Signal storage node ``index`` (default SIGKILL) and wait for its end."""
        slot = self._slots.get(index)
        self._kill(slot.proc if slot else None, sig)

    @staticmethod
    def _kill(proc, sig) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(30)

    # -- whole cluster ------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> LocalCluster:
        """Start every node (stopping first what an ended process left running over
        the directory); storage indexes then follow the node ids.

        Returns
        -------
        LocalCluster
            This cluster, running.

        Raises
        ------
        ClusterUnavailable
            A node did not start, or the cluster was not running within ``timeout_s``.
        """
        self._lock.acquire(self._running_elsewhere)
        self._clear_stale()
        if self.standby_masters > len(self.standby_addresses):
            self.start_master(timeout_s)
            for _ in range(self.standby_masters - len(self.standby_addresses)):
                self.start_standby_master(timeout_s=timeout_s)
            for i in range(self.storages):
                self._spawn_storage(i)
        else:
            self._start_master_beside_storages(timeout_s)
        for i in range(self.storages):
            self._wait_storage(i, timeout_s)
        self._name_storages(range(self.storages), timeout_s)
        slots = sorted(self._slots.values(), key=lambda s: (not s.node_id, s.node_id))
        self._slots = dict(enumerate(slots))
        self.wait_state("RUNNING", timeout_s)
        return self

    def _start_master_beside_storages(self, timeout_s: float) -> None:
        """Start the master and the storage nodes at once (each process takes a few
        tenths of a second to start): the master on its recorded address, or on a free
        port chosen here, which the storages are given.  Should another program take
        that port meanwhile, the master listens on another one and the storages are
        started again with it."""
        others = [a for _, a in sorted(self.standby_addresses.items())]
        bind = self._recorded("master")
        if bind.endswith(":0"):
            bind = f"127.0.0.1:{free_port()}"
        self.address = bind                 # what the storages are told
        proc, address = self._start_master_process(
            "master", ["--masters", ",".join(others)] if others else [], timeout_s, bind=bind,
            beside=lambda: [self._spawn_storage(i) for i in range(self.storages)])
        self.master_proc, self.address = proc, address
        self._write_masters()
        if address != bind:
            log.info("the master of %s listens on %s, not %s: starting the storage nodes again",
                     self.path, address, bind)
            for i in range(self.storages):
                self.kill_storage(i)
                self._spawn_storage(i)

    def admin(self) -> AdminClient:
        """An Admin client with the cluster's admin credentials (certificate, token)."""
        return AdminClient(self.masters, self.cluster, tls=self.tls_of("admin"), admin_token=self.admin_token)

    def wait_state(self, state: str, timeout_s: float = 60.0) -> None:
        """Wait until the master says the cluster is in ``state`` (``RUNNING``...).

        Raises
        ------
        ClusterUnavailable
            Not within ``timeout_s``.
        """
        admin = self.admin()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if admin.cluster_state() == state:
                        return
                except ClusterUnavailable:
                    pass
                if time.monotonic() > deadline:
                    raise ClusterUnavailable(f"cluster did not reach {state} within {timeout_s} s")
                time.sleep(0.05)
        finally:
            admin.close()

    def storage_kwargs(self, role: str = "client") -> dict:
        """``NeoStorage`` arguments of a client with the ``role`` certificate (TLS)."""
        tls = self.tls_of(role)
        return {"master": self.masters, "cluster": self.cluster, **(tls.options() if tls else {})}

    def open_storage(self, **kw: Any) -> NeoStorage:
        """A new client of this cluster (``kw``: more ``NeoStorage`` arguments)."""
        from .client import NeoStorage
        return NeoStorage(**self.storage_kwargs(), **kw)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout_s``) and give up the
        directory (another process may run it then).  Does nothing in a process forked
        from the one that started the nodes (``atexit`` handlers are inherited)."""
        if os.getpid() != self._owner_pid:
            return
        procs = [p for p in [*self.storage_procs.values(), self.master_proc, *self.standby_procs.values()]
                 if p is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for slot in self._slots.values():
            if slot.link and os.path.islink(slot.link):
                os.unlink(slot.link)
            slot.link = None
        self._lock.release()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

