"""The README's quick start is the contract: ``.ci/run`` runs its test command, and the
install commands use the constraints file that keeps a fresh install reproducible."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts) -> str:
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def quick_start_commands() -> list[str]:
    """The shell commands of the README's "Quick start" section, in order."""
    section = _read("README.md").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL)]


def test_ci_runs_exactly_the_readmes_test_command_in_a_fresh_virtualenv():
    demo, tests = quick_start_commands()
    assert "neoarray demo" in demo and "pytest" in tests
    script = _read(".ci", "run")
    assert tests in script.splitlines()
    assert "-m venv" in script and "system-site-packages" not in script
    assert "CI=true" in script


def test_the_install_commands_use_the_constraints_file_and_it_pins_the_tested_stack():
    for command in quick_start_commands():
        assert "-c constraints.txt" in command, command
    pinned = {line.split("==")[0].lower() for line in _read("constraints.txt").splitlines()
              if "==" in line and not line.startswith("#")}
    assert {"hypothesis", "pytest", "numpy", "zodb", "grpcio", "protobuf"} <= pinned


def test_ci_installs_the_debian_packages_the_tests_drive_when_missing():
    """Chromium (the dashboard's browser test) and Mosquitto (the MQTT tests) are
    installed by .ci/run, before the README's test command, when they are missing."""
    lines = _read(".ci", "run").splitlines()
    install = next(i for i, line in enumerate(lines) if "apt-get install -y" in line
                   and not line.lstrip().startswith("echo"))
    assert "apt-get update" in lines[install]
    for package, probe in (("chromium", "/usr/bin/chromium"), ("mosquitto", "mosquitto")):
        assert any(probe in line and f"missing+=({package})" in line for line in lines[:install]), package
    assert install < lines.index(quick_start_commands()[1])
