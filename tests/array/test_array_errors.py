"""The array error tree: builtin bases, NeoError base, pickling."""

import pickle

import pytest

from neoarray.array import errors
from neoarray.errors import NeoError

CLASSES = [(errors.ArrayIndexError, IndexError), (errors.ArrayShapeError, ValueError),
           (errors.ArrayValueError, ValueError), (errors.ArrayDtypeError, TypeError),
           (errors.ArrayCastError, TypeError), (errors.ArrayTooLargeError, MemoryError),
           (errors.ArrayHandleError, pickle.PicklingError)]


@pytest.mark.parametrize("cls, builtin", CLASSES)
def test_errors_have_meaningful_bases_and_survive_pickling(cls, builtin):
    error = cls("message naming the problem")
    assert isinstance(error, builtin)
    assert isinstance(error, errors.ArrayError) and isinstance(error, NeoError)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and str(copy) == "message naming the problem"
    made = cls.__new__(cls, "message")      # how tblib unpickles (Dask installs it)
    assert type(made) is cls and made.args == ("message",)
