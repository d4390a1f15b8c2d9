"""Large values leave the page cache once written (``neoarray/kv.py``, ``_WriteBehind``):
a real LMDB environment, residency read from the kernel with ``mincore``."""
import ctypes
import mmap
import os
import sys

import pytest

from neoarray.kv import LMDBStore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range and mincore: Linux")

VALUE_BYTES = 1 << 20
WINDOW_BYTES = 4 << 20


def resident_bytes(path: str) -> int:
    """Bytes of ``path`` in the page cache, from ``mincore`` on a fresh mapping (mapping
    a file reads nothing: residency is the kernel's, not this process's)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            pages = -(-size // mmap.PAGESIZE)
            vec = ctypes.create_string_buffer(pages)
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(b & 1 for b in vec.raw) * mmap.PAGESIZE
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def write_values(kv, count, drop=True):
    values = {}
    for i in range(count):
        key = i.to_bytes(8, "big")
        values[key] = os.urandom(VALUE_BYTES)
        with kv.write() as txn:
            txn.put("data", key, values[key])
        kv.write_behind("data", [key] if drop else [])
    kv.sync()
    return values


def test_large_values_leave_the_page_cache_once_written_and_read_back_intact(tmp_path):
    kv = LMDBStore(str(tmp_path / "db"), 1 << 30, drop_behind_window_bytes=WINDOW_BYTES)
    try:
        values = write_values(kv, 32)
        path = str(tmp_path / "db" / "data.mdb")
        assert kv.dropped_bytes >= (32 << 20) - WINDOW_BYTES - VALUE_BYTES
        # what stays: the window of newest values and the B-tree pages, not the 32 MiB
        assert resident_bytes(path) <= WINDOW_BYTES + (4 << 20)
        with kv.read() as txn:
            for key, value in values.items():       # read back from the disk
                assert txn.get("data", key) == value
    finally:
        kv.close()


def test_without_drop_the_values_stay_cached(tmp_path):
    """The control: the same writes, no keys named: the page cache keeps them (so the
    test above measures the drop, not a page cache that keeps nothing)."""
    kv = LMDBStore(str(tmp_path / "db"), 1 << 30, drop_behind_window_bytes=WINDOW_BYTES)
    try:
        write_values(kv, 32, drop=False)
        assert kv.dropped_bytes == 0
        assert resident_bytes(str(tmp_path / "db" / "data.mdb")) >= 24 << 20
    finally:
        kv.close()
