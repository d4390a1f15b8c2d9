"""What ``neoarray ingest`` decides, without I/O: records to rows (validation), which
units of a group commit are new (deduplication), and when a group commit is due.

A *unit* is what one input acknowledges as a whole: a Forward protocol message or
chunk, an MQTT message, an HTTP request.  The committer (``committer.py``) gathers
units into a group commit; :func:`plan` turns them into rows per route, outcomes per
unit and the rejected records, which the committer writes in one transaction before
it acknowledges any unit.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .mapping import Route

REASON_CHARS_MAX = 200


class Rejected(ValueError):
    """A record that cannot be stored; the message says why."""


@dataclass
class Outcome:
    """What became of a unit once its group commit ended."""
    committed: int = 0                      # records stored
    rejected: list = field(default_factory=list)     # [(index in the unit, reason)]
    duplicate: bool = False                 # its dedup key was committed before: nothing stored
    error: str | None = None                # the commit failed: nothing stored, do not acknowledge


@dataclass
class Unit:
    """Records acknowledged together, all of one ``tag``: ``entries`` is
    ``[(time_s, record)]``; ``dedup_key`` (or None) makes a resent unit count once; ``atomic``: one bad record
    rejects the whole unit (HTTP), else the good ones are stored; ``done(outcome)`` is
    called once, after the commit (or its failure)."""
    tag: object
    entries: list
    done: Callable[[Outcome], None]
    dedup_key: str | None = None
    atomic: bool = False
    source: str = ""                        # the input ("forward", "mqtt", "http"): metrics
    received_s: float = 0.0


@dataclass
class Plan:
    """A group commit, decided: ``rows[route index]`` is a structured array of the
    route's rows in arrival order;
    ``outcomes[i]`` is unit ``i``'s; ``rejects`` is ``[(tag, reason, record)]``;
    ``keys`` the dedup keys to remember."""
    rows: dict
    outcomes: list
    rejects: list
    keys: list

    @property
    def records(self) -> int:
        return sum(len(r) for r in self.rows.values())


def _number(kind, dtype):
    if kind == "f":
        def conv(v):
            if type(v) is float or (type(v) is int and abs(v) < 2 ** 1023):
                return v
            raise Rejected(f"{v!r} is not a number")
        return conv
    if kind == "b":
        def conv_b(v):
            if type(v) is bool:
                return v
            raise Rejected(f"{v!r} is not a boolean")
        return conv_b
    info = np.iinfo(dtype)
    low, high = int(info.min), int(info.max)

    def conv_i(v):
        if type(v) is not int:
            raise Rejected(f"{v!r} is not an integer")
        if not low <= v <= high:
            raise Rejected(f"{v} is out of the range of {dtype.name}")
        return v
    return conv_i


def _text(dtype):
    if dtype.kind == "S":
        size = dtype.itemsize

        def conv_s(v):
            b = v.encode() if type(v) is str else v
            if type(b) is not bytes:
                raise Rejected(f"{v!r} is not a string")
            if len(b) > size:
                raise Rejected(f"{len(b)} bytes is longer than {dtype} allows")
            return b
        return conv_s
    chars = dtype.itemsize // 4

    def conv_u(v):
        if type(v) is not str:
            raise Rejected(f"{v!r} is not a string")
        if len(v) > chars:
            raise Rejected(f"{len(v)} characters is longer than {dtype} allows")
        return v
    return conv_u


def converter(route: Route) -> Callable:
    """``convert(tag, time_s, record) -> row tuple`` for ``route``; :class:`Rejected`
    names the field and what is wrong."""
    getters = []
    for f in route.fields:
        conv = _text(f.dtype) if f.dtype.kind in "SU" else _number(f.dtype.kind, f.dtype)
        getters.append((f.name, f.source, conv))

    def convert(tag, time_s, record):
        if not isinstance(record, dict):
            raise Rejected(f"the record is a {type(record).__name__}, not a map")
        row = []
        for name, source, conv in getters:
            if source == "@time":
                value = time_s
            elif source == "@tag":
                value = tag
            else:
                try:
                    value = record[source]
                except KeyError:
                    raise Rejected(f"field {name!r}: the record has no {source!r}") from None
            try:
                row.append(conv(value))
            except Rejected as exc:
                raise Rejected(f"field {name!r}: {exc}") from None
        return tuple(row)
    return convert


class Router:
    """The routes of a mapping, compiled: the route index and converter of a tag
    (remembered per tag, at most ``tags_max`` of them)."""

    def __init__(self, routes: list[Route], tags_max: int = 10_000):
        self.routes = routes
        self._converters = [converter(r) for r in routes]
        self._by_tag: dict = {}
        self.tags_max = tags_max

    def route_of(self, tag) -> int:
        """The index of the first route matching ``tag``; :class:`Rejected` if none."""
        hit = self._by_tag.get(tag)
        if hit is not None:
            return hit
        if not isinstance(tag, str):
            raise Rejected(f"tag {tag!r} is not a string")
        for i, r in enumerate(self.routes):
            if r.pattern.match(tag):
                if len(self._by_tag) >= self.tags_max:
                    self._by_tag.clear()
                self._by_tag[tag] = i
                return i
        raise Rejected(f"no route of the mapping matches tag {tag!r}")

    def row(self, tag, time_s, record) -> tuple[int, tuple]:
        i = self.route_of(tag)
        return i, self._converters[i](tag, time_s, record)


def plan(units: list[Unit], router: Router, committed_before: Callable[[str], bool]) -> Plan:
    """Decide a group commit of ``units`` (arrival order).  ``committed_before(key)``
    tells whether a dedup key was committed by an earlier group commit.  ``rows`` maps
    a route index to a structured array of the route's dtype."""
    fresh, outcomes, keys, seen = [], [], [], set()
    for unit in units:
        out = Outcome()
        outcomes.append(out)
        key = unit.dedup_key
        if key is not None and (key in seen or committed_before(key)):
            out.duplicate = True
            continue
        if key is not None:
            seen.add(key)
        fresh.append((unit, out))
    rows = _fast_plan(fresh, router)
    if rows is not None:
        keys = [u.dedup_key for u, _ in fresh if u.dedup_key is not None]
        return Plan(rows, outcomes, [], keys)
    return _record_plan(fresh, router, outcomes)


