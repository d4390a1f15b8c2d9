"""map_blocks: in the caller's transaction, and as resumable jobs on every executor."""
import os
import sys

import numpy as np
import pytest

import neoarray
import neoarray.array as na
from neoarray import jobs
from neoarray.array.errors import ArrayCastError, ArrayDtypeError, ArrayShapeError
from neoarray.jobs.core import run_map
from neoarray.jobs.core import JobError

from . import jobfuncs


@pytest.fixture
def pair(conn):
    rng = np.random.default_rng(3)
    x, y = rng.random((90, 50)), rng.random((90, 50))
    a = na.asarray(x, chunks=(32, 16))
    b = na.asarray(y, chunks=(20, 50))          # another chunking: read by region
    conn.root()["a"], conn.root()["b"] = a, b
    conn.tm.commit()
    return a, b, x, y


def test_elementwise_function_into_a_new_array(pair, conn):
    a, b, x, y = pair
    out = neoarray.map_blocks(jobfuncs.weighted, a, b)
    assert out.shape == a.shape and out.chunks == a.chunks and out.dtype == np.float64
    np.testing.assert_allclose(out[...], x * 0.5 + y)
    conn.root()["out"] = out
    conn.tm.commit()
    conn.cacheMinimize()
    np.testing.assert_allclose(conn.root()["out"][...], x * 0.5 + y)


def test_numba_function_and_an_existing_out(pair, conn):
    a, _, x, _ = pair
    out = na.zeros(a.shape, chunks=(45, 25))
    conn.root()["clipped"] = out
    result = neoarray.map_blocks(jobfuncs.clip_numba, a * 3 - 1, out=out)
    assert result is out
    np.testing.assert_allclose(out[...], np.clip(x * 3 - 1, 0, 1))


def test_abort_discards_the_output(pair, conn):
    a, _, _, _ = pair
    out = na.zeros(a.shape, chunks=a.chunks)
    conn.root()["kept"] = out
    conn.tm.commit()
    neoarray.map_blocks(jobfuncs.double_plus_one, a, out=out)
    conn.tm.abort()
    assert not list(out.chunk_keys())


def test_sparse_inputs_cost_only_their_stored_chunks(conn):
    a = na.zeros((10**18,), chunks=(1024,))
    a[5 * 10**17: 5 * 10**17 + 3000] = np.arange(3000)
    conn.root()["exa"] = a
    out = neoarray.map_blocks(jobfuncs.double_plus_one, a)
    assert out.fill_value == 1.0                   # fn of the fill value
    assert len(list(out.chunk_keys())) == len(list(a.chunk_keys()))
    np.testing.assert_array_equal(out[5 * 10**17 - 2: 5 * 10**17 + 3002],
                                  np.r_[1, 1, 2 * np.arange(3000) + 1, 1, 1])


def test_non_uniform_result_on_fill_computes_every_chunk(conn):
    a = na.zeros((40,), chunks=(16,))
    out = neoarray.map_blocks(jobfuncs.ramp, a)
    np.testing.assert_array_equal(out[...], np.r_[np.arange(16), np.arange(16), np.arange(8)])


def test_errors_name_the_problem(pair):
    a, _, _, _ = pair
    with pytest.raises(ArrayShapeError, match="one shape"):
        neoarray.map_blocks(jobfuncs.weighted, a, na.zeros((3, 3)))
    with pytest.raises(ArrayShapeError, match="returned shape"):
        neoarray.map_blocks(jobfuncs.wrong_shape, a)
    with pytest.raises(ArrayCastError, match="same_kind"):
        neoarray.map_blocks(jobfuncs.double_plus_one, a, out=na.zeros(a.shape, dtype=np.int32))
    with pytest.raises(ArrayDtypeError, match="not a neoarray"):
        neoarray.map_blocks(jobfuncs.double_plus_one, np.zeros(3))
    with pytest.raises(ArrayDtypeError, match="needs a function"):
        neoarray.map_blocks("nope", a)


