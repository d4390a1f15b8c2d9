"""numpy protocols: ``__array_ufunc__`` and ``__array_function__``.

Elementwise ufuncs give a lazy expression (:mod:`.lazy`), computed chunk by chunk
when read or stored, or write into ``out=`` chunk by chunk (:mod:`.elementwise`).  ``matmul`` goes to :mod:`.linalg`, ``accumulate`` to
:mod:`.scans`; ``np.where``, ``np.isclose``, ``np.allclose``, ``np.array_equal``,
``np.histogram`` and ``np.bincount`` to :mod:`.logic`; the numpy functions named like ndarray methods to :mod:`.methods`.

Reductions dispatched by ``__array_function__`` (``np.sum``, ``np.mean``, ...)
and ``ufunc.reduce`` go to :mod:`.reductions`; other numpy functions receive
the arrays materialised with ``numpy.asarray`` (subject to
``config.memory_bytes_max``).
"""

import inspect

import numpy as np

from . import contract, core, elementwise, lazy, linalg, logic, methods, plans, scans

REDUCE_UFUNCS = {np.add: "sum", np.multiply: "prod", np.minimum: "min",
                 np.maximum: "max", np.logical_and: "all", np.logical_or: "any"}
UFUNC_KWARGS = {"dtype", "casting"}


def array_ufunc(ufunc, method, inputs, kwargs):
    """Implementation of ``ndarray.__array_ufunc__``."""
    if ufunc.signature is not None:         # generalized ufuncs: matmul only
        return _matmul(ufunc, method, inputs, kwargs)
    if method == "reduce":
        return _ufunc_reduce(ufunc, inputs, kwargs)
    if method == "accumulate":
        return _ufunc_accumulate(ufunc, inputs, kwargs)
    out = _single_out(kwargs)
    if (method != "__call__" or ufunc.nout != 1 or set(kwargs) - UFUNC_KWARGS
            or isinstance(out, tuple)):
        return NotImplemented
    if not all(map(elementwise.is_operand, inputs)):
        return NotImplemented
    if out is None:
        return lazy.lazyarray(ufunc, inputs, kwargs)
    return elementwise.apply(ufunc, inputs, kwargs, out)


def _single_out(kwargs):
    out = kwargs.pop("out", None)
    return out[0] if isinstance(out, tuple) and len(out) == 1 else out


def _vectors_first(a, b, out=None, dtype=None):
    """``a @ b``: two vectors' sum of products (``contract.dot1d``), else ``linalg``."""
    result = contract.dot1d(a, b, out=out, dtype=dtype)
    return linalg.matmul(a, b, out=out, dtype=dtype) if result is NotImplemented else result


def _matmul(ufunc, method, inputs, kwargs):
    if ufunc is not np.matmul or method != "__call__" or len(inputs) != 2:
        return NotImplemented
    out, dtype = _single_out(kwargs), kwargs.pop("dtype", None)
    if kwargs or isinstance(out, tuple):
        return NotImplemented
    return _vectors_first(*inputs, out=out, dtype=dtype)


def _ufunc_accumulate(ufunc, inputs, kwargs):
    out = _single_out(kwargs)
    axis, dtype = kwargs.pop("axis", 0), kwargs.pop("dtype", None)
    if kwargs or len(inputs) != 1 or isinstance(out, tuple):
        return NotImplemented
    return scans.accumulate(ufunc, inputs[0], axis, dtype, out)


def _ufunc_reduce(ufunc, inputs, kwargs):
    name = REDUCE_UFUNCS.get(ufunc)
    if name is None or len(inputs) != 1 or not isinstance(inputs[0], core.ChunkedArray):
        return NotImplemented
    array = inputs[0]
    axis = kwargs.pop("axis", 0)
    keepdims = kwargs.pop("keepdims", False)
    out = kwargs.pop("out", None)
    if isinstance(out, tuple):
        out = out[0]
    extra = {"dtype": kwargs.pop("dtype")} if "dtype" in kwargs and name in (
        "sum", "prod") else {}
    if kwargs:
        return NotImplemented
    return plans.reduce(array, name, axis, keepdims, out=out, **extra)


# --------------------------------------------------------------------------
# __array_function__

REDUCTION_FUNCS = {
    np.sum: "sum", np.prod: "prod", np.mean: "mean", np.var: "var", np.std: "std",
    np.min: "min", np.amin: "min", np.max: "max", np.amax: "max", np.any: "any",
    np.all: "all", np.count_nonzero: "count_nonzero", np.argmin: "argmin",
    np.argmax: "argmax",
}
ACCEPTED = {"axis", "dtype", "out", "keepdims", "ddof", "correction"}


def _bound_arguments(func, args, kwargs):
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    params = {k: v for k, v in bound.arguments.items() if v is not np._NoValue}
    params.pop(next(iter(inspect.signature(func).parameters)), None)
    return params


def _reduction(array, func, args, kwargs):
    """Run a dispatched reduction, or return NotImplemented if unsupported."""
    name = REDUCTION_FUNCS[func]
    params = _bound_arguments(func, args, kwargs)
    if params is None or set(params) - ACCEPTED:
        return NotImplemented
    if "correction" in params:
        params["ddof"] = params.pop("correction")
    axis = params.pop("axis", None)
    keepdims = bool(params.pop("keepdims", False))
    if name in ("argmin", "argmax"):
        return plans.arg_reduce(array, name, axis, keepdims, **params)
    return plans.reduce(array, name, axis, keepdims, **params)


