"""``benchmarks/scale_model.py`` (the figures of ``docs/scale.md``) runs, and its model
is the real one: the table it builds spreads cells evenly, a lost node's cells are
its share, and the chunk tree's bytes per chunk are those of a real array."""
import json

from benchmarks import scale_model


def test_the_scale_model_runs_and_measures_the_real_table(capsys):
    assert scale_model.main(["--quick", "--repeat", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    figures = {(r["part"], r.get("partitions"), r.get("nodes"), r["figure"]): r["value"]
               for r in lines if "summary" not in r}
    for partitions, nodes in [(120, 10), (1200, 100)]:
        cells = figures[("table", partitions, nodes, "cells")]
        assert cells == partitions * (scale_model.REPLICAS + 1)
        assert figures[("table", partitions, nodes, "node_lost_cells")] == cells // nodes
        assert figures[("table", partitions, nodes, "view_bytes")] > cells     # a few bytes a cell
    per_chunk = figures[("records", None, None, "chunk_tree_bytes_per_chunk")]
    assert 8 < per_chunk < 200
    summary = lines[-1]["summary"]
    assert summary["chunks"]["8 MiB"]["chunks"] == 10 ** 18 // (8 << 20)
