"""The storage backend's contract, run on the LMDB store and on the memory reference."""
import pytest

from neoarray.errors import ChecksumError, RequestRefused
from neoarray.ids import Z64, p64
from neoarray.kv import LMDBStore, MemoryStore
from neoarray.records import (
    DATA_KEY_BYTES,
    RECORD_HEAD,
    VOTED_HEAD,
    RecordReader,
    record_tail,
)
from storage_node.backend import (
    DATA_INLINE_BYTES_MAX,
    DROP_BEHIND_BYTES_MIN,
    Backend,
    NoObject,
    NoRevision,
    Stored,
    TransactionInfo,
    checksum,
)
from storage_node.manager import VOTED, TransactionManager
from storage_node.space import lock_need

PARTITIONS = 3


@pytest.fixture(params=["memory", "lmdb"])
def make_backend(request, tmp_path):
    def make():
        kv = MemoryStore() if request.param == "memory" else LMDBStore(str(tmp_path / "db"), 1 << 26)
        backend = Backend(kv, partitions=PARTITIONS)
        return backend
    if request.param == "memory":
        shared = make()
        yield lambda: shared           # "reopening" memory gives the same store
        return
    opened = []

    def reopen():
        for b in opened:
            b.kv.close()
        opened.clear()
        opened.append(make())
        return opened[-1]
    yield reopen
    for b in opened:
        b.kv.close()


def rec(oid, data, serial=Z64, data_tid=None):
    return Stored(p64(oid), serial, data, 0 if data is None else checksum(data), data_tid)


def commit(backend, ttid, tid, records, meta=True):
    backend.store_voted(p64(ttid), records)
    info = TransactionInfo(b"", b"user", b"desc", b"", [r.oid for r in records], p64(ttid)) if meta else None
    backend.vote(p64(ttid), info, [r.oid for r in records], node=7)
    return backend.lock(p64(ttid), p64(tid))


def test_load_before_and_serial(make_backend):
    b = make_backend()
    commit(b, 1, 10, [rec(1, b"a")])
    commit(b, 2, 20, [rec(1, b"b", p64(10))])
    assert b.load(p64(1)).data == b"b"
    assert b.load(p64(1)).next_serial is None
    old = b.load(p64(1), before=p64(20))
    assert (old.data, old.serial, old.next_serial) == (b"a", p64(10), p64(20))
    assert b.load(p64(1), serial=p64(10)).data == b"a"
    with pytest.raises(NoRevision):
        b.load(p64(1), before=p64(10))
    with pytest.raises(NoRevision):
        b.load(p64(1), serial=p64(15))
    with pytest.raises(NoObject):
        b.load(p64(2))


def test_votes_are_invisible_until_locked(make_backend):
    b = make_backend()
    b.store_voted(p64(5), [rec(4, b"x")])
    b.vote(p64(5), None, [p64(4)], node=1)
    with pytest.raises(NoObject):
        b.load(p64(4))
    assert set(b.voted()) == {p64(5)}
    b.lock(p64(5), p64(50))
    assert b.load(p64(4)).data == b"x"
    assert b.voted() == {}
    assert b.locked() == {p64(5): p64(50)}
    assert b.lock(p64(5), p64(50)) == []   # idempotent
    b.unlock([p64(5)])
    assert b.locked() == {}


def test_lock_of_unknown_transaction_is_refused(make_backend):
    with pytest.raises(RequestRefused, match="unknown transaction"):
        make_backend().lock(p64(99), p64(100))


def test_abort_drops_everything(make_backend):
    b = make_backend()
    b.store_voted(p64(5), [rec(4, b"x")])
    b.vote(p64(5), None, [p64(4)], node=1)
    b.abort(p64(5))
    assert b.voted() == {} and b.stored(p64(5)) == [] and b.pending_ttids() == set()


