"""An embedded cluster (``neoarray.open(path)``) and ``neoarray cluster up`` never outlive
their process, and a directory left behind by one reopens.

Every test runs real processes: a child Python process opens the cluster and ends in
one way or another, and the test polls for its node processes to be gone.
"""
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest

import neoarray
from neoarray.errors import DirectoryInUse
from neoarray.localdir import node_processes
from neoarray.states import NodeType

GONE_WAIT_S = 15.0      # a node notices its parent is gone within 0.2 s, then stops cleanly

CHILD = r"""
import json, os, sys, time
import neoarray
path, how = sys.argv[1], sys.argv[2]
db = neoarray.open(path)
print(json.dumps(db.local_cluster.pids()), flush=True)
if how == "exception":
    raise RuntimeError("an uncaught exception, db not closed")
if how == "os._exit":
    os._exit(3)
if how == "return":
    sys.exit(0)                 # a normal exit without db.close()
time.sleep(600)                 # killed by the test
"""

OLD_VERSION_CHILD = r"""
import json, os, sys
from neoarray.cluster import LocalCluster
c = LocalCluster(sys.argv[1], exit_with_parent=False).start()   # nodes as older versions ran them
print(json.dumps(c.pids()), flush=True)
os._exit(0)
"""


def read_line(proc: subprocess.Popen, timeout_s: float = 120.0) -> str:
    """The next line of ``proc``'s standard output, or fail after ``timeout_s``."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise AssertionError(f"no output from {proc.args} within {timeout_s} s")
    line = proc.stdout.readline()
    assert line, f"{proc.args} exited ({proc.wait(30)}): {proc.stderr.read()}"
    return line


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def alive(pid: int) -> bool:
    """Running (a zombie left for init to reap has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids, timeout_s: float = GONE_WAIT_S) -> list[int]:
    """Wait for ``pids`` to end; return those still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def kill_all(pids) -> None:
    """Cleanup: SIGKILL what a failed test left running (these pids only)."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def run_child(script: str, *args: str) -> tuple[subprocess.Popen, dict[str, int]]:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        return proc, json.loads(read_line(proc))
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise


def commit_and_read(path: str, key: str) -> None:
    with neoarray.open(path) as db:
        with db.transaction() as conn:
            conn.root()[key] = conn.root().get(key, 0) + 1
        with db.transaction() as conn:
            assert conn.root()[key] >= 1


@pytest.mark.parametrize("how", ["sigkill", "sigterm", "exception", "os._exit", "return"])
def test_nodes_end_with_the_process_that_opened_them(tmp_path, how):
    path = str(tmp_path / "db")
    proc, pids = run_child(CHILD, path, how)
    try:
        assert set(pids) == {"master", "S1"} and all(alive(p) for p in pids.values())
        if how == "sigkill":
            proc.kill()
        elif how == "sigterm":
            proc.terminate()
        proc.wait(60)
        assert wait_gone(pids.values()) == [], f"nodes left running after {how}: {pids}"
        assert node_processes(path) == []
    finally:
        proc.kill()
        proc.wait(30)
        kill_all(pids.values())
    if how == "sigkill":        # the directory it left reopens, with its data
        commit_and_read(path, "after-kill")


def test_with_statement_closes_and_stops(tmp_path):
    path = str(tmp_path / "db")
    with neoarray.open(path) as db:
        with db.transaction() as conn:
            conn.root()["x"] = 1
        pids = db.local_cluster.pids()
    assert set(pids) == {"master", "S1"}
    assert wait_gone(pids.values(), 0.0) == []     # stopped and waited for by close()
    with neoarray.open(path) as db, db.transaction() as conn:
        assert conn.root()["x"] == 1


def test_master_address_taken_by_another_program_is_replaced(tmp_path):
    path = str(tmp_path / "db")
    commit_and_read(path, "k")
    recorded = read_text(os.path.join(path, "master.address"))
    host, _, port = recorded.rpartition(":")
    squatter = socket.socket()
    try:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((host, int(port)))
        squatter.listen()
        with neoarray.open(path) as db:
            with db.transaction() as conn:
                assert conn.root()["k"] == 1
            now = read_text(os.path.join(path, "master.address"))
            assert now != recorded
    finally:
        squatter.close()


