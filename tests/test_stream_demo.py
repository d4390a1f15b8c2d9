"""The README's streaming demo (examples/sensor_stream_demo.py) run as a user runs it:
a cluster, ``neoarray ingest`` and ``neoarray dashboard`` as processes, a synthetic feed
over HTTP and the alert job; every reading sent is stored, every jump is flagged, and
no process is left behind."""
import re
import subprocess
import sys

from neoarray import localdir
from tests.conftest import ROOT


def processes_mentioning(text: str) -> list[int]:
    """Pids of the processes with ``text`` in their command line."""
    return [p.pid for p in localdir._processes() if any(text in arg for arg in p.argv)]


def test_the_sensor_stream_demo_stores_every_reading_and_flags_every_jump(tmp_path):
    data = tmp_path / "sensors"
    out = subprocess.run([sys.executable, "examples/sensor_stream_demo.py", "--dir", str(data), "--seconds", "5",
                          "--rate", "500", "--jump-every", "700", "--storages", "1", "--replicas", "0",
                          "--dashboard", "127.0.0.1:0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = re.search(r"summary: sent (\d+) readings, (\d+) stored, (\d+) jumps, (\d+) alerts", out.stdout)
    assert summary, out.stdout[-3000:]
    sent, stored, jumps, alerts = map(int, summary.groups())
    assert sent == stored > 0
    assert alerts == jumps > 0
    assert len(re.findall(r"^ALERT reading \d+", out.stdout, re.M)) == alerts
    assert re.search(r"open http://127\.0\.0\.1:\d+/login\?token=\S+ to watch", out.stdout)
    assert processes_mentioning(str(data)) == []