def test_deletion_and_data_tid_records(make_backend):
    b = make_backend()
    commit(b, 1, 10, [rec(1, b"a")])
    commit(b, 2, 20, [rec(1, None, p64(10))])
    commit(b, 3, 30, [rec(1, b"a", p64(20), data_tid=p64(10))])
    assert b.load(p64(1), serial=p64(20)).data is None
    loaded = b.load(p64(1))
    assert (loaded.data, loaded.data_tid) == (b"a", p64(10))
    assert [s for _, s in b.history(p64(1), 10)] == [1, 0, 1]


def test_history_and_transactions(make_backend):
    b = make_backend()
    for i in range(1, 6):
        commit(b, i, i * 10, [rec(i, b"v%d" % i)])
    assert [t for t, _ in b.history(p64(3), 5)] == [p64(30)]
    txns = b.transactions(range(PARTITIONS), None, None, 100)
    assert [t.tid for t in txns] == [p64(i * 10) for i in range(1, 6)]
    newest = b.transactions(range(PARTITIONS), None, p64(40), 2, descending=True)
    assert [t.tid for t in newest] == [p64(40), p64(30)]
    assert newest[0].user == b"user" and newest[0].oids == [p64(4)]
    assert b.oids(range(PARTITIONS), None, 100) == [p64(i) for i in range(1, 6)]
    assert b.oids(range(PARTITIONS), p64(3), 1) == [p64(4)]
    # regression (fuzz): a cursor at the largest oid overflowed (struct.error)
    assert b.oids(range(PARTITIONS), b"\xff" * 8, 100) == []


def test_pack_keeps_what_snapshots_after_pack_time_see(make_backend):
    b = make_backend()
    commit(b, 1, 10, [rec(1, b"a"), rec(2, b"x")])
    commit(b, 2, 20, [rec(1, b"b", p64(10))])
    commit(b, 3, 30, [rec(1, b"c", p64(20))])
    commit(b, 4, 40, [rec(2, None, p64(10))])
    removed = b.pack(p64(25), gc_oids=[], prune_history=True)
    assert removed == 1                       # oid 1 at tid 10
    assert b.load(p64(1), before=p64(30)).serial == p64(20)
    assert b.load(p64(1)).data == b"c"
    with pytest.raises(NoRevision):
        b.load(p64(1), serial=p64(10))
    b.pack(p64(45), gc_oids=[], prune_history=True)
    with pytest.raises(NoObject):             # a deletion current at pack time goes
        b.load(p64(2))
    assert all(t.packed for t in b.transactions(range(PARTITIONS), None, p64(45), 100))


def test_pack_gc_spares_objects_changed_after_pack_time(make_backend):
    b = make_backend()
    commit(b, 1, 10, [rec(1, b"a"), rec(2, b"b")])
    commit(b, 2, 20, [rec(2, b"c", p64(10))])
    b.pack(p64(15), gc_oids=[p64(1), p64(2)], prune_history=False)
    with pytest.raises(NoObject):
        b.load(p64(1))
    assert b.load(p64(2)).data == b"c"


def test_voted_transactions_survive_reopening(make_backend):
    b = make_backend()
    b.store_voted(p64(5), [rec(4, b"x")])
    b.vote(p64(5), None, [p64(4)], node=3)
    b.store_voted(p64(6), [rec(8, b"y")])            # stored, never voted
    b = make_backend()
    assert b.voted()[p64(5)]["node"] == 3
    assert b.pending_ttids() == {p64(5), p64(6)}
    b.lock(p64(5), p64(50))
    assert b.load(p64(4)).data == b"x"
    assert b.last_ids() == (p64(50), p64(4))


def test_corrupt_record_is_reported_not_returned(tmp_path):
    kv = LMDBStore(str(tmp_path / "db"), 1 << 26)
    b = Backend(kv, partitions=PARTITIONS)
    commit(b, 1, 10, [rec(1, b"precious data")])
    key = (1 % PARTITIONS).to_bytes(4, "big") + p64(1) + p64(10)
    with kv.write() as txn:
        value = txn.get("obj", key)
        txn.put("obj", key, value[:-1] + b"X")
    with pytest.raises(ChecksumError, match="fails its checksum"):
        b.load(p64(1))
    kv.close()


