"""Fixtures of the xarray tests: a cluster for the module, a dataset, the engine.

The ``"neoarray"`` engine is found by xarray through the entry point that
``pyproject.toml`` declares (``[project.entry-points."xarray.backends"]``).  An
installed neoarray (``pip install -e '.[test]'``) registers it; where the neoarray
that runs the tests is another checkout than the installed one, the same entry point,
read from this checkout's pyproject.toml, is registered through a ``.dist-info``
folder on ``sys.path`` (what pip writes), here and in the subprocesses of the tests.
"""
import importlib.metadata
import os
import re
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import running_cluster

xr = pytest.importorskip("xarray")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _declared_entry_point() -> str:
    """The ``neoarray`` entry of ``[project.entry-points."xarray.backends"]`` (Python 3.10
    has no tomllib: the table is read with a regular expression)."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    table = text.split('[project.entry-points."xarray.backends"]', 1)[1].split("\n[", 1)[0]
    return re.search(r'^neoarray\s*=\s*"([^"]+)"', table, re.MULTILINE).group(1)


def _registered_entry_point():
    found = importlib.metadata.entry_points(group="xarray.backends", name="neoarray")
    return next(iter(found), None)


@pytest.fixture(scope="session")
def engine_path(tmp_path_factory):
    """A ``sys.path`` entry registering this checkout's engine, or None when the installed
    neoarray already registers the same one."""
    declared = _declared_entry_point()
    installed = _registered_entry_point()
    if installed is not None and installed.value == declared:
        return None
    site = tmp_path_factory.mktemp("engine")
    info = site / "neoarray_checkout_engine-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: neoarray-checkout-engine\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[xarray.backends]\nneoarray = {declared}\n")
    if installed is not None:      # another neoarray's entry point: ours must win
        pytest.skip(f"an installed neoarray registers engine 'neoarray' as {installed.value}, "
                    f"this checkout declares {declared}")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    return str(site)


@pytest.fixture(scope="session")
def engine(engine_path):
    """The engine name, once xarray finds it."""
    from xarray.backends import plugins
    plugins.list_engines.cache_clear()
    assert "neoarray" in plugins.list_engines()
    return "neoarray"


@pytest.fixture(scope="module")
def xcluster(tmp_path_factory):
    """One LocalCluster (1 storage node) for the module."""
    yield from running_cluster(tmp_path_factory.mktemp("neo-xarray"))


@pytest.fixture
def env(engine_path):
    """The environment of a subprocess running this checkout with the engine registered."""
    paths = [ROOT] + ([engine_path] if engine_path else []) + \
        [p for p in [os.environ.get("PYTHONPATH")] if p]
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
