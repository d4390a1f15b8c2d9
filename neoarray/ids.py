"""Identifiers: 8-byte big-endian OIDs and TIDs, as ZODB spells them.

TIDs are ZODB ``TimeStamp`` values (minute resolution in the high 32 bits, a fraction
of a minute in the low 32), so they sort by time and ``tid_from_time`` can be shown to
people as a date.  The master is the only source of new TIDs and OIDs.
"""
import struct
import time

from ZODB.TimeStamp import TimeStamp

from .errors import RequestRefused

Z64 = b"\0" * 8
MAX_TID = b"\x7f\xff\xff\xff\xff\xff\xff\xff"
_Q = struct.Struct(">Q")


def p64(value: int) -> bytes:
    """Pack an unsigned integer into 8 big-endian bytes."""
    return _Q.pack(value)


def u64(value: bytes) -> int:
    """Unpack 8 big-endian bytes into an integer."""
    return _Q.unpack(value)[0]


def checked_id(value: bytes, what: str) -> bytes:
    """``value`` if it is an 8-byte id; ``RequestRefused`` naming ``what`` otherwise."""
    if len(value) != 8:
        raise RequestRefused(f"{what} must be 8 bytes, got {len(value)}")
    return value


def checked_tid(value: bytes, what: str) -> bytes:
    """``value`` if it can name a transaction (8 bytes, above 0, at most ``MAX_TID``);
    ``RequestRefused`` naming ``what`` otherwise.  The master never hands out 0 as a ttid
    or tid: a transaction there would sort before every real one."""
    checked_id(value, what)
    if value == Z64 or value > MAX_TID:
        raise RequestRefused(f"{what} {value.hex()} names no transaction: it must be above 0 "
                             f"and at most {MAX_TID.hex()}")
    return value


def tid_from_time(seconds: float) -> bytes:
    """The TimeStamp TID of a unix time."""
    t = time.gmtime(seconds)
    return TimeStamp(*t[:5], t[5] + (seconds % 1)).raw()


def tid_to_time(tid: bytes) -> float:
    """The unix time a TID stands for."""
    return TimeStamp(tid).timeTime()


def next_tid(last: bytes, now: float | None = None) -> bytes:
    """A TID later than ``last``: the current time, or ``last + 1`` if the clock lags."""
    candidate = tid_from_time(time.time() if now is None else now)
    return candidate if candidate > last else p64(u64(last) + 1)


def tid_repr(tid: bytes) -> str:
    """``0x...`` with the date the TID stands for, like NEO's ``print ids``."""
    if not tid or tid == Z64:
        return "0x0000000000000000"
    return f"0x{tid.hex()} ({TimeStamp(tid)})"


def oid_repr(oid: bytes) -> str:
    return f"0x{oid.hex()}" if oid else "0x0000000000000000"