def test_pack_to_an_earlier_time_is_refused(make_backend):
    b = make_backend()
    commit(b, 1, 10, [rec(1, b"a")])
    b.pack(p64(20), gc_oids=[], prune_history=True)
    with pytest.raises(RequestRefused, match="already packed"):
        b.pack(p64(15), gc_oids=[p64(1)], prune_history=True)
    assert b.load(p64(1)).data == b"a"


def four_keys(kind, tmp_path):
    """A store of either kind holding a1, a3, b2 and c (values: v + the key)."""
    kv = MemoryStore() if kind == "memory" else LMDBStore(str(tmp_path / "k"), 1 << 24)
    with kv.write() as txn:
        for k in (b"a1", b"a3", b"b2", b"c"):
            txn.put("obj", k, b"v" + k)
    return kv


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_key_helpers_agree_with_scan(kind, tmp_path):
    kv = four_keys(kind, tmp_path)
    with kv.read() as txn:
        assert list(txn.keys("obj", b"a", b"b3")) == [b"a1", b"a3", b"b2"]
        assert txn.last_key("obj", b"a", b"b") == b"a3"
        assert txn.last_key("obj", b"a", b"zz") == b"c"
        assert txn.last_key("obj", b"d", b"e") is None
        assert txn.next_key("obj", b"a2", b"b") == b"a3"
        assert txn.next_key("obj", b"a4", b"b") is None
        # in any order, one cursor: each range as last_key alone answers it
        ranges = [(b"a", b"b"), (b"d", b"e"), (b"a", b"zz"), (b"b", b"b3"), (b"a4", b"b2"), (b"", b"a1")]
        assert txn.last_keys("obj", ranges) == [txn.last_key("obj", *r) for r in ranges]
        assert txn.last_keys("obj", ranges) == [b"a3", None, b"c", b"b2", None, None]
    kv.close()


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_put_many_puts_and_replaces(kind, tmp_path):
    kv = four_keys(kind, tmp_path)
    with kv.write() as txn:
        txn.put_many("obj", [(b"a3", b"new"), (b"b1", b"vb1"), (b"d", b"vd")])
        txn.put_many("obj", [])
        assert txn.get("obj", b"a3") == b"new" and txn.last_key("obj", b"b", b"c") == b"b2"
    with kv.read() as txn:
        assert list(txn.scan("obj", b"")) == [(b"a1", b"va1"), (b"a3", b"new"), (b"b1", b"vb1"),
                                              (b"b2", b"vb2"), (b"c", b"vc"), (b"d", b"vd")]
    kv.close()


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_pop_range_deletes_and_returns_a_range(kind, tmp_path):
    kv = four_keys(kind, tmp_path)
    with kv.write() as txn:
        assert txn.last_key("obj", b"a", b"b") == b"a3"        # a probe before, in the same txn
        assert txn.pop_range("obj", b"a2", b"b3") == [(b"a3", b"va3"), (b"b2", b"vb2")]
        assert txn.last_key("obj", b"a", b"b") == b"a1"        # and after: it sees the deletion
        assert txn.pop_range("obj", b"b", b"c") == []
        assert txn.pop_range("obj", b"c", b"d") == [(b"c", b"vc")]    # the last entry of the database
    with kv.read() as txn:
        assert list(txn.scan("obj", b"")) == [(b"a1", b"va1")]
    kv.close()


# -- large data: written once to ``data``, referred to by the records ------------------

BIG = DATA_INLINE_BYTES_MAX + 1


def big(tag: bytes, size: int = 64 << 10) -> bytes:
    return (tag * size)[:size]


