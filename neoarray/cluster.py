"""``LocalCluster``: a master and storage nodes as local processes over one directory.

Layout of the directory: ``cluster.name`` (the cluster name, chosen at creation),
``master/`` (the master's state), ``master.address`` (its ``host:port``, reused on
restart so clients find it again), ``storage-N/`` (LMDB of storage node N),
``logs/`` (one log file per node), ``admin.token`` (0600: the admin credential that
``neoctl --dir`` and ``admin()`` send; the master refuses Admin RPCs without it) and,
for a cluster made with ``tls=True``, ``tls/`` (a CA and a certificate per role, see
``neoarray.security.generate``): every node then talks mutual TLS.  With
``metrics=True`` every node serves Prometheus metrics on a free port of 127.0.0.1,
written to ``master.metrics`` and ``storage-N.metrics`` (``host:port``; see
:meth:`LocalCluster.metrics_addresses`).  Standby masters (``start_standby_master``)
keep their state in ``master-N/`` and their address in ``master-N.address``;
``masters.address`` lists every master (``host:port,host:port``: what storages,
clients and ``neoctl --dir`` are given).
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

from . import security
from .admin import AdminClient
from .errors import ClusterUnavailable, NeoError


class LocalCluster:
    def __init__(self, path: str, storages: int = 1, replicas: int = 0, partitions: int = 12,
                 cluster: str | None = None, node_timeout_s: float = 5.0, log_level: str = "INFO",
                 metrics: bool = False, master_args: tuple[str, ...] = (),
                 storage_args: tuple[str, ...] = (), tls: bool | None = None,
                 standby_masters: int = 0):
        """``master_args``/``storage_args``: more ``neoarray-master``/``neoarray-storage``
        options for every start (limits such as ``("--message-bytes-max", "65536")``).
        ``tls``: True makes the directory's CA and certificates (once) and runs every
        node with mutual TLS; None (default) does so when the directory has them."""
        self.path = os.path.abspath(path)
        self.master_args, self.storage_args = tuple(master_args), tuple(storage_args)
        os.makedirs(os.path.join(self.path, "logs"), exist_ok=True)
        self.cluster = cluster or self._cluster_name()
        self.token_file = os.path.join(self.path, security.TOKEN_FILE)
        self.admin_token = security.write_token(self.token_file)
        self.tls_dir = os.path.join(self.path, security.TLS_DIR)
        if tls:
            security.generate(self.tls_dir, self.cluster)
        self.tls = tls is not False and security.cluster_tls(self.path, "client") is not None
        self.storages = storages
        self.replicas = replicas
        self.partitions = partitions
        self.node_timeout_s = node_timeout_s
        self.log_level = log_level
        self.metrics = metrics
        self.standby_masters = standby_masters
        self.master_proc: subprocess.Popen | None = None
        self.standby_procs: dict[int, subprocess.Popen] = {}    # index >= 1
        self.standby_addresses: dict[int, str] = {}
        self.storage_procs: dict[int, subprocess.Popen] = {}
        self.address: str | None = None

    def _cluster_name(self) -> str:
        name_file = os.path.join(self.path, "cluster.name")
        if os.path.exists(name_file):
            return open(name_file).read().strip()
        name = f"neoarray-{secrets.token_hex(4)}"
        with open(name_file, "w") as f:
            f.write(name)
        return name

    def _spawn(self, module: str, args: list[str], log: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", module, "--cluster", self.cluster, "--log-level", self.log_level,
               "--log-file", os.path.join(self.path, "logs", log), *args]
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(self.path, "logs", log + ".err"), "ab"))

    def _wait_file(self, path: str, proc: subprocess.Popen, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if os.path.exists(path):
                return open(path).read().strip()
            if proc.poll() is not None:
                err = open(self._errlog(proc)).read()[-2000:] if self._errlog(proc) else ""
                raise NeoError(f"{proc.args[2]} exited with status {proc.returncode}: {err}")
            time.sleep(0.02)
        raise ClusterUnavailable(f"{path} did not appear within {timeout_s} s")

    def tls_of(self, role: str) -> security.TLSConfig | None:
        """The certificate of ``role`` (``master``, ``storage``, ``admin``, ``client``,
        ``reader``) when the cluster runs TLS, else ``None``."""
        return security.TLSConfig.in_dir(self.tls_dir, role) if self.tls else None

    def _security_args(self, role: str) -> list[str]:
        tls = self.tls_of(role)
        tls_args = ["--ca", tls.ca_path, "--cert", tls.cert_path, "--key", tls.key_path] if tls else []
        return [*tls_args, "--admin-token-file", self.token_file]

    def _errlog(self, proc):
        log = proc.args[proc.args.index("--log-file") + 1]
        return log + ".err" if os.path.exists(log + ".err") else None

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
        """``{"master": host:port, "storage-0": host:port, ...}`` of the nodes started
        with metrics (read from their ``.metrics`` files)."""
        nodes = (["master"] if self.master_proc else []) + [f"storage-{i}" for i in sorted(self.storage_procs)]
        out = {}
        for node in nodes:
            path = os.path.join(self.path, f"{node}.metrics")
            if os.path.exists(path):
                with open(path) as f:
                    out[node] = f.read().strip()
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

    def _start_master_process(self, name: str, args: list[str], timeout_s: float):
        addr_file = os.path.join(self.path, f"{name}.address")
        bind = open(addr_file).read().strip() if os.path.exists(addr_file) else "127.0.0.1:0"
        fresh = addr_file + ".new"
        if os.path.exists(fresh):
            os.remove(fresh)
        proc = self._spawn("master", [
            "--data", os.path.join(self.path, name), "--bind", bind, "--address-file", fresh,
            "--partitions", str(self.partitions), "--replicas", str(self.replicas),
            "--storages", str(self.storages), "--node-timeout-s", str(self.node_timeout_s),
            *self._metrics_args(name), *self._security_args("master"), *self.master_args, *args],
            f"{name}.log")
        address = self._wait_file(fresh, proc, timeout_s)
        os.replace(fresh, addr_file)
        return proc, address

    def _write_masters(self) -> None:
        with open(os.path.join(self.path, "masters.address.tmp"), "w") as f:
            f.write(self.masters)
        os.replace(os.path.join(self.path, "masters.address.tmp"), os.path.join(self.path, "masters.address"))

    def kill_master(self, sig: int = signal.SIGKILL, index: int = 0) -> None:
        """Signal master ``index`` (0: the first one, else a standby) and wait for its end."""
        self._kill(self.master_proc if index == 0 else self.standby_procs.get(index), sig)

    # -- storages ---------------------------------------------------------------------
    def start_storage(self, index: int, timeout_s: float = 30.0, args: tuple[str, ...] = ()) -> str:
        """Start storage node ``index``; ``args``: more ``neoarray-storage`` options
        (e.g. ``("--replication-bytes-per-s", "100000")``)."""
        return self._wait_storage(index, self._spawn_storage(index, args), timeout_s)

    def _spawn_storage(self, index: int, args: tuple[str, ...] = ()) -> str:
        addr_file = os.path.join(self.path, f"storage-{index}.address")
        bind = open(addr_file).read().strip() if os.path.exists(addr_file) else "127.0.0.1:0"
        fresh = addr_file + ".new"
        if os.path.exists(fresh):
            os.remove(fresh)
        self.storage_procs[index] = self._spawn("storage_node", [
            "--data", os.path.join(self.path, f"storage-{index}"), "--master", self.masters,
            "--bind", bind, "--address-file", fresh, *self._metrics_args(f"storage-{index}"),
            *self._security_args("storage"), *self.storage_args, *args], f"storage-{index}.log")
        return addr_file

    def _wait_storage(self, index: int, addr_file: str, timeout_s: float) -> str:
        address = self._wait_file(addr_file + ".new", self.storage_procs[index], timeout_s)
        os.replace(addr_file + ".new", addr_file)
        return address

    def kill_storage(self, index: int, sig: int = signal.SIGKILL) -> None:
        self._kill(self.storage_procs.get(index), sig)

    @staticmethod
    def _kill(proc, sig) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(30)

    # -- whole cluster ------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> LocalCluster:
        self.start_master(timeout_s)
        for _ in range(self.standby_masters - len(self.standby_addresses)):
            self.start_standby_master(timeout_s=timeout_s)
        spawned = {i: self._spawn_storage(i) for i in range(self.storages)}
        for i, addr_file in spawned.items():
            self._wait_storage(i, addr_file, timeout_s)
        self.wait_state("RUNNING", timeout_s)
        return self

    def admin(self) -> AdminClient:
        """An Admin client with the cluster's admin credentials (certificate, token)."""
        return AdminClient(self.masters, self.cluster, tls=self.tls_of("admin"), admin_token=self.admin_token)

    def wait_state(self, state: str, timeout_s: float = 60.0) -> None:
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

    def open_storage(self, **kw):
        from .client import NeoStorage
        return NeoStorage(**self.storage_kwargs(), **kw)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout_s``)."""
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

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