def _fast_plan(fresh, router):
    """Every record good: whole columns converted by numpy at once (types checked per
    column); the outcomes filled.  None when a record needs a look of its own."""
    by_route: dict = {}
    try:
        for unit, _out in fresh:
            by_route.setdefault(router.route_of(unit.tag), []).append(unit)
    except Rejected:
        return None
    rows = {}
    for index, group in by_route.items():
        route = router.routes[index]
        entries = group[0].entries if len(group) == 1 else [e for u in group for e in u.entries]
        table = np.empty(len(entries), dtype=route.dtype)
        for f in route.fields:
            column = _fast_column(_values(group, entries, f.source), f.dtype)
            if column is None:
                return None
            table[f.name] = column
        rows[index] = table
    for unit, out in fresh:
        out.committed = len(unit.entries)
    return rows


_MISSING = object()


def _values(units, entries, source):
    if source == "@time":
        return [t for t, _r in entries]
    if source == "@tag":
        return [u.tag for u in units for _e in u.entries]
    return [r.get(source, _MISSING) if type(r) is dict else _MISSING for _t, r in entries]


def _fast_column(values, dtype):
    """``values`` as a numpy array of ``dtype`` when they are all of the right Python
    type and in range, else None (text fields always take the record path)."""
    kinds = set(map(type, values))
    try:
        if dtype.kind == "f" and kinds <= {int, float}:
            return np.array(values, dtype=dtype)
        if dtype.kind in "iu" and kinds <= {int}:
            return np.array(values, dtype=dtype)        # out of range: OverflowError
        if dtype.kind == "b" and kinds <= {bool}:
            return np.array(values, dtype=dtype)
    except (OverflowError, ValueError):
        return None
    return None


def _record_plan(fresh, router, outcomes) -> Plan:
    """Record by record, each bad one rejected with its reason."""
    rows: dict = {}
    rejects, keys = [], []
    for unit, out in fresh:
        good, bad = [], []
        tag = unit.tag
        for index, (time_s, record) in enumerate(unit.entries):
            try:
                good.append(router.row(tag, time_s, record))
            except Rejected as exc:
                reason = str(exc)[:REASON_CHARS_MAX]
                bad.append((index, reason))
                rejects.append((tag, reason, record))
        if bad and unit.atomic:
            out.rejected = bad      # the whole unit is refused (its input says so)
            continue
        for i, row in good:
            rows.setdefault(i, []).append(row)
        out.committed, out.rejected = len(good), bad
        if unit.dedup_key is not None:
            keys.append(unit.dedup_key)
    tables = {i: np.array(r, dtype=router.routes[i].dtype) for i, r in rows.items()}
    return Plan(tables, outcomes, rejects, keys)


@dataclass
class GroupPolicy:
    """When a group commit is due: ``records_max`` records waiting, or the oldest has
    waited ``delay_s_max`` (both bounded: see :func:`check_policy`)."""
    records_max: int = 10_000
    delay_s_max: float = 0.05

    def due(self, records: int, oldest_s: float | None, now_s: float) -> bool:
        return records >= self.records_max or (oldest_s is not None and now_s - oldest_s >= self.delay_s_max)

    def wait_s(self, oldest_s: float | None, now_s: float) -> float:
        """How long the committer may sleep before the next commit is due."""
        return self.delay_s_max if oldest_s is None else max(0.0, oldest_s + self.delay_s_max - now_s)


GROUP_RECORDS_LIMIT = 1_000_000
GROUP_DELAY_S_LIMIT = 60.0


def check_policy(records_max: int, delay_s_max: float) -> GroupPolicy:
    """A :class:`GroupPolicy`, once both bounds are within reason (``ValueError`` says which)."""
    if not 1 <= records_max <= GROUP_RECORDS_LIMIT:
        raise ValueError(f"--group-records {records_max}: give 1 to {GROUP_RECORDS_LIMIT}")
    if not (0 < delay_s_max <= GROUP_DELAY_S_LIMIT) or math.isnan(delay_s_max):
        raise ValueError(f"--group-ms {delay_s_max * 1000:g}: give more than 0 and at most "
                         f"{GROUP_DELAY_S_LIMIT * 1000:g}")
    return GroupPolicy(records_max, delay_s_max)