def data_rows(b) -> dict:
    with b.kv.read() as txn:
        return dict(txn.scan("data", b""))


def assert_data_owned_once(b):
    """Every data row is referred to by exactly one record, every reference resolves."""
    refs = []
    with b.kv.read() as txn:
        for db, start in (("obj", RECORD_HEAD.size), ("voted_obj", VOTED_HEAD.size)):
            for _, value in txn.scan(db, b""):
                data_key = record_tail(value[0], value, start)[1]
                if data_key is not None:
                    refs.append(data_key)
    assert sorted(refs) == sorted(data_rows(b)), "dangling reference or orphan data row"


def test_large_data_is_written_once_and_locked_by_reference(make_backend):
    b = make_backend()
    payload = big(b"chunk")
    b.store_voted(p64(5), [rec(1, payload), rec(2, b"small")])
    assert data_rows(b) == {(1 % PARTITIONS).to_bytes(4, "big") + p64(1): payload}   # at store, once
    b.vote(p64(5), None, [p64(1), p64(2)], node=1)
    b.lock(p64(5), p64(50))
    assert list(data_rows(b).values()) == [payload]          # lock copied no data
    with b.kv.read() as txn:
        obj = dict(txn.scan("obj", b""))
    sizes = sorted(len(v) for v in obj.values())
    assert sizes == [RECORD_HEAD.size + len(b"small"), RECORD_HEAD.size + DATA_KEY_BYTES]
    assert b.load(p64(1)).data == payload and b.load(p64(2)).data == b"small"
    assert b.history(p64(1), 5) == [(p64(50), len(payload))]
    assert_data_owned_once(b)


def test_inline_limit_is_inclusive(make_backend):
    b = make_backend()
    commit(b, 1, 10, [rec(1, b"x" * DATA_INLINE_BYTES_MAX), rec(2, b"y" * BIG)])
    assert [len(v) for v in data_rows(b).values()] == [BIG]
    assert b.load(p64(1)).data == b"x" * DATA_INLINE_BYTES_MAX
    assert b.load(p64(2)).data == b"y" * BIG


def test_abort_and_restore_drop_their_data_rows(make_backend):
    b = make_backend()
    b.store_voted(p64(5), [rec(1, big(b"a")), rec(2, big(b"b"))])
    b.store_voted(p64(5), [rec(1, big(b"c"))])                # replaces the first store of oid 1
    assert sorted(data_rows(b).values()) == [big(b"b"), big(b"c")]
    assert {s.oid: s.data for s in b.stored(p64(5))} == {p64(1): big(b"c"), p64(2): big(b"b")}
    b.store_voted(p64(5), [rec(2, None)])                     # a deletion replaces data too
    assert list(data_rows(b).values()) == [big(b"c")]
    b.vote(p64(5), None, [p64(1), p64(2)], node=1)
    b.abort(p64(5))
    assert data_rows(b) == {} and b.pending_ttids() == set()
    assert_data_owned_once(b)


def test_first_store_naming_an_oid_twice_keeps_one_data_row(make_backend):
    """The first store of a transaction looks nothing up to replace, but an oid named
    twice in it: the second replaces the first and its data row."""
    b = make_backend()
    b.store_voted(p64(6), [rec(1, big(b"first")), rec(2, big(b"other")), rec(1, big(b"second"))])
    assert sorted(data_rows(b).values()) == [big(b"other"), big(b"second")]
    assert {s.oid: s.data for s in b.stored(p64(6))} == {p64(1): big(b"second"), p64(2): big(b"other")}
    assert_data_owned_once(b)


