"""The committed pins (requirements/constraints.txt) cover the project's dependencies, and the checker that
`make setup` runs refuses an environment that differs from them."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
CHECK = ROOT / "scripts" / "check_pins.py"


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def _pins() -> dict[str, str]:
    lines = [line for line in CONSTRAINTS.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("==") for line in lines)


def test_every_dependency_and_dev_tool_is_pinned_and_torch_is_the_cpu_release():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    pins = _pins()
    assert wanted - set(pins) == set(), "run `make lock`: these dependencies have no pin"
    assert pins["torch"] == "2.13.0"
    assert {"pip", "setuptools"} <= set(pins)  # the installer and the build backend too


def _check(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "constraints.txt"
    path.write_text(text)
    return subprocess.run([sys.executable, str(CHECK), str(path)], capture_output=True, text=True, timeout=60)


def test_the_checker_refuses_other_versions_and_unpinned_packages(tmp_path):
    pins = _pins()
    full = "".join(f"{name}=={version}\n" for name, version in pins.items())
    exact = _check(tmp_path, full)
    if exact.returncode != 0:  # not the pinned environment (a user's own): the refusals are still checked
        assert "the environment does not match" in exact.stderr
    else:
        assert "match" in exact.stdout
    bumped = full.replace(f"numpy=={pins['numpy']}", "numpy==0.0.1")
    result = _check(tmp_path, bumped)
    assert result.returncode == 1 and f"other version: numpy {pins['numpy']} (pinned 0.0.1)" in result.stderr
    result = _check(tmp_path, full.replace(f"numba=={pins['numba']}\n", ""))
    assert result.returncode == 1 and "not pinned:    numba" in result.stderr
    result = _check(tmp_path, "numpy>=1\n")
    assert result.returncode == 1 and "expected name==version" in result.stderr
