#!/usr/bin/env python3
"""Regenerate the protobuf/gRPC Python code in ``neoarray/proto`` from ``proto/``.

The include path ``proto/`` mirrors the Python package, so ``neoarray/proto/x.proto``
becomes the module ``neoarray.proto.x_pb2`` and imports resolve without path hacks.
Run ``python scripts/gen_proto.py --check`` to fail when the checked-in code is stale.
"""
import argparse
import filecmp
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = "neoarray/proto"


def generate(out_dir: pathlib.Path) -> None:
    from grpc_tools import protoc
    import grpc_tools

    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
            f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *sources]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    (out_dir / PACKAGE / "__init__.py").write_text(
        '"""Generated protobuf and gRPC code: never edit, run scripts/gen_proto.py."""\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        generate(tmp)
        fresh = tmp / PACKAGE
        target = ROOT / PACKAGE
        names = sorted(p.name for p in fresh.iterdir())
        if opts.check:
            stale = [n for n in names if not (target / n).exists() or not filecmp.cmp(fresh / n, target / n, shallow=False)]
            extra = sorted({p.name for p in target.glob("*.py*")} - set(names))
            if stale or extra:
                print(f"generated code is stale: {stale + extra}; run python scripts/gen_proto.py", file=sys.stderr)
                return 1
            return 0
        target.mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copyfile(fresh / n, target / n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
