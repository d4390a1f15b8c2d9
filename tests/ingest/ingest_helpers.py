"""What the ingest tests share: a mapping file, the service as a real process
(``python -m neoarray.cli ingest``), free ports, reading the arrays back."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import transaction
import ZODB

from tests.conftest import ROOT

MAPPING = {"routes": [
    {"match": "bench.*", "array": "bench", "chunk_items": 1 << 14,
     "fields": [["time", "f8", "@time"], ["seq", "u8"], ["sensor", "u8"], ["value", "f8"]]},
    {"match": "cols.*", "array": "cols", "layout": "columns",
     "fields": [["seq", "u8"], ["value", "f4"]]},
]}


def write_mapping(tmp_path) -> str:
    path = os.path.join(tmp_path, "mapping.json")
    with open(path, "w") as f:
        json.dump(MAPPING, f)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``neoarray ingest`` in a process of its own, against ``cluster``."""

    def __init__(self, cluster, tmp_path, *args):
        self.ready = os.path.join(tmp_path, f"ready-{time.monotonic_ns()}.json")
        self.log = open(os.path.join(tmp_path, "ingest.log"), "ab")  # noqa: SIM115 - closed by stop
        cmd = [sys.executable, "-m", "neoarray.cli", "ingest", "--mapping", write_mapping(tmp_path),
               "-a", cluster.masters, "-c", cluster.cluster, "--ready-file", self.ready, *args]
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env)
        self.addresses = self._wait_ready()

    def _wait_ready(self, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(self.ready):
            assert self.proc.poll() is None, f"the ingest service exited: {self.proc.returncode}"
            assert time.monotonic() < deadline, "the ingest service did not start"
            time.sleep(0.05)
        with open(self.ready) as f:
            return json.load(f)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(60) == 0
        self.log.close()


def read_array(cluster, name) -> np.ndarray:
    db = ZODB.DB(cluster.open_storage())
    try:
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        values = np.asarray(conn.root()[name][...])
        tm.abort()
        conn.close()
        return values
    finally:
        db.close()


def ingest_state(cluster, name="default"):
    """``(committed, rejected, recent rejects)`` of the service's state in the database."""
    from neoarray.ingest.state import ROOT_KEY
    db = ZODB.DB(cluster.open_storage())
    try:
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        st = conn.root()[ROOT_KEY][name]
        out = st.committed, st.rejected, st.recent_rejects(100)
        tm.abort()
        conn.close()
        return out
    finally:
        db.close()
