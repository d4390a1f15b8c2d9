"""``neoarray`` and ``neoctl`` say their version, and their help is plain text."""
import subprocess
import sys


def _run(module, *args) -> str:
    out = subprocess.run([sys.executable, "-m", module, *args], check=False, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_version():
    import neoarray
    assert _run("neoarray.cli", "--version").strip() == f"neoarray {neoarray.__version__}"
    assert neoarray.__version__ in _run("neoarray.ctl", "--version")


def test_help_is_plain_text_and_cluster_up_gives_every_default():
    assert "``" not in _run("neoarray.cli", "--help")
    up = _run("neoarray.cli", "cluster", "up", "--help")
    flags = ["--storages", "--replicas", "--partitions", "--metrics", "--tls", "--standby-masters"]
    blocks = " ".join(up.split()).split("options:")[1]
    for flag, following in zip(flags, flags[1:] + [None]):
        text = blocks.split(f" {flag} ", 1)[1]
        text = text.split(f" {following} ", 1)[0] if following else text
        assert "default" in text, (flag, text)


def test_neoctl_takes_json_and_yes_after_the_command():
    from neoarray.ctl import parse_args
    for argv in (["--json", "-y", "drop", "S1"], ["drop", "S1", "--json", "--yes"]):
        opts = parse_args(["--dir", "d", *argv])
        assert opts.json is True and opts.yes is True and opts.node == "S1"
    opts = parse_args(["--dir", "d", "print", "node"])
    assert opts.json is False and opts.yes is False
