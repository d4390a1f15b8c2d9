"""The API reference cannot rot: the Sphinx site under docs/ is built with warnings as
errors (a broken cross-reference, a malformed docstring, a module that no longer
imports fail), and the public API carries type hints, with ``py.typed`` shipped."""
import inspect
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_documentation_builds_without_a_warning(tmp_path):
    for module in ("sphinx", "myst_parser"):
        try:
            __import__(module)
        except ImportError:
            pytest.fail(f"{module} is missing: pip install -c constraints.txt -e '.[test]' "
                        "(or '.[docs]') installs what builds the documentation")
    out = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), os.path.join(ROOT, "docs"), str(tmp_path / "html")],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-8000:]
    for page in ("index", "api/array", "api/storage", "architecture", "numpy_coverage"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    storage = (tmp_path / "html" / "api" / "storage.html").read_text()
    assert "pack_to_tid" in storage and "add_cache_colour" in storage   # mixin methods included


def _public_objects():
    """``(qualified name, object)`` of the public API: the names the packages export,
    ``NeoStorage`` and ``LocalCluster``."""
    import neoarray
    import neoarray.array
    import neoarray.datasets
    import neoarray.jobs
    import neoarray.xarray
    for module in (neoarray, neoarray.array, neoarray.datasets, neoarray.jobs, neoarray.xarray):
        for name in module.__all__:
            obj = getattr(module, name)
            if not inspect.ismodule(obj):
                yield f"{module.__name__}.{name}", obj


def _callables_of(name, obj):
    """The functions to check: ``obj`` itself, or a class's own public methods and
    properties (those of its neoarray bases too), ``__init__`` included; for an instance
    (``neoarray.array.config``), its class's."""
    if not inspect.isclass(obj) and not callable(obj):
        obj = type(obj)
    if not inspect.isclass(obj):
        yield name, obj
        return
    if issubclass(obj, BaseException):
        return                          # errors: constructed with a message, nothing to hint
    for klass in obj.__mro__:
        if not klass.__module__.startswith("neoarray"):
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            if isinstance(value, property):
                yield f"{name}.{attr}", value.fget
            elif isinstance(value, (staticmethod, classmethod)):
                yield f"{name}.{attr}", value.__func__
            elif inspect.isfunction(value):
                yield f"{name}.{attr}", value


def _missing_hints(func) -> list[str]:
    signature = inspect.signature(func)
    missing = [p.name for i, p in enumerate(signature.parameters.values())
               if p.annotation is inspect.Parameter.empty and not (i == 0 and p.name in ("self", "cls"))]
    if signature.return_annotation is inspect.Signature.empty and func.__name__ != "__init__":
        missing.append("return")
    return missing


def test_the_public_api_has_type_hints():
    missing = {}
    for name, obj in _public_objects():
        for qualified, func in _callables_of(name, obj):
            holes = _missing_hints(inspect.unwrap(func))
            if holes:
                missing[qualified] = holes
    assert not missing, f"functions of the public API without type hints: {missing}"


def test_storage_and_local_cluster_have_type_hints_and_numpydoc_sections():
    from neoarray import LocalCluster, NeoStorage
    missing, undocumented = {}, []
    for name, obj in (("NeoStorage", NeoStorage), ("LocalCluster", LocalCluster)):
        for qualified, func in _callables_of(name, obj):
            holes = _missing_hints(inspect.unwrap(func))
            if holes:
                missing[qualified] = holes
            if func.__name__ != "__init__" and not inspect.getdoc(func):
                undocumented.append(qualified)
    assert not missing, missing
    assert not undocumented, f"public methods without a docstring: {undocumented}"
    for cls in (NeoStorage, LocalCluster):
        doc = inspect.getdoc(cls)
        assert "Parameters\n----------" in doc and "Raises\n------" in doc, cls


def test_py_typed_ships_with_the_package():
    import neoarray
    assert os.path.isfile(os.path.join(os.path.dirname(neoarray.__file__), "py.typed"))
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = f.read()
    package_data = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert '"py.typed"' in package_data
