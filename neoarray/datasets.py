"""Datasets: arrays stored with named dimensions, coordinates and attributes.

A :class:`Group` is a persistent object that holds *variables* (a
:class:`Variable`: a :class:`neoarray.ndarray` with the names of its dimensions and
its attributes), which of them are coordinates, the group's own attributes, and
child groups, nested by path (``"climate/2024"``).  It is what xarray's Dataset is,
stored: :mod:`neoarray.xarray` writes datasets into groups (``to_neoarray``) and
opens them lazily (``xarray.open_dataset(..., engine="neoarray")``), but this module
needs neither xarray nor pandas: a plain ZODB program reads and writes groups with
nothing but numpy.

Persistent state (plain values, so stored groups depend on no xarray class)::

    Group:     _variables   PersistentMapping name -> Variable (insertion order kept)
               _coords      tuple of the names of the coordinate variables
               _groups      PersistentMapping name -> Group
               attrs        dict of attribute values (see :func:`plain_attrs`)
    Variable:  dims         tuple of dimension names, one per axis of ``data``
               data         neoarray.ndarray
               attrs        dict of attribute values

Attribute values are those of :mod:`neoarray.array.attrs` (plain values and numpy
values; anything else is refused with :class:`DatasetError`, since a reader in
another process must be able to load it).

Groups live anywhere in the object graph; :func:`locate` finds one by a path
whose first part is a key of the database root (or of any mapping) and whose next
parts name child groups.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import persistent
from persistent.mapping import PersistentMapping

from .array.attrs import AttrArray, plain_attrs, python_attrs
from .array.core import ndarray
from .array.errors import DatasetError

PATH_PARTS_MAX = 64                 # parts of a group path
__all__ = ["AttrArray", "DatasetError", "Group", "Variable", "exists", "locate", "plain_attrs",
           "put", "python_attrs", "split_path"]


def _name(name, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise DatasetError(f"a {what} name is a non-empty str without '/', not {name!r}")
    return name


class Variable(persistent.Persistent):
    """One stored variable: ``data`` (a :class:`neoarray.ndarray`), the names of its
    dimensions ``dims`` (one per axis) and its attributes ``attrs``.

    Parameters
    ----------
    dims : str or iterable of str
        One dimension name per axis of ``data`` (a str: a 1-D variable).
    data : neoarray.ndarray
        The values.
    attrs : mapping, optional
        The variable's attributes (see the module docstring for the values allowed).

    Raises
    ------
    DatasetError
        ``data`` is not a neoarray array, ``dims`` do not name each axis once, or an
        attribute value cannot be stored.
    """

    def __init__(self, dims: str | Iterable[str], data: ndarray, attrs: Mapping[str, Any] | None = None) -> None:
        if not isinstance(data, ndarray):
            raise DatasetError(f"a variable's data is a neoarray.ndarray, not {type(data).__name__}")
        dims = (dims,) if isinstance(dims, str) else tuple(dims)
        if len(dims) != data.ndim:
            raise DatasetError(f"dims {dims} name {len(dims)} axes; the data has {data.ndim} "
                               f"(shape {data.shape})")
        if len(set(dims)) != len(dims):
            raise DatasetError(f"dims {dims} repeat a name")
        self.dims = tuple(_name(d, "dimension") for d in dims)
        self.data = data
        self.attrs = plain_attrs(attrs)

    @property
    def shape(self) -> tuple[int, ...]:
        """The data's shape."""
        return self.data.shape

    def __repr__(self):
        return (f"<neoarray.datasets.Variable dims={self.dims} shape={self.data.shape} "
                f"dtype={self.data.dtype}>")


