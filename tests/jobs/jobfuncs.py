"""Functions that map_blocks jobs import by name ("tests.jobs.jobfuncs:...")."""
import os

import numba
import numpy as np


def double_plus_one(x):
    return 2 * x + 1


def weighted(x, y):
    return x * 0.5 + y


@numba.njit(nogil=True, cache=True)
def clip_numba(x):
    out = np.empty(x.shape, dtype=np.float64)
    flat_in, flat_out = x.ravel(), out.ravel()
    for i in range(flat_in.size):
        v = flat_in[i]
        flat_out[i] = 0.0 if v < 0.0 else (min(v, 1.0))
    return out


def fails_once_per_marker(x):
    """Raises while a marker file (named by NEOARRAY_TEST_MARKER) exists, consuming it."""
    marker = os.environ.get("NEOARRAY_TEST_MARKER")
    if marker and os.path.exists(marker) and (x > 0).any():
        os.remove(marker)
        raise RuntimeError("injected failure of one block")
    return x + 1


def exits_once_per_marker(x):
    """Ends its process (a worker dying) while the NEOARRAY_TEST_MARKER file exists."""
    marker = os.environ.get("NEOARRAY_TEST_MARKER")
    if marker and os.path.exists(marker) and (x > 0).any():
        os.remove(marker)
        os._exit(3)
    return x + 1


def always_fails(x):
    raise RuntimeError("this function always fails")


def wrong_shape(x):
    return x[:1]


def ramp(x):
    """Not uniform on a block of fill values: every chunk is computed."""
    return x + np.arange(x.size, dtype=np.float64).reshape(x.shape)
