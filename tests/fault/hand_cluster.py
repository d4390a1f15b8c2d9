"""A cluster run as an operator runs one by hand: ``neoarray-master`` and
``neoarray-storage`` command lines (the console scripts of this environment), each on a
fixed address, each restarted after ``kill -9`` with the very same command line.

Two masters, both given the other's address with ``--masters``: the first to start is
the primary, the other a standby; a restarted master asks the other first and becomes
its standby if it took over.  No TLS and no admin token (the fault tests are about
durability, the security tests cover the rest).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from master.standby import ask_role
from neoarray.admin import AdminClient
from neoarray.errors import ClusterUnavailable, NeoError
from neoarray.proto import standby_pb2

BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HandCluster:
    def __init__(self, path: str, storages: int, replicas: int, partitions: int,
                 masters: int = 2, node_timeout_s: float = 2.0, cluster: str = "hand"):
        self.path, self.cluster = path, cluster
        os.makedirs(os.path.join(path, "logs"), exist_ok=True)
        self.master_addresses = [f"127.0.0.1:{free_port()}" for _ in range(masters)]
        self.masters = ",".join(self.master_addresses)
        self.commands: dict[str, list[str]] = {}
        for i, address in enumerate(self.master_addresses):
            others = ",".join(a for a in self.master_addresses if a != address)
            self.commands[f"master-{i}"] = [
                os.path.join(BIN, "neoarray-master"), "--cluster", cluster, "--data", os.path.join(path, f"master-{i}"),
                "--bind", address, "--partitions", str(partitions), "--replicas", str(replicas),
                "--storages", str(storages), "--node-timeout-s", str(node_timeout_s),
                *(["--masters", others] if others else []), "--log-file", os.path.join(path, "logs", f"master-{i}.log")]
        for i in range(storages):
            self.commands[f"storage-{i}"] = [
                os.path.join(BIN, "neoarray-storage"), "--cluster", cluster, "--master", self.masters,
                "--data", os.path.join(path, f"storage-{i}"), "--bind", f"127.0.0.1:{free_port()}",
                "--log-file", os.path.join(path, "logs", f"storage-{i}.log")]
        self.procs: dict[str, subprocess.Popen] = {}
        self.storages = storages

    # -- processes ------------------------------------------------------------------
    def start(self, name: str) -> None:
        """Start node ``name`` (``master-I``, ``storage-I``) with its command line."""
        assert name not in self.procs or self.procs[name].poll() is not None, f"{name} is running"
        with open(os.path.join(self.path, "logs", f"{name}.err"), "ab") as err:
            self.procs[name] = subprocess.Popen(self.commands[name], stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=err)

    def kill(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)

    def freeze(self, name: str, frozen_s: float) -> bool:
        """Stop node ``name`` (SIGSTOP) for ``frozen_s``, then let it go on (SIGCONT):
        a pause of the whole process, as a long stall of its machine, or a network
        cut both ways that its peers cannot tell from one.  False when it was not
        running."""
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(frozen_s)
        finally:
            proc.send_signal(signal.SIGCONT)
        return True

    def revive(self) -> list[str]:
        """Start again every node whose process ended by itself (a master that stepped
        down for a newer one exits with status 3), as a supervisor would; their names
        and exit statuses."""
        ended = [(name, p.returncode) for name, p in self.procs.items() if p.poll() is not None]
        for name, _ in ended:
            self.start(name)
        return [f"{name} (exit status {status})" for name, status in ended]

    def role(self, name: str):
        """The ``RoleReply`` of master ``name`` (None: it does not answer)."""
        return ask_role(self.master_addresses[int(name.split("-")[1])], self.cluster, 2.0)

    def start_all(self, timeout_s: float = 60.0) -> None:
        self.start("master-0")
        self.wait_primary(timeout_s)
        for name in self.commands:
            if name != "master-0":
                self.start(name)
        self.wait_state("RUNNING", timeout_s)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- roles and state --------------------------------------------------------------
    def primary(self) -> str | None:
        """The name of the master answering as primary (None: none does)."""
        for i, address in enumerate(self.master_addresses):
            if self.procs.get(f"master-{i}") is None or self.procs[f"master-{i}"].poll() is not None:
                continue
            role = ask_role(address, self.cluster, 2.0)
            if role is not None and role.role == standby_pb2.PRIMARY:
                return f"master-{i}"
        return None

    def wait_primary(self, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            name = self.primary()
            if name is not None:
                return name
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"no master primary within {timeout_s} s")
            time.sleep(0.1)

    def admin(self) -> AdminClient:
        return AdminClient(self.masters, self.cluster)

    def wait_state(self, state: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            admin = None
            try:
                admin = self.admin()
                if admin.cluster_state() == state:
                    return
            except NeoError:
                pass
            finally:
                if admin is not None:
                    admin.close()
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"cluster did not reach {state} within {timeout_s} s")
            time.sleep(0.1)

    def storage_kwargs(self) -> dict:
        return {"master": self.masters, "cluster": self.cluster}

    def neoctl(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(BIN, "neoctl"), "-a", self.masters, "-c", self.cluster, *args],
                              capture_output=True, text=True, timeout=300, check=False)
