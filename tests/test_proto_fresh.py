"""The generated protobuf code is what scripts/gen_proto.py makes from proto/."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generated_code_is_fresh():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_proto.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_errors_survive_pickling():
    import pickle

    from neoarray import errors
    for cls in (errors.NeoError, errors.ClusterNameMismatch, errors.ClusterUnavailable,
                errors.ChecksumError, errors.RequestRefused, errors.LimitExceeded, errors.StorageFull,
                errors.DirectoryInUse):
        exc = cls("what went wrong")
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is cls and str(back) == "what went wrong"
