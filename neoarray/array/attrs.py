"""Attribute values stored with arrays and datasets: plain values only.

``A.attrs`` of a :class:`neoarray.ndarray`, and the attributes of the groups and
variables of :mod:`neoarray.datasets`, are dicts of ``None``, ``bool``, ``int``,
``float``, ``complex``, ``str``, ``bytes``, numpy scalars and arrays without Python
objects (stored as :class:`AttrArray`: dtype, shape and bytes, so a stored value
does not depend on numpy's pickle format), and lists, tuples and ``str``-keyed dicts
of those.  Anything else is refused (:class:`ArrayAttrsError` names it): a reader in
another process must be able to load every value.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from .errors import ArrayAttrsError

ATTR_DEPTH_MAX = 16                 # nesting of lists and dicts in one attribute value


@dataclasses.dataclass(frozen=True)
class AttrArray:
    """A numpy attribute value as plain values: dtype (``.npy`` descr), shape, bytes."""

    descr: object
    shape: tuple
    data: bytes

    @classmethod
    def of(cls, value: np.typing.ArrayLike) -> AttrArray:
        """The plain form of the numpy array or scalar ``value``."""
        value = np.asarray(value)
        return cls(np.lib.format.dtype_to_descr(value.dtype), value.shape, value.tobytes())

    def value(self) -> np.ndarray | np.generic:
        """The numpy array (or scalar, for shape ``()``) it stands for."""
        dtype = np.lib.format.descr_to_dtype(self.descr)
        array = np.frombuffer(self.data, dtype=dtype).reshape(self.shape).copy()
        return array[()] if self.shape == () else array


_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def _plain(value, where: str, depth: int):
    if depth > ATTR_DEPTH_MAX:
        raise ArrayAttrsError(f"attribute {where} nests deeper than {ATTR_DEPTH_MAX} levels")
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.hasobject:
            raise ArrayAttrsError(f"attribute {where} is a numpy value of dtype object: "
                               "store a fixed-size dtype or a list of plain values")
        return AttrArray.of(value)
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ArrayAttrsError(f"attribute {where} is a mapping with keys other than str")
        return {k: _plain(v, f"{where}[{k!r}]", depth + 1) for k, v in value.items()}
    raise ArrayAttrsError(f"attribute {where} is a {type(value).__name__}: store None, bool, "
                       "numbers, str, bytes, numpy values, or lists and dicts of them")


def plain_attrs(attrs: Mapping | None, owner: str = "") -> dict:
    """``attrs`` as stored (numpy values made :class:`AttrArray`); DatasetError naming
    the attribute that cannot be stored."""
    out = {}
    for key, value in (attrs or {}).items():
        if not isinstance(key, str):
            raise ArrayAttrsError(f"attribute names are str, not {key!r}{owner}")
        out[key] = _plain(value, f"{key!r}{owner}", 0)
    return out


def _python(value):
    if isinstance(value, AttrArray):
        return value.value()
    if isinstance(value, list):
        return [_python(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_python(v) for v in value)
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    return value


def python_attrs(stored: Mapping) -> dict:
    """The attribute values of a stored dict (the inverse of :func:`plain_attrs`)."""
    return {k: _python(v) for k, v in stored.items()}
