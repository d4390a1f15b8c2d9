"""Where a dataset is read or written: an open database, a URI, or a data directory.

* a ``ZODB.DB`` (``neoarray.open(...)``, or any ZODB database): used as it is, never
  closed here;
* ``"neoarray://HOST:PORT/CLUSTER?path=NAME&..."``: the zodburi form
  (:func:`neoarray.client.config.parse_uri`: storage options such as
  ``cache_bytes_max``, ``read_only``, TLS files) plus ``path``, the group's path.
  Readers share this process's database on that cluster
  (:func:`neoarray.client.shared.shared_db`: one client per cluster, the options of
  the first caller win); writers open their own client and close it after the commit;
* any other ``str`` or path: the data directory of the embedded default
  (``neoarray.open(path)``).  One process runs a directory at a time, so this module
  opens each directory once per process and counts its users: the cluster stops
  when the last dataset using it is closed.
"""
from __future__ import annotations

import os
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import ZODB

import neoarray

from ..client import NeoStorage, shared
from ..client.config import parse_uri

URI_SCHEME = "neoarray://"
URI_DATASET_KEYS = ("path", "group")      # query keys that name the group, not options

_lock = threading.Lock()
_embedded: dict[str, list] = {}           # realpath -> [database, users]


def is_uri(target) -> bool:
    return isinstance(target, str) and target.startswith(URI_SCHEME)


def split_uri(uri: str) -> tuple[dict, str]:
    """``(storage options with master and cluster, group path)`` of a neoarray URI.

    ValueError naming a query key that is neither a storage option nor ``path``
    (``ZODB.DB`` options do not apply to a shared client).
    """
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    path = "/".join(v.strip("/") for k, v in query if k in URI_DATASET_KEYS and v.strip("/"))
    rest = [(k, v) for k, v in query if k not in URI_DATASET_KEYS]
    storage_kw, db_kw = parse_uri(urlunsplit(parts._replace(query=urlencode(rest))))
    if db_kw:
        raise ValueError(f"unknown option(s) {sorted(db_kw)} in {uri!r}: a dataset URI takes "
                         "path=GROUP and NeoStorage options (cache_bytes_max, read_only, ca, "
                         "cert, key...)")
    return storage_kw, path


def join_paths(*paths) -> str:
    """The group path of the parts given (``None`` and empty parts skipped)."""
    return "/".join(p.strip("/") for p in paths if p and p.strip("/"))


class Opened:
    """A database opened for a reader or writer, and how to let it go (``release()``)."""

    def __init__(self, db, release=None):
        self.db = db
        self._release = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def open_for_reading(target) -> tuple[Opened, str]:
    """``(Opened, group path from a URI)`` for a reader (see the module docstring)."""
    if isinstance(target, ZODB.DB):
        return Opened(target), ""
    if is_uri(target):
        storage_kw, path = split_uri(target)
        return Opened(shared.shared_db(storage_kw)), path
    return _open_embedded(target), ""


def open_for_writing(target) -> tuple[Opened, str]:
    """``(Opened, group path from a URI)`` for a writer: a URI gets its own client,
    closed on ``release()``."""
    if is_uri(target):
        storage_kw, path = split_uri(target)
        db = ZODB.DB(NeoStorage(**storage_kw))
        return Opened(db, db.close), path
    return open_for_reading(target)


def _open_embedded(path) -> Opened:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a neoarray dataset is read from a ZODB.DB, a neoarray:// URI or "
                        f"the data directory of neoarray.open(path), not a {type(path).__name__}")
    key = os.path.realpath(os.fspath(path))
    with _lock:
        entry = _embedded.get(key)
        if entry is None or not shared.is_open(entry[0]):
            entry = _embedded[key] = [neoarray.open(key), 0]
        entry[1] += 1
    return Opened(entry[0], lambda: _release_embedded(key, entry))


def _release_embedded(key: str, entry: list) -> None:
    with _lock:
        entry[1] -= 1
        if entry[1] > 0 or _embedded.get(key) is not entry:
            return
        del _embedded[key]
    entry[0].close()