def _committed_out(conn, like, name="job_out"):
    out = na.zeros(like.shape, chunks=like.chunks)
    conn.root()[name] = out
    conn.tm.commit()
    return out


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_map_job_commits_every_piece(pair, conn, executor):
    a, b, x, y = pair
    out = _committed_out(conn, a)
    result = run_map("tests.jobs.jobfuncs:weighted", [a, b], out, executor=executor, workers=2,
                     piece_bytes=2 * 32 * 16 * 8)
    assert result.stats["pieces"] == result.stats["pieces_run"] > 1
    conn.tm.abort()                     # see the pieces' commits
    np.testing.assert_allclose(out[...], x * 0.5 + y)


def test_map_job_on_dask(pair, conn):
    distributed = pytest.importorskip("distributed")
    a, _, x, _ = pair
    out = _committed_out(conn, a, "dask_out")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None) as client:
        run_map("numpy:sqrt", [a], out, executor="dask", scheduler=client)
    conn.tm.abort()
    np.testing.assert_allclose(out[...], np.sqrt(x))


def test_map_job_retries_and_resumes(pair, conn, tmp_path, monkeypatch):
    a, _, x, _ = pair
    out = _committed_out(conn, a, "resumed_out")
    marker = tmp_path / "fail-once"
    monkeypatch.setenv("NEOARRAY_TEST_MARKER", str(marker))
    marker.touch()                    # one block fails once: retried within the job
    result = run_map("tests.jobs.jobfuncs:fails_once_per_marker", [a], out, workers=1,
                     piece_bytes=32 * 16 * 8)
    assert result.stats["retries"] == 1 and not marker.exists()
    conn.tm.abort()
    np.testing.assert_allclose(out[...], x + 1)

    state = str(tmp_path / "state")
    out2 = _committed_out(conn, a, "resumed_out2")
    marker.touch()
    with pytest.raises(JobError, match="same state directory"):
        run_map("tests.jobs.jobfuncs:fails_once_per_marker", [a], out2, workers=1,
                piece_bytes=32 * 16 * 8, state_dir=state, attempts_max=1)
    done = len(os.listdir(os.path.join(state, "done")))
    result = run_map("tests.jobs.jobfuncs:fails_once_per_marker", [a], out2, workers=1,
                     piece_bytes=32 * 16 * 8, state_dir=state)
    assert result.stats["pieces_resumed"] == done
    assert result.stats["pieces_run"] == result.stats["pieces"] - done
    conn.tm.abort()
    np.testing.assert_allclose(out2[...], x + 1)


@pytest.mark.parametrize("fault", ["exits_once_per_marker", "fails_once_per_marker"])
def test_a_piece_whose_worker_process_dies_or_raises_is_retried(pair, conn, tmp_path,
                                                                 monkeypatch, fault):
    a, _, x, _ = pair
    out = _committed_out(conn, a, f"after_{fault}_out")
    marker = tmp_path / "fault-once"
    monkeypatch.setenv("NEOARRAY_TEST_MARKER", str(marker))
    marker.touch()
    result = run_map(f"tests.jobs.jobfuncs:{fault}", [a], out,
                     executor="processes", workers=2, piece_bytes=32 * 16 * 8)
    assert result.stats["retries"] == 1 and not marker.exists()
    conn.tm.abort()
    np.testing.assert_allclose(out[...], x + 1)


def test_map_job_refusals(pair, conn, monkeypatch):
    a, _, _, _ = pair
    out = _committed_out(conn, a, "refused_out")
    monkeypatch.setattr(sys.modules["__main__"], "neoarray_test_plus_one",
                        jobfuncs.double_plus_one, raising=False)
    with pytest.raises(JobError, match="do not run your script"):   # a function in a script
        run_map("__main__:neoarray_test_plus_one", [a], out, executor="processes")
    with pytest.raises(JobError, match="built-in reductions"):
        run_map("numpy:sqrt", [a], out, executor="storage")
    with pytest.raises(JobError, match="module:function"):
        run_map("sqrt", [a], out)
    with pytest.raises(JobError, match="cannot load function"):
        run_map("numpy:no_such_function", [a], out)
    with pytest.raises(RuntimeError, match="always fails"):     # on the blocks of fill values
        run_map("tests.jobs.jobfuncs:always_fails", [a], out, attempts_max=1)
    assert jobs.map_blocks is neoarray.map_blocks
