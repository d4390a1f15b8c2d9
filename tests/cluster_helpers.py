"""What the cluster tests share: neoctl in a subprocess, the partition table as
letters, waits on cell states, storage processes by index."""
import json
import subprocess
import sys
import time

from neoarray.states import NodeType


def neoctl(cluster, *args, status=0):
    """Run ``neoctl --dir <cluster> ARGS``; assert its exit status.

    Returns the parsed JSON with ``--json``, else standard output (standard error when
    a failure status is expected).  Standard input is not a terminal: a command that
    removes something needs ``--yes``."""
    out = subprocess.run([sys.executable, "-m", "neoarray.ctl", "--dir", cluster.path, *args],
                         check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == status, out.stdout + out.stderr
    if "--json" in args:
        return json.loads(out.stdout)
    return out.stderr if status else out.stdout


def letters(cluster) -> dict[int, str]:
    """Node id -> one letter per partition: its cell state there, ``.`` for no cell."""
    admin = cluster.admin()
    try:
        pt = admin.partition_table()
    finally:
        admin.close()
    nodes = sorted({c.node_id for row in pt.rows for c in row.cells})
    return {n: "".join(next((c.state.letter for c in row.cells if c.node_id == n), ".")
                       for row in pt.rows) for n in nodes}


def wait_cells(cluster, node_id: int, expected: str, timeout_s: float = 60.0) -> None:
    """Wait until node ``node_id``'s cells read ``expected`` (see :func:`letters`)."""
    deadline = time.monotonic() + timeout_s
    while letters(cluster).get(node_id) != expected:
        assert time.monotonic() < deadline, \
            f"S{node_id} cells are {letters(cluster).get(node_id)}, not {expected}"
        time.sleep(0.1)


def wait_settled(cluster, timeout_s: float = 60.0) -> dict[int, str]:
    """Wait until the cluster is RUNNING with no OUT_OF_DATE or FEEDING cell; the
    cells then.  The master may be restarting meanwhile."""
    deadline = time.monotonic() + timeout_s
    cells = None
    while True:
        try:
            cluster.wait_state("RUNNING", max(0.1, deadline - time.monotonic()))
            cells = letters(cluster)
            if not any(ch in "OF" for row in cells.values() for ch in row):
                return cells
        except Exception:  # noqa: BLE001 - the master is down or restarting: try again
            pass
        assert time.monotonic() < deadline, f"cells not settled within {timeout_s} s: {cells}"
        time.sleep(0.1)


def storage_of_index(cluster, index, timeout_s=30.0):
    """(node id, address) of storage ``index`` of ``cluster`` (``S<id>``, see
    ``LocalCluster.storage_name``), once the master knows it."""
    node_id = cluster.storage_id(index)
    assert node_id, f"storage {index} ({cluster.storage_name(index)}) has no node id yet"
    admin = cluster.admin()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            for n in admin.nodes():
                if n.type is NodeType.STORAGE and n.node_id == node_id:
                    return n.node_id, n.address
            if time.monotonic() > deadline:
                raise AssertionError(f"S{node_id} not known to the master after {timeout_s} s")
            time.sleep(0.1)
    finally:
        admin.close()


def storage_ids(cluster) -> dict[int, int]:
    """Storage index -> node id, for every storage process of ``cluster``."""
    return {i: cluster.storage_id(i) for i in range(cluster.storages)}
