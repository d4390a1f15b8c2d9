"""The ingest core without I/O: mapping files, records to rows, deduplication, group
commit policy; and the forward protocol's decoding."""
import json

import msgpack
import numpy as np
import pytest

from neoarray.ingest import core, forward, mapping

ROUTES = {"routes": [
    {"match": "s.*", "array": "s", "fields": [["t", "f8", "@time"], ["id", "u2"], ["v", "f4"], ["tag", "S8", "@tag"]]},
    {"match": "c.*", "array": "c", "layout": "columns", "fields": [["n", "i8"], ["ok", "?"]]},
]}


def _router():
    return core.Router(mapping.compile_routes(ROUTES))


def _unit(tag, entries, key=None, atomic=False):
    told = []
    return core.Unit(tag, entries, told.append, dedup_key=key, atomic=atomic), told


def test_good_units_take_the_column_path_and_dedup_keys_count_once():
    a, _ = _unit("s.x", [(1.0, {"id": 1, "v": 0.5}), (2.0, {"id": 2, "v": 1})], key="k1")
    b, _ = _unit("s.x", [(3.0, {"id": 3, "v": 2.5})], key="k1")       # resent in the same group
    c, _ = _unit("c.y", [(0, {"n": -5, "ok": True})])
    p = core.plan([a, b, c], _router(), lambda key: False)
    assert [o.committed for o in p.outcomes] == [2, 0, 1] and p.outcomes[1].duplicate
    assert p.rows[0]["id"].tolist() == [1, 2] and p.rows[0]["tag"].tolist() == [b"s.x", b"s.x"]
    assert p.rows[1]["n"].tolist() == [-5] and p.keys == ["k1"] and p.rejects == []
    p = core.plan([b], _router(), lambda key: key == "k1")         # committed before
    assert p.outcomes[0].duplicate and p.records == 0


@pytest.mark.parametrize("record,reason", [
    ({"id": 1}, "field 'v': the record has no 'v'"),
    ({"id": "1", "v": 1.0}, "field 'id': '1' is not an integer"),
    ({"id": 70000, "v": 1.0}, "field 'id': 70000 is out of the range of uint16"),
    ({"id": True, "v": 1.0}, "field 'id': True is not an integer"),
    ({"id": 1, "v": None}, "field 'v': None is not a number"),
    ([1, 2], "the record is a list, not a map"),
])
def test_a_bad_record_is_rejected_with_its_reason_and_the_others_kept(record, reason):
    unit, _ = _unit("s.x", [(1.0, {"id": 9, "v": 1.0}), (2.0, record)])
    p = core.plan([unit], _router(), lambda key: False)
    assert p.outcomes[0].committed == 1 and p.outcomes[0].rejected == [(1, reason)]
    assert p.rows[0]["id"].tolist() == [9] and p.rejects == [("s.x", reason, record)]


def test_an_atomic_unit_with_a_bad_record_stores_nothing_and_an_unrouted_tag_is_rejected():
    atomic, _ = _unit("s.x", [(1.0, {"id": 9, "v": 1.0}), (2.0, {"id": -1, "v": 1.0})], atomic=True)
    lost, _ = _unit("nowhere", [(1.0, {})])
    long_tag, _ = _unit("s.far-too-long", [(1.0, {"id": 1, "v": 1.0})])
    p = core.plan([atomic, lost, long_tag], _router(), lambda key: False)
    assert p.outcomes[0].committed == 0 and p.outcomes[0].rejected[0][0] == 1
    assert p.outcomes[1].rejected == [(0, "no route of the mapping matches tag 'nowhere'")]
    assert "14 bytes is longer than |S8 allows" in p.outcomes[2].rejected[0][1]
    assert p.rows == {}


def test_mapping_errors_name_the_route_and_the_fix(tmp_path):
    cases = [({}, "needs a non-empty list 'routes'"),
             ({"routes": [{"match": "a", "array": "x", "fields": [["v", "object"]]}]}, "route 1, field 1"),
             ({"routes": [{"match": "a", "array": "x", "layout": "rows", "fields": [["v", "f8"]]}]}, "layout"),
             ({"routes": [{"match": "a", "array": "x", "fields": [["v", "f8", "@when"]]}]}, "special sources"),
             ({"routes": [{"match": "a", "array": "x", "fields": [["v", "f8"]]}] * 2}, "more than one route")]
    for doc, words in cases:
        with pytest.raises(mapping.MappingError, match=words):
            mapping.compile_routes(doc)
    path = tmp_path / "m.toml"
    path.write_text('[[routes]]\nmatch = "a.*"\narray = "a"\nfields = [["v", "f8"]]\n')
    assert mapping.load(str(path))[0].dtype == np.dtype([("v", "f8")])
    (tmp_path / "m.json").write_text(json.dumps(ROUTES)[:-3])
    with pytest.raises(mapping.MappingError, match="not valid JSON"):
        mapping.load(str(tmp_path / "m.json"))


def test_group_policy_bounds():
    policy = core.check_policy(100, 0.01)
    assert policy.due(100, 5.0, 5.0) and policy.due(1, 5.0, 5.011) and not policy.due(1, 5.0, 5.001)
    with pytest.raises(ValueError, match="--group-records"):
        core.check_policy(0, 0.01)
    with pytest.raises(ValueError, match="--group-ms"):
        core.check_policy(10, 0)


def test_forward_modes_decode():
    et = msgpack.ExtType(0, (5).to_bytes(4, "big") + (500_000_000).to_bytes(4, "big"))
    entries = b"".join(msgpack.packb([et, {"v": i}]) for i in range(3))
    for size in (3, 7, None):       # right, wrong and no size: the same entries
        option = {"chunk": "c"} if size is None else {"chunk": "c", "size": size}
        raw = msgpack.unpackb(msgpack.packb(["t", entries, option]), raw=False)
        tag, got, opt = forward.decode(raw)
        assert tag == "t" and opt["chunk"] == "c" and [(e[0], e[1]["v"]) for e in got] == [(5.5, 0), (5.5, 1), (5.5, 2)]
    assert forward.decode(["t", 1, {"a": 1}]) == ("t", [(1, {"a": 1})], {})
    assert forward.decode(["t", [[1, {}], [2, {}]], {"chunk": "x"}])[1] == [[1, {}], [2, {}]]
    for bad, words in [(["t"], "not \\[tag"), ([1, 1, {}], "tag is 1"), (["t", [[1]]], "not \\[time, record\\]"),
                       (["t", 1, {}, "opt"], "option")]:
        with pytest.raises(forward.ProtocolError, match=words):
            forward.decode(bad)
