"""``neoarray job run`` as a workflow engine runs it: a process, one JSON document out."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import transaction
import ZODB

import neoarray
import neoarray.array as na


def _run(*args, timeout_s=240):
    proc = subprocess.run([sys.executable, "-m", "neoarray.cli", "job", "run", *args],
                          capture_output=True, text=True, timeout=timeout_s, check=False,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    return proc.returncode, json.loads(proc.stdout), proc.stderr


@pytest.fixture
def stored(jobs_cluster):
    db = ZODB.DB(jobs_cluster.open_storage())
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    x = np.random.default_rng(5).random((200, 30))
    conn.root()["cli"] = na.asarray(x, chunks=(50, 30))
    tm.commit()
    conn.close()
    db.close()
    return jobs_cluster, x


def test_reduce_prints_the_result_as_json(stored):
    cluster, x = stored
    rc, out, _ = _run("-a", cluster.address, "-c", cluster.cluster, "--array", "cli",
                      "--reduce", "std", "--executor", "storage")
    assert rc == 0
    assert out["result"] == pytest.approx(np.std(x))
    assert out["stats"]["executor"] == "storage" and out["stats"]["chunks"] == 4
    rc, out, _ = _run("--dir", cluster.path, "--array", "cli", "--reduce", "histogram",
                      "--bins", "5", "--range", "0", "1")
    assert rc == 0
    assert out["result"][0] == np.histogram(x, 5, (0, 1))[0].tolist()
    rc, out, _ = _run("--dir", cluster.path, "--array", "cli", "--reduce", "sum", "--axis", "1")
    np.testing.assert_allclose(out["result"], x.sum(axis=1))


def test_map_blocks_creates_the_output_and_resumes_from_a_state_dir(stored, tmp_path):
    cluster, x = stored
    args = ("--dir", cluster.path, "--array", "cli", "--map-blocks", "numpy:sqrt",
            "--out", "cli_sqrt", "--state-dir", str(tmp_path / "state"), "--piece-mib", "0.02")
    rc, out, _ = _run(*args)
    assert rc == 0 and out["stats"]["pieces_run"] == out["stats"]["pieces"] > 1
    assert out["result"]["path"] == "cli_sqrt" and out["result"]["out"].startswith("0x")
    rc, out, _ = _run(*args)       # everything was done (the job's own commits since): resumed
    assert rc == 0 and out["stats"]["pieces_run"] == 0
    db = ZODB.DB(cluster.open_storage())
    try:
        np.testing.assert_allclose(db.open().root()["cli_sqrt"][...], np.sqrt(x))
    finally:
        db.close()


def test_failures_print_a_json_error_and_exit_non_zero(stored):
    cluster, _ = stored
    rc, out, err = _run("--dir", cluster.path, "--array", "missing/array", "--reduce", "sum")
    assert rc == 1 and "no object at 'missing'" in out["error"] and "missing" in err
    rc, out, _ = _run("--dir", cluster.path, "--array", "cli", "--reduce", "median")
    assert rc == 1 and "unknown reduction 'median'" in out["error"]
    rc, out, _ = _run("--dir", cluster.path, "--array", "cli", "--map-blocks", "numpy:sqrt")
    assert rc == 1 and "--out" in out["error"]
    rc, out, _ = _run("-a", cluster.address, "-c", "wrong-name", "--array", "cli",
                      "--reduce", "sum", "--timeout-s", "3")
    assert rc == 1 and "cluster" in out["error"].lower()


def test_a_stopped_cluster_directory_is_said_at_once_and_served_embedded(tmp_path):
    """A ``master.address`` left by a stopped cluster: nothing listens there, so no time
    goes into retrying it; the job says so and runs on an embedded cluster."""
    path = str(tmp_path / "stopped")
    db = neoarray.open(path)                    # started now, stopped by close()
    try:
        tm = transaction.TransactionManager()
        db.open(tm).root()["x"] = na.asarray(np.arange(100.0), chunks=(30,))
        tm.commit()
    finally:
        db.close()
    with open(os.path.join(path, "master.address")) as f:
        address = f.read().strip()
    rc, out, err = _run("--dir", path, "--array", "x", "--reduce", "sum")
    assert rc == 0, err
    assert out["result"] == np.arange(100.0).sum()
    assert (f"the cluster in {path} is not running (nothing listens at {address} from "
            f"{os.path.join(path, 'master.address')})") in err
    assert f"neoarray cluster up {path}" in err


def test_a_changed_array_refuses_the_older_state_directory_until_told(stored, tmp_path):
    cluster, x = stored
    args = ("--dir", cluster.path, "--array", "cli", "--reduce", "sum",
            "--state-dir", str(tmp_path / "state"))
    rc, out, _ = _run(*args)
    assert rc == 0
    old = out["stats"]["snapshot"]
    db = ZODB.DB(cluster.open_storage())
    try:
        tm = transaction.TransactionManager()
        db.open(tm).root()["cli"][0, 0] = 1e6
        tm.commit()
    finally:
        db.close()
    rc, out, _ = _run(*args)
    assert rc == 1
    assert f"holds this job as of snapshot {old}" in out["error"]
    assert "--restart" in out["error"] and "--resume-saved" in out["error"]
    rc, out, _ = _run(*args, "--resume-saved")
    assert rc == 0 and out["result"] == pytest.approx(x.sum())
    rc, out, _ = _run(*args, "--restart")
    changed = x.copy()
    changed[0, 0] = 1e6
    assert rc == 0 and out["result"] == pytest.approx(changed.sum())
