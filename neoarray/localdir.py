"""Who runs a ``LocalCluster`` directory: its lock, and node processes left behind.

``DIR/lock`` holds the pid of the process running the cluster of ``DIR`` and is
locked (``flock``) while it runs; the kernel drops the lock when that process ends,
however it ends, so a lock is never stale.  A second process (a second ``neoarray
cluster up DIR``, or ``neoarray.open(DIR)``) finds it locked and is refused before it
writes anything in ``DIR``.

Node processes over ``DIR`` (their ``--data`` is in ``DIR``) found by the lock owner
are leftovers: the nodes of a process that ended (started with ``--exit-with-parent
PID``: they are stopping by themselves), or of an older neoarray version whose nodes
outlived their process (their parent is now init).  They are stopped (SIGTERM, then
SIGKILL).  Nodes whose parent still runs (a cluster started by hand over ``DIR``) are
not ours to stop: the caller is told which processes they are.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time

from .errors import DirectoryInUse, NeoError

LOCK_FILE = "lock"
NODE_MODULES = ("master", "storage_node")       # ``python -m`` modules LocalCluster runs
NODE_SCRIPTS = ("neoarray-master", "neoarray-storage")
STALE_STOP_S = 10.0         # SIGTERM, then SIGKILL


class DirectoryLock:
    """``DIR/lock``, held (``flock``, exclusive) by the process running ``DIR``."""

    def __init__(self, path: str):
        self.path = os.path.join(path, LOCK_FILE)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, describe) -> None:
        """Lock, or raise :class:`DirectoryInUse` with ``describe(pid)`` (``pid``: the
        owner's, or None when unknown); nothing is written unless the lock is ours."""
        if self._fd is not None:
            return
        import fcntl
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(fd)
            os.close(fd)
            raise DirectoryInUse(describe(owner)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)      # closing the last descriptor drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # someone else's process
        return True
    return True


@dataclasses.dataclass(frozen=True)
class NodeProcess:
    pid: int
    ppid: int
    argv: tuple[str, ...]

    def option(self, name: str) -> str | None:
        argv = self.argv
        return next((argv[i + 1] for i in range(len(argv) - 1) if argv[i] == name), None)

    @property
    def orphaned(self) -> bool:
        """Its starting process has ended (the node was handed to init or a subreaper)."""
        parent = self.option("--exit-with-parent")
        if parent is not None and parent.isdigit():
            return self.ppid != int(parent) or not pid_alive(int(parent))
        return self.ppid <= 1


def node_processes(path: str) -> list[NodeProcess]:
    """Master and storage node processes whose ``--data`` directory is in ``path``."""
    path = os.path.abspath(path)
    found = []
    for proc in _processes():
        if proc.pid == os.getpid() or not _is_node(proc.argv):
            continue
        data = proc.option("--data")
        if data and os.path.dirname(os.path.abspath(data)) == path:
            found.append(proc)
    return found


def _is_node(argv) -> bool:
    if any(os.path.basename(a) in NODE_SCRIPTS for a in argv[:2]):
        return True
    return any(argv[i] == "-m" and argv[i + 1] in NODE_MODULES for i in range(len(argv) - 1))


def _processes():
    """Every process's (pid, ppid, argv) visible to us: /proc, else ``ps``."""
    if os.path.isdir("/proc/self"):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                proc = _proc_entry(int(entry))
                if proc is not None:
                    yield proc
        return
    out = subprocess.run(["ps", "-axo", "pid=,ppid=,args="], check=False, capture_output=True, text=True, timeout=30)
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].isdigit() and fields[1].isdigit():
            yield NodeProcess(int(fields[0]), int(fields[1]), tuple(fields[2:]))


def _proc_entry(pid: int) -> NodeProcess | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = tuple(a.decode(errors="replace") for a in f.read().split(b"\0")[:-1])
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:         # gone meanwhile, or not ours to read
        return None
    ppid = int(stat[stat.rindex(b")") + 2:].split()[1])     # after "(comm) state"
    return NodeProcess(pid, ppid, argv)


def stop_stale_nodes(path: str, in_use, exclude=(), timeout_s: float = STALE_STOP_S) -> list[int]:
    """Stop the orphaned node processes of ``path`` but ``exclude`` (pids); return their
    pids.  Raises :class:`DirectoryInUse` with ``in_use(processes)`` when some still
    have their parent (nothing is stopped then)."""
    procs = [p for p in node_processes(path) if p.pid not in exclude]
    owned = [p for p in procs if not p.orphaned]
    if owned:
        raise DirectoryInUse(in_use(owned))
    pids = [p.pid for p in procs]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if _wait_gone(pids, timeout_s):
            return pids
    raise NeoError(f"node processes {pids} over {path} survived SIGKILL for {timeout_s:.0f} s")


def _wait_gone(pids: list[int], timeout_s: float) -> bool:
    """Wait for ``pids`` to end (they are not our children: their pids are polled)."""
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) and not _zombie(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:].split()[0] == b"Z"
