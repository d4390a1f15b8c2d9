"""Several masters: address lists, and the names both sides of epoch fencing share.

A cluster may run standby masters (``master/standby.py``); clients, storage nodes and
neoctl take a list ``host:port[,host:port...]`` and, on losing the primary, try each
address in turn until one answers as primary (a standby answers UNAVAILABLE, naming
the primary).  Masters put their epoch (master generation) in the metadata of their
calls to storages under ``EPOCH_KEY``; a storage refuses a stale one with
FAILED_PRECONDITION and a message starting with ``STALE_EPOCH_PREFIX``.
"""
from __future__ import annotations

from .errors import RequestRefused

EPOCH_KEY = "neo-master-epoch"
STALE_EPOCH_PREFIX = "stale master epoch"
NO_STAMP = (0, 0)        # the stamp of a storage that recorded none
MASTERS_MAX = 16          # addresses in one list (given and learnt from the cluster view)
ADDRESS_CHARS_MAX = 4096  # one host:port


def newer_stamp(stamp: tuple[int, int] | list[int], than: tuple[int, int] | list[int]) -> bool:
    """Whether a master state stamp is newer than another.

    Parameters
    ----------
    stamp, than
        ``(epoch, version)`` of a master's durable state (``master/standby.py``,
        rule A): compared lexicographically, the epoch first.

    Returns
    -------
    bool
        ``stamp`` is strictly newer than ``than``.
    """
    return tuple(stamp) > tuple(than)


def is_address(address: str) -> bool:
    """Whether ``address`` is a ``host:port`` (port 1..65535, bounded length)."""
    host, sep, port = address.rpartition(":")
    return (len(address) <= ADDRESS_CHARS_MAX and bool(sep) and bool(host) and port.isdigit()
            and len(port.lstrip("0")) <= 5 and 0 < int(port) < 65536)


def parse_masters(text: str, what: str = "master address list") -> list[str]:
    """``"host:port,host:port"`` -> the addresses, each checked; a clear error names a bad one."""
    addresses = [a.strip() for a in (text or "").split(",") if a.strip()]
    if not addresses:
        raise RequestRefused(f"{what} is empty: give host:port[,host:port...]")
    if len(addresses) > MASTERS_MAX:
        raise RequestRefused(f"{what} has {len(addresses)} addresses, at most {MASTERS_MAX}")
    for address in addresses:
        if not is_address(address):
            raise RequestRefused(f"{what}: {address[:100]!r} is not host:port")
    return list(dict.fromkeys(addresses))


def next_address(addresses: list[str], current: str) -> str:
    """The address after ``current`` in ``addresses``, round the list (the first when
    ``current`` is not in it)."""
    i = addresses.index(current) if current in addresses else -1
    return addresses[(i + 1) % len(addresses)]


def learn_masters(known: list[str], nodes, master_type) -> list[str]:
    """``known`` plus the addresses of MASTER nodes in a cluster view (standbys the
    primary shows), at most ``MASTERS_MAX``."""
    extra = [n.address for n in nodes if n.type == master_type and n.address and n.address not in known]
    return (known + extra)[:MASTERS_MAX]