class Group(persistent.Persistent):
    """Stored variables, the coordinates among them, attributes and child groups.

    Parameters
    ----------
    attrs : mapping, optional
        The group's attributes (see the module docstring for the values allowed).
    """

    def __init__(self, attrs: Mapping[str, Any] | None = None) -> None:
        self._variables = PersistentMapping()
        self._coords = ()
        self._groups = PersistentMapping()
        self.attrs = plain_attrs(attrs)

    # -- variables --------------------------------------------------------------------
    @property
    def variables(self) -> dict[str, Variable]:
        """``name -> Variable`` in the order they were added (a copy)."""
        return dict(self._variables)

    @property
    def coords(self) -> tuple[str, ...]:
        """Names of the variables that are coordinates."""
        return self._coords

    def add_variable(self, name: str, dims: str | Iterable[str], data: ndarray,
                     attrs: Mapping[str, Any] | None = None, *, coord: bool = False) -> Variable:
        """Store ``data`` as variable ``name``.

        Parameters
        ----------
        name : str
            A new variable's name (non-empty, without ``/``).
        dims, data, attrs
            As :class:`Variable`.
        coord : bool
            The variable is a coordinate.

        Returns
        -------
        Variable
            The new variable.

        Raises
        ------
        DatasetError
            ``name`` exists, ``dims`` do not match the data, or a dimension's size
            differs from the one the group's other variables give it.
        """
        _name(name, "variable")
        if name in self._variables:
            raise DatasetError(f"variable {name!r} exists already: remove_variable({name!r}) first")
        variable = Variable(dims, data, attrs)
        sizes = self.dims
        for dim, size in zip(variable.dims, data.shape):
            if sizes.get(dim, size) != size:
                raise DatasetError(f"variable {name!r} gives dimension {dim!r} size {size}; "
                                   f"the group's other variables give it {sizes[dim]}")
        self._variables[name] = variable
        if coord:
            self._coords += (name,)
        return variable

    def remove_variable(self, name: str) -> None:
        """Remove variable ``name`` (a coordinate too).

        Raises
        ------
        KeyError
            There is no such variable.
        """
        del self._variables[name]
        self._coords = tuple(c for c in self._coords if c != name)

    def __getitem__(self, name: str) -> Variable:
        return self._variables[name]

    def __contains__(self, name: object) -> bool:
        return name in self._variables

    @property
    def dims(self) -> dict[str, int]:
        """``dimension name -> size``, from the variables."""
        sizes = {}
        for variable in self._variables.values():
            sizes.update(zip(variable.dims, variable.shape))
        return sizes

    # -- child groups -----------------------------------------------------------------
    @property
    def groups(self) -> dict[str, Group]:
        """``name -> Group`` of the child groups (a copy)."""
        return dict(self._groups)

    def group(self, path: str) -> Group:
        """The descendant group at ``path`` (``"a/b"``).

        Raises
        ------
        DatasetError
            A part of ``path`` is missing (the error names it and what is there).
        """
        node = self
        for part in split_path(path):
            child = node._groups.get(part)
            if child is None:
                raise DatasetError(f"no group {part!r} in {path!r} (groups there: "
                                   f"{sorted(node._groups)})")
            node = child
        return node

    def require_group(self, path: str, attrs: Mapping[str, Any] | None = None) -> Group:
        """The descendant group at ``path``, made (with ``attrs``) where missing.

        Returns
        -------
        Group
            The group at ``path`` (``self`` for an empty path).
        """
        node = self
        for part in split_path(path):
            child = node._groups.get(part)
            if child is None:
                child = node._groups[part] = Group(attrs)
            node = child
        return node

    def remove_group(self, name: str) -> None:
        """Remove the child group ``name``.

        Raises
        ------
        KeyError
            There is no such child group.
        """
        del self._groups[name]

    def __repr__(self):
        return (f"<neoarray.datasets.Group variables={list(self._variables)} "
                f"coords={list(self._coords)} groups={list(self._groups)}>")


def split_path(path: str) -> list[str]:
    """The parts of a group path (``"a/b"``, ``"/a/b/"``); ``""`` and ``"/"`` have none.

    Raises
    ------
    DatasetError
        ``path`` is not a str, or has more than :data:`PATH_PARTS_MAX` parts.
    """
    if not isinstance(path, str):
        raise DatasetError(f"a group path is a str like 'name/child', not {path!r}")
    parts = [p for p in path.split("/") if p]
    if len(parts) > PATH_PARTS_MAX:
        raise DatasetError(f"group path {path!r:.80} has more than {PATH_PARTS_MAX} parts")
    return parts


def locate(root: Mapping[str, Any] | Group, path: str) -> Group:
    """The group at ``path`` from ``root``.

    Parameters
    ----------
    root : mapping or Group
        A database root, a mapping or a group.
    path : str
        Each part is a child group's name, or a key of a mapping on the way.

    Returns
    -------
    Group
        The group found.

    Raises
    ------
    DatasetError
        Nothing is at ``path``, or something that is not a group (the error names
        the part and what is there).
    """
    parts = split_path(path)
    node = root
    for i, part in enumerate(parts):
        if isinstance(node, Group):
            node = node.group(part)
        elif isinstance(node, Mapping) or hasattr(node, "keys"):
            try:
                node = node[part]
            except KeyError:
                raise DatasetError(f"nothing at {'/'.join(parts[:i + 1])!r} "
                                   f"(of {path!r}): keys there: {sorted(node.keys())[:20]}") from None
        else:
            raise DatasetError(f"{'/'.join(parts[:i])!r} is a {type(node).__name__}, "
                               f"not a group: cannot go on to {part!r}")
    if not isinstance(node, Group):
        raise DatasetError(f"{path!r} is a {type(node).__name__}, not a neoarray.datasets.Group")
    return node


def exists(root: Mapping[str, Any] | Group, path: str) -> bool:
    """Whether anything (a group or another object) is stored at ``path``."""
    node = root
    for part in split_path(path):
        if isinstance(node, Group):
            node = node.groups.get(part)
        elif hasattr(node, "get"):
            node = node.get(part)
        else:
            return True         # something that is not a group stands on the way
        if node is None:
            return False
    return True


def put(root: MutableMapping[str, Any], path: str, group: Group) -> Group:
    """Store ``group`` at ``path`` (replacing what is there), making the groups on the way.

    Parameters
    ----------
    root : mutable mapping
        A database root or a mapping: the first part of ``path`` is its key.
    path : str
        Where the group goes (``"name"``, ``"name/child"``).
    group : Group
        The group stored.

    Returns
    -------
    Group
        ``group``.

    Raises
    ------
    DatasetError
        ``path`` is empty, or its first part holds something that is not a group.
    """
    parts = split_path(path)
    if not parts:
        raise DatasetError("a dataset is stored under a name: give a group path like 'name' "
                           "or 'name/child', not the database root")
    if len(parts) == 1:
        root[parts[0]] = group
        return group
    head = root.get(parts[0]) if hasattr(root, "get") else None
    if head is None:
        head = root[parts[0]] = Group()
    elif not isinstance(head, Group):
        raise DatasetError(f"{parts[0]!r} holds a {type(head).__name__}, not a group")
    parent = head.require_group("/".join(parts[1:-1]))
    parent._groups[parts[-1]] = group
    return group