def _materialise(value):
    if isinstance(value, core.ChunkedArray):
        return np.asarray(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_materialise(v) for v in value)
    return value


def _cumulative(ufunc, numpy_func):
    def run(a, axis=None, dtype=None, out=None):
        return scans.accumulate(ufunc, a, axis, dtype, out, numpy_func=numpy_func)
    return run


def _neo_first(func):
    """``func(a, ...)`` when ``a`` is a neoarray, else NotImplemented (numpy's own)."""
    def run(a, *args, **kwargs):
        return func(a, *args, **kwargs) if isinstance(a, core.ChunkedArray) else NotImplemented
    return run


_ARRAY_FUNCTIONS = {
    np.dot: lambda a, b, out=None: _vectors_first(a, b, out),
    np.einsum: contract.einsum, np.tensordot: contract.tensordot,
    np.inner: contract.inner, np.vdot: contract.vdot, np.cumsum: _cumulative(np.add, np.cumsum),
    np.cumprod: _cumulative(np.multiply, np.cumprod),
    np.transpose: _neo_first(lambda a, axes=None: methods.transpose(a, axes)),
    np.swapaxes: _neo_first(methods.swapaxes),
    np.reshape: _neo_first(lambda a, shape=None, order="C", **kw: methods.reshape(a, (kw.get("newshape", shape),), order)),
    np.ravel: _neo_first(lambda a, order="C": methods.reshape(a, (-1,), order)),
    np.squeeze: _neo_first(lambda a, axis=None: methods.squeeze(a, axis)),
    np.expand_dims: _neo_first(methods.expand_dims),
    np.clip: _neo_first(lambda a, a_min=None, a_max=None, **kw: methods.clip(
        a, kw.get("min", a_min), kw.get("max", a_max)) if not (set(kw) - {"min", "max"}) else NotImplemented),
    np.round: _neo_first(lambda a, decimals=0, out=None: methods.round_(a, decimals) if out is None
                         else NotImplemented),
    np.copy: _neo_first(lambda a, order="K", subok=False: methods.copy(a)),
    np.nonzero: _neo_first(methods.nonzero),
    np.where: logic.where, np.isclose: logic.isclose, np.allclose: logic.allclose,
    np.array_equal: logic.array_equal, np.histogram: logic.histogram,
    np.bincount: logic.bincount,
    np.diff: lambda a, n=1, axis=-1, prepend=None, append=None: (
        scans.diff(a, n, axis) if prepend is None and append is None else NotImplemented),
}
if hasattr(np, "around"):
    _ARRAY_FUNCTIONS[np.around] = _ARRAY_FUNCTIONS[np.round]


def register(functions):
    """Run ``{numpy function: implementation}`` in ``__array_function__``: an
    implementation takes numpy's arguments and returns NotImplemented to let numpy
    run on the arrays in memory.  The package registers :mod:`.ordering` (``np.sort``,
    ``np.argsort``, ``np.unique``, ``np.searchsorted``), :mod:`.quantiles`
    (``np.quantile``, ``np.percentile``, ``np.median`` and their nan variants) and
    :mod:`.joining` (``np.concatenate``, ``np.stack``, ``np.vstack``, ``np.hstack``)."""
    _ARRAY_FUNCTIONS.update(functions)


def array_function(array, func, types, args, kwargs):
    """Implementation of ``ndarray.__array_function__``."""
    if func in REDUCTION_FUNCS and args and args[0] is array:
        result = _reduction(array, func, args, kwargs)
        if result is not NotImplemented:
            return result
    special = _ARRAY_FUNCTIONS.get(func)
    if special is not None:
        result = special(*args, **kwargs)
        if result is not NotImplemented:
            return result
    if func is np.shape and args[0] is array:
        return array.shape
    if func is np.ndim and args[0] is array:
        return array.ndim
    if func is np.size and args[0] is array and len(args) == 1 and not kwargs:
        return array.size
    return _in_memory(func, args, kwargs)


# numpy functions that write into their first argument
WRITES_FIRST = frozenset({np.copyto, np.put, np.putmask, np.place, np.fill_diagonal, np.put_along_axis})


def _in_memory(func, args, kwargs):
    """``func`` on the arrays loaded (``np.asarray``, within ``config.memory_bytes_max``);
    a neoarray that ``func`` writes into (``out=``, or the first argument of
    ``WRITES_FIRST``) gets the written values back, chunk by chunk."""
    loaded_args = list(_materialise(tuple(args)))
    loaded_kwargs = {k: _materialise(v) for k, v in kwargs.items()}
    targets = []                                   # (neoarray, its loaded copy)
    if func in WRITES_FIRST and args and isinstance(args[0], core.ndarray):
        targets.append((args[0], loaded_args[0]))
    out = kwargs.get("out")
    for neo, loaded in zip(out if isinstance(out, tuple) else (out,),
                           loaded_kwargs["out"] if isinstance(out, tuple) else (loaded_kwargs.get("out"),)):
        if isinstance(neo, core.ndarray):
            targets.append((neo, loaded))
    result = func(*loaded_args, **loaded_kwargs)
    for neo, loaded in targets:
        neo[...] = loaded
    if isinstance(out, core.ndarray):
        return out
    if isinstance(out, tuple) and any(isinstance(o, core.ndarray) for o in out):
        return out
    return result