def test_a_later_store_replaces_earlier_rows_and_their_data(make_backend):
    """A store after the first (conflict resolution) replaces what the earlier ones
    stored of the same oids, and an oid it names twice once more: one data row each."""
    b = make_backend()
    b.store_voted(p64(6), [rec(1, big(b"first")), rec(2, big(b"other"))])
    b.store_voted(p64(6), [rec(1, big(b"again")), rec(3, b"small"), rec(1, big(b"last"))])
    assert sorted(data_rows(b).values()) == [big(b"last"), big(b"other")]
    assert {s.oid: s.data for s in b.stored(p64(6))} == {p64(1): big(b"last"), p64(2): big(b"other"),
                                                          p64(3): b"small"}
    assert_data_owned_once(b)


def test_last_serials_and_stored_serials(make_backend):
    """``last_serials`` answers as ``last_serial`` for each oid (present, deleted,
    absent, in any order); ``stored_serials`` gives the base serials of the stores and
    the bytes that ``lock_need`` counts."""
    b = make_backend()
    commit(b, 1, 10, [rec(1, b"a"), rec(2, b"b")])
    commit(b, 2, 20, [rec(2, None, serial=p64(10)), rec(5, b"e")])
    oids = [p64(5), p64(1), p64(9), p64(2), p64(1)]
    with b.kv.read() as txn:
        assert b.last_serials(oids, txn) == [b.last_serial(o) for o in oids]
        assert b.last_serials(oids, txn) == [p64(20), p64(10), None, p64(20), p64(10)]
        assert b.last_serials([], txn) == []
    b.store_voted(p64(30), [rec(1, b"x", serial=p64(10)), rec(7, big(b"new"))])
    pairs, nbytes = b.stored_serials(p64(30))
    assert pairs == [(p64(1), p64(10)), (p64(7), Z64)]
    assert lock_need(nbytes + 100, len(pairs) + 1) == b.lock_need(p64(30), 100)


def test_data_ids_never_clobber_live_data(make_backend):
    b = make_backend()
    commit(b, 1, 10, [rec(1, big(b"one"))])
    b.store_voted(p64(2), [rec(2, big(b"aborted"))])          # takes the largest id ...
    b.abort(p64(2))                                           # ... and gives it back
    commit(b, 3, 30, [rec(3, big(b"three"))])
    commit(b, 4, 40, [rec(1, big(b"four"), p64(10))])
    assert b.load(p64(1), serial=p64(10)).data == big(b"one")
    assert b.load(p64(1)).data == big(b"four")
    assert b.load(p64(3)).data == big(b"three")
    assert_data_owned_once(b)


def test_pack_drops_the_data_of_removed_revisions(make_backend):
    b = make_backend()
    commit(b, 1, 10, [rec(1, big(b"a")), rec(2, big(b"x"))])
    commit(b, 2, 20, [rec(1, big(b"b"), p64(10))])
    commit(b, 3, 30, [rec(2, None, p64(10))])
    commit(b, 4, 40, [rec(3, big(b"gc"))])
    assert b.pack(p64(35), gc_oids=[p64(3)], prune_history=False) == 0     # changed after 35
    assert b.pack(p64(35), gc_oids=[], prune_history=True) == 3
    assert sorted(data_rows(b).values()) == [big(b"b"), big(b"gc")]
    assert b.pack(p64(45), gc_oids=[p64(3)], prune_history=False) == 1
    assert list(data_rows(b).values()) == [big(b"b")]
    assert b.load(p64(1)).data == big(b"b")
    assert_data_owned_once(b)


def test_large_voted_data_survives_reopening(make_backend):
    b = make_backend()
    b.store_voted(p64(5), [rec(4, big(b"voted"))])
    b.vote(p64(5), None, [p64(4)], node=3)
    b.store_voted(p64(6), [rec(8, big(b"unvoted"))])
    b = make_backend()
    TransactionManager(b)                                     # recovery drops unvoted stores
    assert list(data_rows(b).values()) == [big(b"voted")]
    b.lock(p64(5), p64(50))
    assert b.load(p64(4)).data == big(b"voted")
    assert_data_owned_once(b)


