"""Type aliases of the public array API, for annotations and the API reference.

They describe what the functions accept, in numpy's terms; nothing checks them at run
time (the functions do, with errors naming what was wrong).
"""
from __future__ import annotations

from typing import Any, Literal

import numpy.typing as npt

#: An array shape or chunk shape: an int (1-D) or a tuple of ints.
ShapeLike = int | tuple[int, ...]

#: Anything ``numpy.dtype`` accepts: a dtype, a type (``float``), a string (``"<f8"``).
DTypeLike = npt.DTypeLike

#: The axes a reduction runs over: one axis, several, or None (all of them).
AxisLike = int | tuple[int, ...] | None

#: Memory order of the items inside a chunk.
OrderLike = Literal["C", "F"]

#: Memory order of a new array made from another (``'A'`` and ``'K'``: the source's).
OrderKALike = Literal["C", "F", "A", "K"] | None

#: A chunk codec: None, ``'zlib'``, ``'blosc'``, ``'zstd'``, ``'lz4'``, a numcodecs
#: config dict (``{'id': 'blosc', 'cname': 'lz4', 'clevel': 5, 'shuffle': 1}``) or a
#: numcodecs codec object.
CodecLike = None | str | dict[str, Any] | Any

__all__ = ["AxisLike", "CodecLike", "DTypeLike", "OrderKALike", "OrderLike", "ShapeLike"]
