"""Sphinx configuration of neoarray's documentation (``docs/``).

Build it with ``python -m sphinx -W -b html docs docs/_build/html`` after
``pip install -c constraints.txt -e '.[docs]'``; ``tests/test_docs.py`` builds it the same
way in every test run, so a broken reference or docstring fails the tests.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import neoarray

project = "neoarray"
author = "the neoarray developers"
copyright = "the neoarray developers"
release = version = neoarray.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",       # numpydoc sections (Parameters, Returns, Raises) without numpydoc
    "myst_parser",               # the Markdown pages: architecture, numpy coverage
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
html_static_path = []

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_use_ivar = True         # Attributes sections: fields, not a second copy of autodoc's
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "separated"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
myst_heading_anchors = 3

# Every cross-reference must resolve, and -W turns a miss into an error.  A name of
# neoarray that these pages do not document (an internal module such as
# ``neoarray.array.chunks``) resolves, without a link, when it names a real object:
# only a misspelt or removed name fails.  Names of other projects are not linked (no
# network for intersphinx); type descriptions in numpydoc's words ("array_like",
# "{'C', 'F'}", "ZODB Connection") are let through.
nitpicky = True
_OUTSIDE = ("numpy", "np", "ZODB", "zodburi", "transaction", "persistent", "BTrees", "xarray", "xr",
            "dask", "da", "distributed", "zarr", "numcodecs", "pandas", "collections", "typing",
            "os", "pathlib", "concurrent", "contextlib", "threading", "types", "enum", "io",
            "multiprocessing", "tqdm", "grpc", "ZConfig", "numba", "subprocess", "logging", "_pickle")
nitpick_ignore_regex = [
    (r"py:.*", r"({})(\..*)?".format("|".join(_OUTSIDE))),
    (r"py:class", (r".*[ '{}\-].*|\.\.\.|"
                   r"int|float|bool|str|bytes|complex|dict|list|tuple|set|frozenset|object|type|"
                   r"callable|iterable|sequence|mapping|optional|None|slice|scalar|dtype|"
                   r"array_like|path|default|[A-Z][A-Za-z]*(Error|Exception)")),
]


def _real_object(dotted):
    """The object ``dotted`` names (a module, or attributes below one), or None."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        return obj
    return None


# Unqualified names in "Raises" sections and in annotations imported only for type
# checkers are looked up here too.
_EXTRA_SCOPES = ("neoarray.errors", "neoarray.array.errors", "neoarray.jobs.spec",
                 "ZODB.POSException", "ZODB.Connection")


def _resolve_real_neoarray_name(app, env, node, contnode):
    """Resolve, as plain text, a reference to a real but undocumented neoarray object."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module = node.get("py:module") or ""
    klass = node.get("py:class")
    scopes = [f"{module}.{klass}"] if module and klass else []
    parts = module.split(".")
    scopes += [".".join(parts[:cut]) for cut in range(len(parts), 0, -1)] + [""]
    for scope in scopes:
        dotted = f"{scope}.{target}" if scope else target
        if dotted.startswith("neoarray") and _real_object(dotted) is not None:
            return contnode
    if "." not in target and any(_real_object(f"{scope}.{target}") is not None
                                 for scope in _EXTRA_SCOPES):
        return contnode
    return None


def setup(app):
    app.connect("missing-reference", _resolve_real_neoarray_name)
