"""xarray: datasets written with to_neoarray, opened lazily by the "neoarray" engine."""
import pickle
import subprocess
import sys

import numpy as np
import pytest
import ZODB

import neoarray.array as na
from neoarray import datasets
from neoarray.localdir import DirectoryLock

xr = pytest.importorskip("xarray")
da = pytest.importorskip("dask.array")
nx = pytest.importorskip("neoarray.xarray")

from .conftest import climate

_OPEN_ELSEWHERE = """
import pickle, sys
import dask.array, xarray as xr
ds = xr.open_dataset(sys.argv[1], engine="neoarray", group=sys.argv[2], chunks={})
lazy = {name: type(v.data).__module__.split(".")[0] for name, v in ds.variables.items()
        if name not in ds.indexes}
sys.stdout.buffer.write(pickle.dumps((lazy, ds.load(), {k: v.encoding["preferred_chunks"]
                                                        for k, v in ds.variables.items()})))
"""


def _uri(cluster, path=""):
    query = f"?path={path}" if path else ""
    return f"neoarray://{cluster.masters}/{cluster.cluster}{query}"


def test_written_dataset_opens_identical_in_another_process(xcluster, env, engine):
    ds = climate()
    nx.to_neoarray(ds, _uri(xcluster, "clim"), group="daily",
                   encoding={"temp": {"chunks": (100, 3), "codec": "zstd"}})
    out = subprocess.run([sys.executable, "-c", _OPEN_ELSEWHERE, _uri(xcluster, "clim"), "daily"],
                         capture_output=True, timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stderr.decode()
    lazy, back, chunks = pickle.loads(out.stdout)
    assert lazy == {"temp": "dask", "rain": "dask", "altitude": "dask"}
    assert chunks["temp"] == {"time": 100, "station": 3}
    xr.testing.assert_identical(back, ds)
    assert back.temp.dtype == ds.temp.dtype and back.rain.dtype == np.int16
    assert back.time.dtype == ds.time.dtype
    np.testing.assert_array_equal(back.temp.attrs["valid_range"], [-50.0, 60.0])
    assert back.attrs["scale"].dtype == np.float32


@pytest.fixture
def opened(xcluster, engine):
    """``(numpy dataset, the same written and opened lazily with chunks={})``."""
    ds = climate()
    db = ZODB.DB(xcluster.open_storage())
    nx.to_neoarray(ds, db, group="lazy", encoding={"temp": {"chunks": (60, 3)}}, mode="w")
    lazy = xr.open_dataset(db, engine=engine, group="lazy", chunks={})
    yield ds, lazy
    lazy.close()
    db.close()


def test_rolling_resample_groupby_through_dask(opened):
    ds, lazy = opened
    assert isinstance(lazy.temp.data, da.Array) and lazy.temp.data.chunks[0][:2] == (60, 60)
    rolled = lazy.temp.rolling(time=7, center=True).mean()
    assert isinstance(rolled.data, da.Array)
    xr.testing.assert_allclose(rolled.compute(), ds.temp.rolling(time=7, center=True).mean())
    xr.testing.assert_allclose(lazy.resample(time="MS").mean().compute(),
                               ds.resample(time="MS").mean())
    xr.testing.assert_allclose(lazy.rain.groupby("time.month").sum().compute(),
                               ds.rain.groupby("time.month").sum())
    xr.testing.assert_allclose(lazy.temp.groupby("station").max(...).compute(),
                               ds.temp.groupby("station").max(...))


def test_plot_renders_a_png(opened, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    _ds, lazy = opened
    lazy.temp.sel(station="lyon").rolling(time=30).mean().plot()
    path = tmp_path / "temp.png"
    plt.savefig(path)
    plt.close("all")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_backend_arrays_are_small_handles_reading_their_snapshot(xcluster, engine):
    db = ZODB.DB(xcluster.open_storage())
    nx.to_neoarray(climate(), db, group="snap", mode="w")
    lazy = xr.open_dataset(db, engine=engine, group="snap")
    backend = lazy.temp.variable._data
    while not isinstance(backend, nx.NeoarrayBackendArray):     # xarray's wrappers around it
        backend = backend.array
    data = pickle.dumps(backend)
    assert len(data) < 4096
    nx.to_neoarray(climate() * 0, db, group="snap", mode="w")     # a later commit
    again = pickle.loads(data)
    np.testing.assert_array_equal(np.asarray(again[xr.core.indexing.BasicIndexer((slice(0, 5),
                                                                                   slice(None)))]),
                                  climate().temp.values[:5])
    lazy.close()
    db.close()


def test_huge_sparse_variable_opens_and_reads_only_what_is_indexed(xcluster, engine):
    db = ZODB.DB(xcluster.open_storage())
    with db.transaction() as conn:
        group = datasets.Group(attrs={"kind": "sparse"})
        signal = na.full((10**15,), np.nan, chunks=(4096,))
        signal[5 * 10**14:5 * 10**14 + 3] = [1.0, 2.0, 3.0]
        index = na.asarray(np.arange(10, dtype="int64"))
        group.add_variable("signal", ("t",), signal, {"units": "V"})
        group.add_variable("channel", ("c",), index, coord=True)
        conn.root()["sparse"] = group
    lazy = xr.open_dataset(db, engine=engine, group="sparse")     # no Dask: 2.4e11 blocks
    assert lazy.signal.shape == (10**15,) and lazy.attrs == {"kind": "sparse"}
    window = lazy.signal.isel(t=slice(5 * 10**14 - 1, 5 * 10**14 + 4)).values
    np.testing.assert_array_equal(window, [np.nan, 1.0, 2.0, 3.0, np.nan])
    assert lazy.channel.values.tolist() == list(range(10))
    lazy.close()
    db.close()


def test_embedded_directory_and_accessor(tmp_path, engine):
    path = str(tmp_path / "data")
    ds = climate().isel(time=slice(0, 50))
    ds.neoarray.to(path, "clim/jan")
    with xr.open_dataset(path, engine=engine, group="clim/jan") as back:
        xr.testing.assert_identical(back.load(), ds)
        assert xr.backends.plugins.guess_engine(path) == "neoarray"
    lock = DirectoryLock(path)          # closing the dataset stopped the cluster: free again
    lock.acquire(lambda pid: f"still run by {pid}")
    lock.release()


def test_bad_input_says_what_to_do(xcluster, engine):
    db = ZODB.DB(xcluster.open_storage())
    nx.to_neoarray(climate(), db, group="exists", mode="w")
    with db.transaction() as conn:
        group = datasets.locate(conn.root(), "exists")
        assert group.coords == ("time", "station", "altitude")
        assert group.dims == {"time": 730, "station": 3}
    with pytest.raises(datasets.DatasetError, match="mode='w' replaces it"):
        nx.to_neoarray(climate(), db, group="exists")
    with pytest.raises(datasets.DatasetError, match="no group 'missing'"):
        xr.open_dataset(db, engine=engine, group="exists/missing")
    with pytest.raises(datasets.DatasetError, match="name the dataset's group"):
        xr.open_dataset(db, engine=engine)
    odd = xr.Dataset({"o": ("x", np.array([1, "a"], dtype=object))})
    with pytest.raises(datasets.DatasetError, match="not all str"):
        nx.to_neoarray(odd, db, group="odd")
    with pytest.raises(na.ArrayAttrsError, match="attribute 'f' is a object"):
        nx.to_neoarray(xr.Dataset(attrs={"f": object()}), db, group="odd")
    with pytest.raises(ValueError, match="unknown option"):
        xr.open_dataset(_uri(xcluster, "exists") + "&colour=red", engine=engine)
    with pytest.raises(datasets.DatasetError, match="unknown encoding key"):
        nx.to_neoarray(climate(), db, group="odd", encoding={"temp": {"zlib": True}})
    db.close()


def test_groups_without_xarray_objects(tmp_path):
    db = ZODB.DB(None)
    with db.transaction() as conn:
        root = datasets.Group(attrs={"a": np.arange(3)})
        child = root.require_group("x/y")
        child.add_variable("v", ("n",), na.zeros(4))
        with pytest.raises(datasets.DatasetError, match="gives dimension 'n' size 5"):
            child.add_variable("w", ("n",), na.zeros(5))
        with pytest.raises(datasets.DatasetError, match="dims .* name 2 axes"):
            child.add_variable("w", ("n", "m"), na.zeros(5))
        conn.root()["g"] = root
    with db.transaction() as conn:
        group = datasets.locate(conn.root(), "g/x/y")
        assert list(group.variables) == ["v"] and group["v"].dims == ("n",)
        np.testing.assert_array_equal(datasets.locate(conn.root(), "g").attrs["a"].value(),
                                      np.arange(3))
    db.close()
