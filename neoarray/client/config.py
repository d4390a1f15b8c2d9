"""Opening a NeoStorage from ZConfig and from zodburi URIs.

ZConfig (``zodbconf``)::

    %import neoarray
    <zodb>
      <neoarray>
        master 127.0.0.1:5551
        cluster mycluster
        cache-size 256MB
        read-only false
        metrics-bind 127.0.0.1:9108
        # ZODB blobs: the client's blob cache (blob bytes live on the storage nodes)
        blob-cache-dir /var/cache/neoarray/blobs
        blob-cache-size 2GB
        # mutual TLS: the cluster's CA, this client's certificate and key (PEM)
        ca /etc/neoarray/ca.crt
        cert /etc/neoarray/client.crt
        key /etc/neoarray/client.key
      </neoarray>
    </zodb>

Limits (each > 0, else ``ValueError`` naming it): ``transactions-max``,
``message-bytes-max``, ``store-batch-bytes-max`` (sizes: ``64MB``...),
``objects-per-transaction-max``; in URIs the ``NeoStorage`` argument names
(``message_bytes_max``...).

zodburi: ``neoarray://127.0.0.1:5551/mycluster?cache_bytes_max=268435456&read_only=true``
(TLS: ``&ca=/etc/neoarray/ca.crt&cert=...&key=...``); with standby masters, ``master``
lists them all: ``127.0.0.1:5551,127.0.0.1:5552`` (ZConfig and URI alike:
``neoarray://127.0.0.1:5551,127.0.0.1:5552/mycluster``);
blobs: ``&blob_dir=/var/cache/neoarray/blobs&blob_cache_size=2147483648`` (ZEO's names;
``blob_cache_dir`` and ``blob_cache_bytes_max`` too);
any other query key goes to ``ZODB.DB`` (``connection_cache_size``...), as zodburi does.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from ZODB.config import BaseConfig

from .storage import NeoStorage

_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_STORAGE_KEYS = {"cache_bytes_max": int, "rpc_timeout_s": float, "connect_timeout_s": float,
                 "transactions_max": int, "read_only": lambda v: _BOOL[v.lower()], "name": str,
                 "cache_colours": str, "metrics_bind": str, "message_bytes_max": int,
                 "store_batch_bytes_max": int, "objects_per_transaction_max": int,
                 "loads_per_batch_max": int, "finish_timeout_s": float,
                 "ca": str, "cert": str, "key": str, "blob_cache_dir": str, "blob_cache_bytes_max": int,
                 "blob_chunk_bytes": int}
_URI_ALIASES = {"blob_dir": "blob_cache_dir", "blob_cache_size": "blob_cache_bytes_max"}   # ZEO's names


class NeoStorageConfig(BaseConfig):
    """The datatype of the ``<neoarray>`` section."""

    def open(self):
        c = self.config
        if c.blob_dir and c.blob_cache_dir and c.blob_dir != c.blob_cache_dir:
            raise ValueError(f"blob-dir {c.blob_dir!r} and blob-cache-dir {c.blob_cache_dir!r} name the same "
                             f"setting: give one of them")
        return NeoStorage(c.master, c.cluster, name=c.name or None, read_only=c.read_only,
                          cache_bytes_max=c.cache_size, rpc_timeout_s=c.rpc_timeout,
                          connect_timeout_s=c.connect_timeout, cache_colours=c.cache_colours or None,
                          metrics_bind=c.metrics_bind or None,
                          transactions_max=c.transactions_max, message_bytes_max=c.message_bytes_max,
                          store_batch_bytes_max=c.store_batch_bytes_max,
                          objects_per_transaction_max=c.objects_per_transaction_max,
                          ca=c.ca, cert=c.cert, key=c.key,
                          blob_cache_dir=c.blob_cache_dir or c.blob_dir or None,
                          blob_cache_bytes_max=c.blob_cache_size)


def parse_uri(uri: str) -> tuple[dict, dict]:
    """``(storage kwargs, ZODB.DB kwargs)`` of a ``neoarray://host:port/cluster?...`` URI."""
    parts = urlsplit(uri)
    if parts.scheme != "neoarray":
        raise ValueError(f"not a neoarray URI: {uri!r}")
    cluster = parts.path.strip("/")
    if not parts.netloc or not cluster:
        raise ValueError(f"a neoarray URI needs host:port and a cluster name: {uri!r}")
    storage_kw, db_kw = {"master": parts.netloc, "cluster": cluster}, {}
    for key, value in parse_qsl(parts.query):
        key = _URI_ALIASES.get(key, key)
        if key in _STORAGE_KEYS:
            try:
                storage_kw[key] = _STORAGE_KEYS[key](value)
            except (KeyError, ValueError):
                raise ValueError(f"bad value {value!r} for {key} in {uri!r}") from None
        else:
            db_kw[key] = value
    return storage_kw, db_kw


def resolve_uri(uri: str):
    """The zodburi resolver: ``(factory, dbkw)``."""
    storage_kw, db_kw = parse_uri(uri)
    return (lambda: NeoStorage(**storage_kw)), db_kw
