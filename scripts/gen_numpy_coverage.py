#!/usr/bin/env python3
"""Write ``docs/numpy_coverage.md``: how each numpy function runs on a neoarray
(``neoarray/array/coverage.py`` reads it from the dispatch code).  ``--check`` fails
when the checked-in table is stale (the numpy of ``constraints.txt`` decides the list)."""
import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "numpy_coverage.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the table is stale")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from neoarray.array import coverage
    text = coverage.table()
    if args.check:
        if not TABLE.exists() or TABLE.read_text() != text:
            print(f"{TABLE} is stale: run python scripts/gen_numpy_coverage.py", file=sys.stderr)
            return 1
        return 0
    TABLE.write_text(text)
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
