"""The array examples of the README run as a new user runs them (a real embedded
cluster in a subprocess), at a small size; each checks its own answers."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_example(name, *args):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                         capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_numpy_style_demo_runs_and_checks_its_answers():
    printed = run_example("numpy_style_demo.py", "--gib", "0.1", "--cache-mib", "24", "--window-mib", "8")
    for step in ("lazyarray, nothing stored", "Z.max()", "y = A @ x", "np.cumsum(y)", "np.percentile",
                 "na.store", "peak anonymous memory"):
        assert step in printed, printed
