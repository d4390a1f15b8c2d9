"""Parallel jobs on a real cluster: reductions through every executor, resume, retries."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import neoarray.array as na
from neoarray import jobs, wire
from neoarray.array.errors import ArrayValueError
from neoarray.jobs import core, executors
from neoarray.jobs.core import JobError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ["sum", "prod", "mean", "var", "std", "min", "max", "argmin", "argmax",
         "count_nonzero", "any", "all"]


def _store(conn, name, array):
    conn.root()[name] = array
    conn.tm.commit()
    return array


@pytest.fixture
def data(conn):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(333, 70))
    x[x > 2.5] = 0.0
    a = na.zeros(x.shape, chunks=(64, 16))
    a[...] = x
    a[128:192] = 0.0               # a row of chunks all fill: never stored
    x[128:192] = 0.0
    _store(conn, "a", a)
    return a, x


def _check(name, got, ref):
    if np.issubdtype(np.asarray(ref).dtype, np.floating):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("executor", ["threads", "storage"])
@pytest.mark.parametrize("name", NAMES)
def test_whole_array_reductions_match_numpy(data, executor, name):
    a, x = data
    got = jobs.reduce(a, name, executor=executor, workers=2, piece_bytes=3 * 64 * 16 * 8)
    _check(name, got, getattr(np, name)(x))


@pytest.mark.parametrize(("name", "axis"), [
    (name, axis) for name in ("sum", "std", "max", "argmin") for axis in (0, 1, (0, 1))
    if not (name == "argmin" and isinstance(axis, tuple))])      # numpy's argmin: one axis
def test_axis_reductions_merge_pieces_like_numpy(data, name, axis):
    a, x = data
    got = jobs.reduce(a, name, axis=axis, piece_bytes=2 * 64 * 16 * 8)
    _check(name, got, getattr(np, name)(x, axis=axis))


@pytest.mark.parametrize("executor", ["threads", "storage"])
def test_histogram_matches_numpy_default_and_given_range(data, executor):
    a, x = data
    counts, edges = jobs.reduce(a, "histogram", bins=17, executor=executor)
    ref_counts, ref_edges = np.histogram(x, 17)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(edges, ref_edges)
    counts, _ = jobs.reduce(a, "histogram", bins=4, range=(-1, 1), executor=executor)
    np.testing.assert_array_equal(counts, np.histogram(x, 4, range=(-1, 1))[0])


def test_nan_and_fill_values_follow_numpy(conn):
    x = np.full((100, 10), 3.0)
    x[10:20, 2] = np.arange(10)
    x[55, 7] = np.nan
    a = na.full(x.shape, 3.0, chunks=(20, 5))
    a[10:20, 2] = np.arange(10)
    a[55, 7] = np.nan
    _store(conn, "nan", a)
    for executor in ("threads", "storage"):
        for name in ("max", "min", "sum", "argmax", "argmin"):
            got = jobs.reduce(a, name, executor=executor)
            np.testing.assert_array_equal(got, getattr(np, name)(x), err_msg=f"{executor} {name}")


def test_exabyte_shaped_sparse_array_costs_only_its_stored_chunks(conn):
    a = na.zeros((10**18, 2), chunks=(4096, 2))
    a[10**17:10**17 + 5000] = 2.0
    a[9 * 10**17] = [-1.0, 4.0]
    _store(conn, "exa", a)
    for executor in ("threads", "storage"):
        result = jobs.reduce(a, "sum", executor=executor, stats=True)
        assert result.value == 5000 * 2 * 2.0 + 3.0
        assert result.stats["chunks"] == len(list(a.chunk_keys()))
        assert jobs.reduce(a, "argmin", executor=executor) == 9 * 10**17 * 2
        assert jobs.reduce(a, "max", executor=executor) == 4.0


def test_storage_executor_moves_only_partial_results(conn, db):
    a = na.zeros((64 * 131072,), chunks=(131072,))     # 64 chunks of 1 MiB
    a[...] = np.random.default_rng(1).random(a.shape)
    _store(conn, "big", a)
    before = wire.traffic()
    result = jobs.reduce(a, "std", executor="storage", stats=True)
    np.testing.assert_allclose(result.value, np.std(a[...]))
    moved = result.stats["network"]["sent_bytes"] + result.stats["network"]["received_bytes"]
    assert moved > 0
    assert moved < 0.01 * a.nbytes, f"{moved} bytes crossed the network for {a.nbytes}"
    assert wire.traffic()["calls"] > before["calls"]


def test_storage_executor_refuses_what_nodes_cannot_run(data):
    a, _ = data
    with pytest.raises(JobError, match="every axis"):
        jobs.reduce(a, "sum", axis=0, executor="storage")


def test_process_executor_opens_its_own_clients(data):
    a, x = data
    result = jobs.reduce(a, "var", executor="processes", workers=2, stats=True,
                         piece_bytes=4 * 64 * 16 * 8)
    np.testing.assert_allclose(result.value, np.var(x))
    assert result.stats["executor"] == "processes"
    assert result.stats["cache"]["misses"] > 0       # the workers' caches, reported back


def test_dask_executor_runs_pieces_as_tasks(data):
    distributed = pytest.importorskip("distributed")
    a, x = data
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None) as client:
        result = jobs.reduce(a, "mean", executor="dask", scheduler=client, stats=True,
                             piece_bytes=4 * 64 * 16 * 8)
    np.testing.assert_allclose(result.value, np.mean(x))
    assert result.stats["executor"] == "dask"


class FlakyExecutor(executors.ThreadExecutor):
    """The thread executor with faults injected: pieces in ``fail`` raise ``times`` times."""

    def __init__(self, db, fail, times=1):
        super().__init__(db, workers=2)
        self.fail, self.left = set(fail), {i: times for i in fail}
        self.ran = []

    def _work(self, piece):
        self.ran.append(piece.index)
        if piece.index in self.fail and self.left[piece.index] > 0:
            self.left[piece.index] -= 1
            raise ConnectionError(f"injected failure of piece {piece.index}")
        return super()._work(piece)


def test_a_failed_piece_is_retried(data, db):
    a, x = data
    flaky = FlakyExecutor(db, fail=[1, 3], times=2)
    result = jobs.reduce(a, "sum", executor=flaky, piece_bytes=3 * 64 * 16 * 8, stats=True)
    np.testing.assert_allclose(result.value, x.sum())
    assert result.stats["retries"] == 4
    assert flaky.ran.count(1) == 3


def test_job_fails_after_its_attempts_and_resumes_without_redoing_pieces(data, db, tmp_path):
    a, x = data
    state = str(tmp_path / "state")
    flaky = FlakyExecutor(db, fail=[2], times=5)
    with pytest.raises(JobError, match="piece 2 .*failed 2 time.*same state directory"):
        jobs.reduce(a, "std", executor=flaky, piece_bytes=3 * 64 * 16 * 8, state_dir=state,
                    attempts_max=2)
    finished = set(os.listdir(os.path.join(state, "done")))
    assert finished and "00000002" not in finished
    again = executors.ThreadExecutor(db, workers=2)
    ran = []
    original = again._work
    again._work = lambda piece: ran.append(piece.index) or original(piece)
    result = jobs.reduce(a, "std", executor=again, piece_bytes=3 * 64 * 16 * 8,
                         state_dir=state, stats=True)
    np.testing.assert_allclose(result.value, np.std(x))
    assert result.stats["pieces_resumed"] == len(finished)
    assert 2 in ran and not {int(f) for f in finished} & set(ran)


def test_a_state_directory_of_an_older_snapshot_is_refused_or_resumed_explicitly(data, db,
                                                                                 tmp_path):
    """Reusing a state directory after the data changed gave the old snapshot's answer
    without a word: it is refused, naming both snapshots and the ways on."""
    a, x = data
    state = str(tmp_path / "state")
    piece_bytes = 3 * 64 * 16 * 8
    flaky = FlakyExecutor(db, fail=[2], times=5)
    flaky.workers = 1                # piece 0 is done (and kept) before piece 2 is sent
    with pytest.raises(JobError, match="piece 2 .*same state directory"):
        jobs.reduce(a, "std", executor=flaky, piece_bytes=piece_bytes, state_dir=state,
                    attempts_max=1)
    with open(os.path.join(state, "job.json")) as f:
        old = json.load(f)["spec"]["before"]
    a[0, 0] = 1e6                                      # the data changes meanwhile
    a._p_jar.tm.commit()
    with pytest.raises(JobError) as refused:
        jobs.reduce(a, "std", piece_bytes=piece_bytes, state_dir=state)
    message = str(refused.value)
    assert f"holds this job as of snapshot 0x{old}" in message
    assert "resume='restart'" in message and "--restart" in message
    assert "resume='saved'" in message and "--resume-saved" in message
    now = jobs.reduce(a, "std", piece_bytes=piece_bytes, stats=True).stats["snapshot"]
    assert f"the current snapshot is {now}" in message and now != f"0x{old}"

    saved = jobs.reduce(a, "std", piece_bytes=piece_bytes, state_dir=state, resume="saved",
                        stats=True)
    np.testing.assert_allclose(saved.value, np.std(x))          # as of the old snapshot
    assert saved.stats["pieces_resumed"] > 0 and saved.stats["snapshot"] == f"0x{old}"

    x[0, 0] = 1e6
    fresh = jobs.reduce(a, "std", piece_bytes=piece_bytes, state_dir=state, resume="restart",
                        stats=True)
    np.testing.assert_allclose(fresh.value, np.std(x))
    assert fresh.stats["pieces_resumed"] == 0 and fresh.stats["snapshot"] == now
    again = jobs.reduce(a, "std", piece_bytes=piece_bytes, state_dir=state, stats=True)
    assert again.stats["pieces_run"] == 0             # nothing changed since: resumed
    with pytest.raises(JobError, match="resume must be one of"):
        jobs.reduce(a, "std", state_dir=state, resume="yes")


def test_state_directory_of_another_job_is_refused(data, tmp_path):
    a, _ = data
    state = str(tmp_path / "state")
    jobs.reduce(a, "sum", state_dir=state)
    with pytest.raises(JobError, match="belongs to another job"):
        jobs.reduce(a, "max", state_dir=state)
    with open(os.path.join(state, "job.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(JobError, match="unreadable"):
        jobs.reduce(a, "sum", state_dir=state)


def test_uncommitted_changes_are_refused(data):
    a, _ = data
    a[0, 0] = 5.0
    with pytest.raises(JobError, match="uncommitted"):
        jobs.reduce(a, "sum")
    a._p_jar.tm.abort()
    unsaved = na.zeros((4,))
    with pytest.raises(JobError, match="not stored"):
        jobs.reduce(unsaved, "sum")


def test_bad_arguments_are_named(data):
    a, _ = data
    with pytest.raises(JobError, match="unknown reduction 'median'"):
        jobs.reduce(a, "median")
    with pytest.raises(JobError, match="unknown executor 'gpu'"):
        jobs.reduce(a, "sum", executor="gpu")
    with pytest.raises(ArrayValueError, match="axis"):
        jobs.reduce(a, "sum", axis=5)
    with pytest.raises(JobError, match="histogram arguments"):
        jobs.reduce(a, "sum", bins=4)
    with pytest.raises(ArrayValueError, match="bins >= 1"):
        jobs.reduce(a, "histogram", bins=0, range=(0, 1))


def test_progress_bar_and_cache_statistics(data, capsys, monkeypatch):
    a, x = data
    monkeypatch.setattr(core, "PROGRESS_INTERVAL_S", 0.0)     # every piece is drawn
    result = jobs.reduce(a, "sum", progress=True, piece_bytes=3 * 64 * 16 * 8, stats=True)
    np.testing.assert_allclose(result.value, x.sum())
    err = capsys.readouterr().err
    pieces = result.stats["pieces"]
    assert "piece" in err and err.count(f"{pieces}/{pieces}") == 1, err   # the last line once
    assert err.count(f"{pieces - 1}/{pieces}") == 1, err
    cache = result.stats["cache"]
    assert cache["hits"] + cache["misses"] >= result.stats["chunks"]
    assert set(cache["colours"]) >= {"meta", "hot", "scan"}
    json.dumps(result.to_json())          # the stats are JSON


UNGUARDED_SCRIPT = '''
import sys

import numpy as np
import transaction

import neoarray
import neoarray.array as na
from neoarray import jobs

data_dir, runs_file, state_dir = sys.argv[1:4]
print("script body ran", flush=True)
with open(runs_file, "a") as f:
    f.write("ran\\n")
db = neoarray.open(data_dir)              # an embedded cluster, as in the README
conn = db.open()
x = np.arange(4000, dtype=np.float64)
conn.root()["A"] = A = na.asarray(x, chunks=(500,))
transaction.commit()
counts, edges = jobs.reduce(A, "histogram", bins=8, executor="processes", workers=2,
                            state_dir=state_dir, piece_bytes=2 * 500 * 8)
print("counts", counts.tolist(), flush=True)
db.close()
'''


def test_processes_job_in_a_script_without_main_guard_runs_the_script_once(tmp_path):
    """Workers do not import the user's ``__main__``: a script with no
    ``if __name__ == "__main__":`` runs once (it ran again in every spawned worker)."""
    script = tmp_path / "user_script.py"
    script.write_text(UNGUARDED_SCRIPT)
    runs = tmp_path / "runs.txt"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data"), str(runs), str(tmp_path / "job")],
        capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("script body ran") == 1, proc.stdout
    assert runs.read_text() == "ran\n"
    counts = np.histogram(np.arange(4000, dtype=np.float64), 8)[0].tolist()
    assert f"counts {counts}" in proc.stdout, proc.stdout