def test_nodes_an_older_version_left_running_are_stopped(tmp_path):
    """Nodes that outlived their process (no --exit-with-parent, parent now init)."""
    path = str(tmp_path / "db")
    proc, pids = run_child(OLD_VERSION_CHILD, path)
    try:
        proc.wait(60)
        assert all(alive(p) for p in pids.values()), "the old-style nodes should outlive their process"
        commit_and_read(path, "k")
        assert wait_gone(pids.values(), 0.0) == []
    finally:
        kill_all(pids.values())


def test_a_cluster_started_by_hand_over_the_directory_is_left_alone(tmp_path):
    path = str(tmp_path / "db")
    os.makedirs(path)
    master = subprocess.Popen([sys.executable, "-m", "master", "--cluster", "by-hand", "--data",
                               os.path.join(path, "master"), "--address-file", os.path.join(path, "master.address")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not node_processes(path):
            assert time.monotonic() < deadline and master.poll() is None
            time.sleep(0.05)
        with pytest.raises(DirectoryInUse, match=rf"kill {master.pid}\)"):
            neoarray.open(path)
        assert master.poll() is None
    finally:
        master.kill()
        master.wait(30)


def test_second_cluster_up_is_refused_and_touches_nothing_then_sigkill_stops_the_nodes(tmp_path):
    path = str(tmp_path / "up")
    up = subprocess.Popen([sys.executable, "-m", "neoarray.cli", "cluster", "up", path, "--storages", "2"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = []
    try:
        first = read_line(up)
        assert "RUNNING; master at 127.0.0.1:" in first, first
        address = first.rsplit(" ", 1)[-1].strip()
        pids = [p.pid for p in node_processes(path)]
        assert len(pids) == 3
        before = {name: os.stat(os.path.join(path, "logs", name)) for name in os.listdir(os.path.join(path, "logs"))}
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "neoarray.cli", "cluster", "up", path],
                                check=False, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and time.monotonic() - t0 < 30
        assert f"already running at {address}" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        after = {name: os.stat(os.path.join(path, "logs", name)) for name in os.listdir(os.path.join(path, "logs"))}
        assert {n: (s.st_size, s.st_mtime_ns) for n, s in after.items()} == \
            {n: (s.st_size, s.st_mtime_ns) for n, s in before.items()}
        assert sorted(p.pid for p in node_processes(path)) == sorted(pids)

        up.kill()
        up.wait(60)
        assert wait_gone(pids) == [], "nodes of a SIGKILLed cluster up left running"
    finally:
        up.kill()
        up.wait(30)
        kill_all(pids)


def test_storage_names_follow_the_master(tmp_path):
    """Directories, address, metrics and log files are named S<id>, as neoctl says."""
    from neoarray.cluster import LocalCluster
    path = str(tmp_path / "c")
    os.makedirs(os.path.join(path, "storage-0"))      # as older versions named them
    with LocalCluster(path, storages=2, standby_masters=1, metrics=True) as c:
        admin = c.admin()
        try:
            ids = sorted(n.node_id for n in admin.nodes() if n.type is NodeType.STORAGE)
        finally:
            admin.close()
        names = [c.storage_name(i) for i in range(2)]
        assert names == [f"S{i}" for i in ids] and [c.storage_id(i) for i in range(2)] == ids
        for name in names:
            for file in (name, f"{name}.address", f"{name}.metrics", f"logs/{name}.log"):
                assert os.path.exists(os.path.join(path, file)), file
        assert set(c.metrics_addresses()) == {"master", *names}
        assert "identified as " + names[0] in read_text(c.log_path(names[0]))
    assert not any(e.startswith("storage-") for e in os.listdir(path))
    with LocalCluster(path) as c:       # reopened: the same names, every storage started
        assert [c.storage_name(i) for i in range(c.storages)] == names
        assert set(c.pids()) == {"master", *names}


def test_demo_without_a_directory_leaves_nothing(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = subprocess.run([sys.executable, "-m", "neoarray.cli", "demo"], env={**os.environ, "TMPDIR": str(tmp)},
                         check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "removed; to keep the data and see it again, give a directory: neoarray demo" in out.stdout
    assert list(tmp.iterdir()) == []
