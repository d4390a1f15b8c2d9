#!/usr/bin/env python3
"""Run the deterministic simulation of the cluster (``simulation/``): N seeded
schedules, each a whole cluster in one process with faults injected; ends with the
line ``N schedules, M violations`` and exits non-zero when M > 0.  ``--seed S``
replays seed S exactly (``--trace`` prints it)."""
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":
        # the same iteration order of sets in every run: a seed replays exactly
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    sys.path.insert(0, str(ROOT))
    from simulation.cli import main
    sys.exit(main())
