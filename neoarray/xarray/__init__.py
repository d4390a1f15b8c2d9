"""xarray for neoarray: datasets stored in groups, the ``"neoarray"`` engine, a writer.

>>> import xarray as xr, neoarray.xarray                                  # doctest: +SKIP
>>> neoarray.xarray.to_neoarray(ds, "/data/dir", group="climate")       # doctest: +SKIP
>>> xr.open_dataset("/data/dir", engine="neoarray", group="climate", chunks={})  # doctest: +SKIP
>>> xr.open_dataset("neoarray://127.0.0.1:5551/prod?path=climate", engine="neoarray")  # doctest: +SKIP

Modules: :mod:`.sources` (what a target names: a database, a URI, a directory),
:mod:`.backend` (the engine, lazy and picklable backend arrays), :mod:`.writer`
(:func:`to_neoarray` and the ``ds.neoarray.to(...)`` accessor).  What is stored
(:class:`neoarray.datasets.Group`) needs no xarray; this package needs
``pip install 'neoarray[xarray]'``.
"""
try:
    import xarray as _xarray  # noqa: F401 - the one check that xarray is there
except ImportError:
    raise ImportError("neoarray.xarray needs xarray: pip install 'neoarray[xarray]'") from None

from .backend import NeoarrayBackendArray, NeoarrayBackendEntrypoint, open_dataset
from .writer import to_neoarray

__all__ = ["NeoarrayBackendArray", "NeoarrayBackendEntrypoint", "open_dataset", "to_neoarray"]
