"""The mapping file of ``neoarray ingest``: which records go to which arrays, as what.

A JSON or TOML file (by its extension: ``.json``, ``.toml``) with a list of routes;
the first route whose ``match`` (a shell pattern, ``fnmatch``) matches a record's tag
(fluentd tag, MQTT topic, HTTP path after ``/ingest/``) takes it::

    [[routes]]
    match = "sensor.*"          # tags/topics this route takes
    array = "sensors"           # root key of the array (made when missing)
    layout = "struct"           # "struct": one array of a structured dtype (default)
                                # "columns": one array per field, "<array>.<field>"
    chunk_items = 16384         # items per chunk of a new array (optional; each group
                                # commit rewrites the last chunk: keep it small)
    fields = [                  # [name, dtype] or [name, dtype, source]
        ["time", "f8", "@time"],    # @time: the event time in seconds; @tag: the tag
        ["sensor", "u4"],           # source defaults to the name: record["sensor"]
        ["value", "f8"],
    ]

Pure: no I/O but reading the file; :func:`compile_routes` checks everything and says
what is wrong and where.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass

import numpy as np
import tomllib

LAYOUTS = ("struct", "columns")
SPECIAL_SOURCES = ("@time", "@tag")
CHUNK_ITEMS_DEFAULT = 1 << 14     # each group commit rewrites the last chunk: small ones keep commits quick


class MappingError(ValueError):
    """The mapping file is malformed (the message names the route and what to fix)."""


@dataclass(frozen=True)
class Field:
    name: str
    dtype: np.dtype
    source: str


@dataclass(frozen=True)
class Route:
    match: str
    array: str
    layout: str
    fields: tuple[Field, ...]
    chunk_items: int
    pattern: re.Pattern

    @property
    def dtype(self) -> np.dtype:
        """The structured dtype of one row (all fields)."""
        return np.dtype([(f.name, f.dtype) for f in self.fields])

    def arrays(self) -> list[tuple[str, np.dtype]]:
        """``[(root key, dtype)]`` of the arrays this route appends to."""
        if self.layout == "struct":
            return [(self.array, self.dtype)]
        return [(f"{self.array}.{f.name}", f.dtype) for f in self.fields]


def load(path: str) -> list[Route]:
    """The routes of the mapping file ``path`` (JSON or TOML)."""
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".json":
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        elif ext == ".toml":
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        else:
            raise MappingError(f"mapping file {path}: give a .json or .toml file")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"mapping file {path} is not valid {ext[1:].upper()}: {exc}") from None
    return compile_routes(doc, path)


def compile_routes(doc, where: str = "mapping") -> list[Route]:
    """Check a parsed mapping document and compile its routes."""
    if not isinstance(doc, dict) or not isinstance(doc.get("routes"), list) or not doc["routes"]:
        raise MappingError(f"{where}: needs a non-empty list 'routes' (see neoarray/ingest/mapping.py)")
    routes = [_route(r, f"{where}: route {i + 1}") for i, r in enumerate(doc["routes"])]
    names = [name for r in routes for name, _ in r.arrays()]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MappingError(f"{where}: arrays {dup} are fed by more than one route; give each route its own array")
    return routes


def _route(r, where) -> Route:
    if not isinstance(r, dict):
        raise MappingError(f"{where} is not a table/object")
    unknown = set(r) - {"match", "array", "layout", "fields", "chunk_items"}
    if unknown:
        raise MappingError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("match", "array"):
        if not isinstance(r.get(key), str) or not r[key]:
            raise MappingError(f"{where}: '{key}' must be a non-empty string")
    layout = r.get("layout", "struct")
    if layout not in LAYOUTS:
        raise MappingError(f"{where}: layout {layout!r} is not one of {LAYOUTS}")
    chunk_items = r.get("chunk_items", CHUNK_ITEMS_DEFAULT)
    if not isinstance(chunk_items, int) or isinstance(chunk_items, bool) or chunk_items < 1:
        raise MappingError(f"{where}: chunk_items must be a positive integer")
    fields = r.get("fields")
    if not isinstance(fields, list) or not fields:
        raise MappingError(f"{where}: 'fields' must be a non-empty list of [name, dtype(, source)]")
    compiled = tuple(_field(f, f"{where}, field {j + 1}") for j, f in enumerate(fields))
    names = [f.name for f in compiled]
    if len(set(names)) != len(names):
        raise MappingError(f"{where}: field names repeat: {names}")
    return Route(r["match"], r["array"], layout, compiled, chunk_items,
                 re.compile(fnmatch.translate(r["match"])))


def _field(f, where) -> Field:
    if not isinstance(f, list) or len(f) not in (2, 3) or not all(isinstance(x, str) for x in f):
        raise MappingError(f"{where}: give [name, dtype] or [name, dtype, source] (strings), not {f!r}")
    name, dtype_text = f[0], f[1]
    source = f[2] if len(f) == 3 else name
    try:
        dtype = np.dtype(dtype_text)
    except TypeError:
        raise MappingError(f"{where}: {dtype_text!r} is not a numpy dtype") from None
    if dtype.kind not in "biufSU" or dtype.itemsize == 0:
        raise MappingError(f"{where}: dtype {dtype_text!r}: give a number, bool or fixed-size "
                           "string dtype (e.g. 'f8', 'i4', 'S16')")
    if source.startswith("@") and source not in SPECIAL_SOURCES:
        raise MappingError(f"{where}: source {source!r}: the special sources are {SPECIAL_SOURCES}")
    return Field(name, dtype, source)
