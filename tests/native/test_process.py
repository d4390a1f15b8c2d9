"""Mapped views seen from a whole process (each case in a fresh interpreter): fork, other
segmentation faults, use after close, no native extension, and peak RSS of a scan of a
view 16 times its memory budget."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import transaction
import ZODB
import ZODB.FileStorage

import neoarray.array as na

from .conftest import MODES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(script, *args, timeout_s=120):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=env, check=False,
                          capture_output=True, text=True, timeout=timeout_s)


@pytest.mark.parametrize("mode", MODES)
def test_fork_child_gets_a_clear_error(mode):
    done = run("""
        import os, sys, numpy as np, neoarray.array as na
        A = na.asarray(np.arange(100_000.0), chunks=(8192,))
        with A.mapped(mode=sys.argv[1]) as v:
            assert v[5] == 5
            pid = os.fork()
            if pid == 0:
                try:
                    v[50_000]       # never returns
                finally:
                    os._exit(3)
            _, status = os.waitpid(pid, 0)
            print("child", os.WTERMSIG(status) if os.WIFSIGNALED(status) else status)
            print("parent", v[50_000])
        """, mode)
    assert done.returncode == 0, done.stderr
    assert f"child {int(signal.SIGABRT)}" in done.stdout and "parent 50000.0" in done.stdout
    assert "fork child" in done.stderr and "open the array again in the child" in done.stderr


def test_other_faults_reach_the_previous_handler():
    done = run("""
        import ctypes, faulthandler, numpy as np, neoarray.array as na
        faulthandler.enable()
        A = na.asarray(np.arange(10_000.0))
        with A.mapped() as v:
            assert v[9_999] == 9_999
            ctypes.string_at(0)
        """)
    assert done.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in done.stderr     # faulthandler's


def test_view_used_after_its_block_stops_with_a_message():
    done = run("""
        import numpy as np, neoarray.array as na
        A = na.asarray(np.arange(10_000.0))
        with A.mapped() as v:
            kept = v
        print(kept[5])
        """)
    assert done.returncode == -signal.SIGABRT
    assert "used after its region was closed" in done.stderr


def test_without_the_extension_mapped_says_why_and_the_rest_works():
    done = run("""
        import sys
        sys.modules["neoarray._vmem"] = None        # as if it were not built
        import numpy as np, neoarray.array as na
        from neoarray.vm import MappingUnavailableError
        A = na.asarray(np.arange(10.0))
        assert A.sum() == 45 and float(np.asarray(A)[3]) == 3.0
        try:
            A.mapped().__enter__()
        except MappingUnavailableError as exc:
            print("refused:", exc)
        """)
    assert done.returncode == 0, done.stderr
    assert "refused: mapped views need neoarray's native extension" in done.stdout


SCAN = """
    import sys, numpy as np, ZODB, ZODB.FileStorage
    path, mode, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=True))
    A = db.open().root()["a"]

    def status(name):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(name))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")        # peak RSS starts again from here
    before = status("VmRSS:")
    with A.mapped(mode=mode, budget_bytes=budget) as v:
        total = v.sum()     # plain numpy over the whole view
    print(A.nbytes, total, status("VmHWM:") - before)
"""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("budget_bytes", [
    4 << 20, pytest.param(16 << 20, marks=pytest.mark.slow)])
def test_scan_of_a_view_16x_its_budget_keeps_rss_bounded(tmp_path, mode, budget_bytes):
    # the margin: a readahead batch's payloads (an eighth of the budget) as they are
    # fetched and installed, the memory allocator's slack, the interpreter's own
    margin_bytes = (16 << 20) + budget_bytes // 4
    path = str(tmp_path / "Data.fs")
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    n = 16 * budget_bytes // 8
    conn.root()["a"] = A = na.ndarray((n,), dtype="float64", chunks=(1 << 17,))
    step = 1 << 20
    for start in range(0, n, step):
        A[start:start + step] = np.arange(start, min(n, start + step), dtype=np.float64)
        tm.savepoint()
    tm.commit()
    conn.close()
    db.close()
    done = run(SCAN, path, mode, str(budget_bytes))
    assert done.returncode == 0, done.stderr
    nbytes, total, peak = done.stdout.split()
    assert int(nbytes) == 16 * budget_bytes and float(total) == n * (n - 1) / 2
    assert int(peak) < budget_bytes + margin_bytes, (int(peak), budget_bytes)
