"""Pure tests of selection parsing and chunk projection (no storage)."""

import ast
import math
import re

import numpy as np
import pytest
from array_helpers import chunk_shapes, examples, indices, shapes
from hypothesis import given
from hypothesis import strategies as st

from neoarray.array import indexing
from neoarray.array.errors import ArrayIndexError

SETTINGS = examples(400)


def split_chunks(array, chunks):
    """A dict chunk key -> full chunk copy (padded with -1), the pure model of storage."""
    grid = [-(-n // c) for n, c in zip(array.shape, chunks)]
    store = {}
    for key in np.ndindex(*grid):
        full = np.full(chunks, -1, dtype=array.dtype)
        region = tuple(slice(j * c, (j + 1) * c) for j, c in zip(key, chunks))
        part = array[region]
        full[tuple(slice(0, e) for e in part.shape)] = part
        store[key] = full
    return store


def join_chunks(store, shape, chunks):
    out = np.empty(shape, dtype=next(iter(store.values())).dtype if store else float)
    for key, full in store.items():
        region = tuple(slice(j * c, (j + 1) * c) for j, c in zip(key, chunks))
        view = out[region]
        view[...] = full[tuple(slice(0, e) for e in view.shape)]
    return out


def numpy_or_error(array, key):
    try:
        return array[key], None
    except IndexError as exc:
        return None, exc


@st.composite
def cases(draw, advanced=True, unique=False):
    shape = draw(shapes())
    chunks = draw(chunk_shapes(shape))
    key = draw(indices(shape, advanced=advanced, unique=unique))
    return shape, chunks, key


@SETTINGS
@given(cases())
def test_projections_read_like_numpy(case):
    shape, chunks, key = case
    array = np.arange(math.prod(shape)).reshape(shape)
    expected, error = numpy_or_error(array, key)
    if error is not None:
        with pytest.raises(IndexError):
            indexing.parse_selection(key, shape)
        return
    sel = indexing.parse_selection(key, shape)
    assert sel.result_shape == np.shape(expected)
    store = split_chunks(array, chunks)
    canon = np.full(sel.canon_shape, -7)
    seen = set()
    for proj in indexing.iter_projections(sel, chunks):
        assert proj.key not in seen
        seen.add(proj.key)
        canon[proj.out] = indexing.read_projection(sel, store[proj.key], proj)
    result = sel.result_from_canon(canon)
    np.testing.assert_array_equal(result, expected)
    assert sel.scalar == np.isscalar(expected)


@SETTINGS
@given(cases(unique=True), st.integers(0, 2**32 - 1))
def test_projections_write_like_numpy(case, seed):
    shape, chunks, key = case
    array = np.arange(math.prod(shape)).reshape(shape)
    expected, error = numpy_or_error(array, key)
    if error is not None:
        return
    value = np.random.default_rng(seed).integers(-50, 0, size=np.shape(expected))
    oracle = array.copy()
    oracle[key] = value
    sel = indexing.parse_selection(key, shape)
    canon = sel.canon_from_value(value)
    store = split_chunks(array, chunks)
    for proj in indexing.iter_projections(sel, chunks):
        indexing.write_projection(sel, store[proj.key], proj, canon[proj.out])
        if proj.full:  # a full projection overwrites every in-bounds item
            region = tuple(slice(j * c, (j + 1) * c) for j, c in zip(proj.key, chunks))
            assert (oracle[region] < 0).all() or oracle[region].size == 0 or value.size == 0
    np.testing.assert_array_equal(join_chunks(store, shape, chunks), oracle)


@SETTINGS
@given(st.integers(1, 50), st.integers(1, 7), st.data())
def test_axis_projections_cover_slice_once(n, chunk, data):
    s = data.draw(st.builds(slice, st.none() | st.integers(-n - 3, n + 3),
                            st.none() | st.integers(-n - 3, n + 3),
                            st.none() | st.integers(-9, 9).filter(bool)))
    axis_slice = indexing._slice_of(s, n)
    items = list(range(n))[s]
    got = [None] * len(items)
    for j, inner, out, full in indexing.axis_projections(axis_slice, chunk, n):
        chunk_items = list(range(j * chunk, min((j + 1) * chunk, n)))
        picked = chunk_items[inner]
        assert len(picked) == out.stop - out.start
        got[out] = picked
        assert full == (picked == chunk_items or picked == chunk_items[::-1]) or \
            (full is False and abs(axis_slice.step) != 1)
    assert got == items


def test_huge_axis_work_is_proportional_to_selection():
    shape, chunks = (10**18, 2), (1 << 18, 2)
    sel = indexing.parse_selection((slice(5 * 10**17, 5 * 10**17 + 10**6), 1), shape)
    assert indexing.count_projections(sel, chunks) <= 10**6 // (1 << 18) + 2
    sel = indexing.parse_selection(slice(None, None, 10**15), shape)
    assert sel.result_shape == (1000, 2)
    assert indexing.count_projections(sel, chunks) == 1000
    sel = indexing.parse_selection(([3, 10**18 - 1, -5], [0, 1, 1]), shape)
    projections = list(indexing.iter_projections(sel, chunks))
    assert sorted(p.key for p in projections) == [(0, 0), ((10**18 - 1) // (1 << 18), 0)]


@pytest.mark.parametrize("key, message", [
    ((10,), "index 10 is out of bounds for axis 0 with size 10"),
    ((0, -5), "index -5 is out of bounds for axis 1 with size 4"),
    ((np.array([1, 12]),), "index 12 is out of bounds for axis 0 with size 10"),
    ((0, 0, 0), "too many indices"),
    ((Ellipsis, Ellipsis), "single ellipsis"),
    ((np.ones(3, dtype=bool),), "boolean index did not match"),
    ((np.array([0.5]),), "integer or boolean type"),
    ((1.5,), "only integers"),
    ((True,), "boolean scalar"),
    (([0, 1], [0, 1, 2]), "could not be broadcast"),
])
def test_bad_indices_raise_index_error(key, message):
    with pytest.raises(ArrayIndexError, match=message) as info:
        indexing.parse_selection(key, (10, 4))
    assert isinstance(info.value, IndexError)


def test_zero_step_is_value_error():
    with pytest.raises(ValueError, match="step cannot be zero"):
        indexing.parse_selection(slice(None, None, 0), (4,))


def test_a_failing_randomized_test_reports_how_to_replay_it():
    """A failing randomized test's report (the exception notes pytest prints) holds the
    failing seed and a replay decorator, and that decorator replays the same seed.

    Only Hypothesis' API is relied on (``print_blob`` and ``reproduce_failure(version,
    blob)``), not the wording around it, which changes between releases."""
    from hypothesis import given as given_
    from hypothesis import reproduce_failure
    from hypothesis import settings as settings_

    seeds = []

    @settings_(max_examples=200, database=None, print_blob=True, deadline=None)
    @given_(st.integers(0, 2**32 - 1))
    def fails_from_1000(seed):
        seeds.append(seed)
        assert seed < 1000

    with pytest.raises(AssertionError) as info:
        fails_from_1000()
    failing = seeds[-1]              # Hypothesis ends by re-running the shrunk example
    assert failing >= 1000
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert str(failing) in notes, notes
    decorator = re.search(r"@reproduce_failure\(([^)]*)\)", notes)
    assert decorator is not None, notes
    version, blob = ast.literal_eval(f"({decorator.group(1)})")

    replayed = []

    @reproduce_failure(version, blob)
    @settings_(database=None, deadline=None)
    @given_(st.integers(0, 2**32 - 1))
    def replay(seed):
        replayed.append(seed)
        assert seed < 1000

    with pytest.raises(AssertionError):
        replay()
    assert replayed and set(replayed) == {failing}


def test_empty_broadcast_of_index_arrays_skips_bounds_checks_like_numpy():
    import neoarray.array as na
    oracle = np.zeros((1, 1, 0), dtype=bool)
    array = na.zeros((1, 1, 0), dtype=bool, chunks=(1, 1, 1))
    key = (Ellipsis, np.array([], dtype=np.int64), np.array([0]))
    assert array[key].shape == oracle[key].shape == (1, 0)
    with pytest.raises(IndexError):
        na.zeros((2, 3))[np.array([], dtype=int), 7]   # a Python int is always checked
