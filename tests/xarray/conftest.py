"""Fixtures of the xarray tests: a cluster for the module, a dataset, the engine.

The ``"neoarray"`` engine is found by xarray through the entry point that
``pyproject.toml`` declares (``[project.entry-points."xarray.backends"]``), which an
installed neoarray registers (``pip install -e '.[test]'``, as the README says).
"""
import os

import numpy as np
import pandas as pd
import pytest

from tests.conftest import running_cluster

xr = pytest.importorskip("xarray")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def engine():
    """The engine name, once xarray finds it."""
    from xarray.backends import plugins
    plugins.list_engines.cache_clear()
    if "neoarray" not in plugins.list_engines():
        pytest.fail("xarray does not know the 'neoarray' engine: install this checkout "
                    "(pip install -e '.[test]') so that its entry point is registered")
    return "neoarray"


@pytest.fixture(scope="module")
def xcluster(tmp_path_factory):
    """One LocalCluster (1 storage node) for the module."""
    yield from running_cluster(tmp_path_factory.mktemp("neo-xarray"))


@pytest.fixture
def env():
    """The environment of a subprocess running this checkout."""
    paths = [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def climate() -> "xr.Dataset":
    """A small dataset: daily temperatures of 3 stations over 2 years, with coordinates
    of several dtypes and attributes of several kinds."""
    rng = np.random.default_rng(15)
    time = pd.date_range("2023-01-01", periods=730, freq="D")
    seasonal = 10 * np.sin(np.arange(730) * 2 * np.pi / 365)[:, None]
    temp = 12 + seasonal + rng.normal(size=(730, 3))
    return xr.Dataset(
        {"temp": (("time", "station"), temp, {"units": "degC", "valid_range": np.array([-50.0, 60.0])}),
         "rain": (("time", "station"), rng.integers(0, 40, size=(730, 3)).astype("int16"),
                  {"units": "mm"})},
        coords={"time": time, "station": ["oslo", "lyon", "bern"],
                "altitude": ("station", np.array([23.0, 173.0, 540.0], dtype="float32"),
                             {"units": "m"})},
        attrs={"title": "stations", "version": 3, "scale": np.float32(0.5),
               "history": ["made", "checked"]})
