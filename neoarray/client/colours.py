"""Which cache colour a read uses (see :mod:`neoarray.client.cache`).

A read names its colour through a context variable, so any code path reaches the
storage without new arguments:

* ``with neoarray.cache_colour("scan"): ...`` is the user's override: every read in
  the block (plain ZODB loads and array chunks) uses that colour;
* an array reads its chunks in its own colour (``ndarray.colour``) unless an override
  is active; the array code wraps its chunk loads in :func:`reading_as`;
* anything else (ZODB loads of ordinary objects, BTree nodes) uses the storage's
  default colour, ``meta``.

Context variables do not cross into thread pools by themselves: code that hands
loads to a pool captures :func:`current` first and passes it on.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("neoarray_colour_override", default=None)
_reading: contextvars.ContextVar[str | None] = contextvars.ContextVar("neoarray_colour", default=None)


@contextlib.contextmanager
def cache_colour(name: str | None) -> Iterator[None]:
    """Read in colour ``name`` within the block: every load, of ZODB objects and array chunks.

    >>> with neoarray.cache_colour("scan"):          # doctest: +SKIP
    ...     A[1000:2000].sum()

    Parameters
    ----------
    name : str or None
        A colour of the storage's cache (``meta``, ``hot``, ``scan`` or one added with
        :meth:`~neoarray.client.storage.NeoStorage.add_cache_colour`); None: no override.

    Raises
    ------
    TypeError
        ``name`` is not a str.
    """
    if name is not None and not isinstance(name, str):
        raise TypeError(f"a cache colour is a name (str), not {type(name).__name__}")
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)


@contextlib.contextmanager
def reading_as(name: str | None) -> Iterator[None]:
    """Internal: chunk loads of an array in its colour (an override wins)."""
    token = _reading.set(name)
    try:
        yield
    finally:
        _reading.reset(token)


def current(default: str | None = None) -> str | None:
    """The colour of a read made here: the override, else the reader's, else ``default``."""
    return _override.get() or _reading.get() or default
