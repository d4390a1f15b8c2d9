"""``neoctl`` asks before it removes anything (``neoarray.confirm``): on a terminal it
shows what goes and waits for "y"; without one it needs ``--yes`` (the tests of
truncate, drop, pack, set replicas and check --repair show that side)."""
import os
import subprocess
import sys

import ZODB

from tests.cluster_helpers import neoctl


def _on_terminal(cluster, answer: str, *args):
    """Run ``neoctl --dir <cluster> ARGS`` with a pseudo-terminal as standard input,
    answering ``answer``; ``(exit status, stdout, stderr)``."""
    master, terminal = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "neoarray.ctl", "--dir", cluster.path, *args],
                                stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(terminal)
        os.write(master, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return proc.returncode, out, err


def test_truncate_on_a_terminal_shows_what_goes_and_waits_for_yes(cluster):
    db = ZODB.DB(cluster.open_storage())
    try:
        tids = []
        for v in range(4):
            with db.transaction() as conn:
                conn.root()["v"] = v
            tids.append(db.storage.lastTransaction())
    finally:
        db.close()
    status, out, err = _on_terminal(cluster, "n", "truncate", tids[0].hex())
    assert status == 1 and out == ""
    assert "3 transaction(s) committed after" in err and f"0x{tids[0].hex()} (" in err
    assert f"0x{tids[-1].hex()} (" in err and "Proceed? [y/N]" in err and "nothing changed" in err
    assert neoctl(cluster, "--json", "print", "ids")["last_tid"] == f"0x{tids[-1].hex()}"
    status, out, err = _on_terminal(cluster, "y", "truncate", tids[0].hex())
    assert status == 0 and f"truncated to 0x{tids[0].hex()}" in out, err
    assert neoctl(cluster, "--json", "print", "ids")["last_tid"] == f"0x{tids[0].hex()}"


def test_readme_placeholders_are_refused(cluster):
    """What the README shows in place of a TID or a node cannot run when pasted."""
    assert "16 hex digits" in neoctl(cluster, "truncate", "TID_FROM_PRINT_IDS", "--yes", status=1)
    assert "16 hex digits" in neoctl(cluster, "pack", "TID_FROM_PRINT_IDS", "--yes", status=1)
    assert "bad storage node" in neoctl(cluster, "drop", "NODE_FROM_PRINT_NODE", "--yes", status=1)
    assert "bad storage node" in neoctl(cluster, "kill", "NODE_FROM_PRINT_NODE", "--yes", status=1)