def test_the_only_voter_is_made_durable_by_its_lock():
    """A vote is fsynced, but the only voter's (``sync=False``): its Lock's fsync makes
    the stores and the vote durable with the revisions."""
    kv = MemoryStore()
    b = Backend(kv, partitions=PARTITIONS)
    b.store_voted(p64(1), [rec(1, b"shared")])
    b.vote(p64(1), None, [p64(1)], node=1)
    assert kv.syncs == 1
    b.store_voted(p64(2), [rec(2, b"alone")])
    b.vote(p64(2), None, [p64(2)], node=1, sync=False)
    assert kv.syncs == 1
    b.lock(p64(2), p64(20))
    assert kv.syncs == 2 and b.load(p64(2)).data == b"alone"


def test_an_unsynced_vote_survives_the_process(tmp_path):
    """Without its fsync a vote is still in LMDB after the process ends (the pages are
    in the page cache): it is lost only with the machine."""
    path = str(tmp_path / "db")
    kv = LMDBStore(path, 1 << 26)
    b = Backend(kv, partitions=PARTITIONS)
    b.store_voted(p64(5), [rec(4, b"x")])
    b.vote(p64(5), None, [p64(4)], node=3, sync=False)
    assert kv.syncs == 0
    kv.close()
    b = Backend(LMDBStore(path, 1 << 26), partitions=PARTITIONS)
    try:
        assert set(b.voted()) == {p64(5)}
        b.lock(p64(5), p64(50))
        assert b.load(p64(4)).data == b"x"
    finally:
        b.kv.close()


def test_store_of_bulk_data_names_it_for_write_behind():
    kv = MemoryStore()
    b = Backend(kv, partitions=PARTITIONS)
    assert b.store_voted(p64(1), [rec(1, b"small"), rec(2, big(b"mid"))]) == []
    bulk = b.store_voted(p64(1), [rec(3, big(b"bulk", DROP_BEHIND_BYTES_MIN))])
    assert bulk == [k for k, v in data_rows(b).items() if len(v) >= DROP_BEHIND_BYTES_MIN]
    b.write_behind(bulk)
    assert kv.write_behinds == 1 and kv.syncs == 0            # a hint, not a sync


def test_corrupt_or_missing_data_row_is_reported_not_returned(tmp_path):
    kv = LMDBStore(str(tmp_path / "db"), 1 << 26)
    b = Backend(kv, partitions=PARTITIONS)
    commit(b, 1, 10, [rec(1, big(b"precious")), rec(2, big(b"also"))])
    (id1, value1), (id2, _) = sorted(data_rows(b).items())
    with kv.write() as txn:
        txn.put("data", id1, value1[:-1] + b"X")
        txn.delete("data", id2)
    with pytest.raises(ChecksumError, match="fails its checksum"):
        b.load(p64(1))
    with pytest.raises(ChecksumError, match="missing"):
        b.load(p64(2))
    kv.close()


def test_local_reader_reads_large_records_in_place(tmp_path):
    """A client on the same host reads the node's LMDB read-only: zero-copy, checked."""
    path = str(tmp_path / "db")
    b = Backend(LMDBStore(path, 1 << 26), partitions=PARTITIONS)
    commit(b, 1, 10, [rec(1, big(b"view")), rec(2, b"tiny")])
    b.kv.close()                       # py-lmdb opens an environment once per process
    reader = RecordReader(LMDBStore(path, 1 << 26, readonly=True), PARTITIONS)
    with reader.kv.read(buffers=True) as txn:
        large = reader.load_in(txn, p64(1), copy=False)
        small = reader.load_in(txn, p64(2), copy=False)
        assert isinstance(large.data, memoryview) and large.data.readonly
        assert bytes(large.data) == big(b"view") and bytes(small.data) == b"tiny"
    assert reader.load(p64(1)).data == big(b"view")
    reader.kv.close()
    kv = LMDBStore(path, 1 << 26)
    with kv.write() as txn:
        (data_key, value), = txn.scan("data", b"")
        txn.put("data", data_key, b"Y" + value[1:])
    kv.close()
    reader = RecordReader(LMDBStore(path, 1 << 26, readonly=True), PARTITIONS)
    with pytest.raises(ChecksumError):
        reader.load(p64(1))
    reader.kv.close()


def test_truncate_removes_a_window_of_transactions_only(make_backend):
    b = make_backend()
    big = b"x" * (DATA_INLINE_BYTES_MAX + 1)
    commit(b, 1, 10, [rec(1, b"a"), rec(2, big)])
    commit(b, 2, 20, [rec(1, b"b", p64(10)), rec(3, big)])
    commit(b, 3, 30, [rec(1, b"c", p64(20))])
    commit(b, 4, 40, [rec(2, big, p64(10))])
    assert len(data_rows(b)) == 3
    b.store_voted(p64(5), [rec(1, b"pending", p64(40))])

    assert b.truncate(p64(10), p64(30)) == (2, 3)       # trans 20, 30; revisions 1@20, 3@20, 1@30
    assert b.load(p64(1)).data == b"a" and b.load(p64(1)).serial == p64(10)
    with pytest.raises(NoObject):
        b.load(p64(3))
    assert b.load(p64(2)).serial == p64(40)              # after the window: kept
    assert len(data_rows(b)) == 2                            # 3@20's data row went with it
    assert [t.tid for t in b.transactions(range(PARTITIONS), None, None, 10)] == [p64(10), p64(40)]
    assert b.truncate(p64(10), p64(30)) == (0, 0)        # a repeated order changes nothing
    assert b.last_ids()[0] == p64(40)                    # a later tid stays the last one

    b.truncate(p64(10), p64(40))
    assert b.last_ids()[0] == p64(10)
    assert b.pending_ttids() == {p64(5)}                 # stores are the manager's to drop


def test_truncate_before_the_pack_tid_is_refused(make_backend):
    b = make_backend()
    commit(b, 1, 10, [rec(1, b"a")])
    commit(b, 2, 20, [rec(1, b"b", p64(10))])
    b.pack(p64(20), [], prune_history=True)
    with pytest.raises(RequestRefused, match="packed to the later"):
        b.truncate(p64(10), p64(20), check_only=True)
    assert b.load(p64(1)).data == b"b"
    assert b.truncate(p64(20), p64(20)) == (0, 0)


def test_manager_truncate_drops_transactions_in_progress(make_backend):
    b = make_backend()
    m = TransactionManager(b)
    commit(b, 1, 10, [rec(1, b"a")])
    m.store(p64(7), 3, [rec(1, b"b", p64(10))])
    assert m.vote(p64(7), 3, [], None, [p64(1)]).status == VOTED
    m.store(p64(8), 4, [rec(2, b"new")])
    assert m.truncate(p64(10), p64(10)) == (0, 0, 2)
    assert b.pending_ttids() == set() and b.voted() == {}
    m.store(p64(9), 5, [rec(1, b"c", p64(10))])          # the lock on oid 1 is gone
    assert m.vote(p64(9), 5, [], None, [p64(1)]).status == VOTED


def test_concurrent_syncs_cover_every_write_before_them(tmp_path):
    """Group commit: each ``sync()`` returns only once an fsync that began after the
    caller's write finished; threads syncing at once may share one."""
    import threading
    kv = LMDBStore(str(tmp_path / "db"), 1 << 26)
    covered, errors = [], []

    def writer(n):
        try:
            for i in range(50):
                with kv.write() as txn:
                    txn.put("config", b"k%d-%d" % (n, i), b"v")
                seq = kv.committed_writes           # at least this write's sequence
                kv.sync()
                covered.append(kv._synced_writes >= seq)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(covered) == 200 and all(covered)
        assert kv.committed_writes == 200 and 1 <= kv.syncs <= 200
    finally:
        kv.close()
