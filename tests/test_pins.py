"""Dependency pins live in requirements.txt; the conda environments and the Makefile must agree."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)$")


def read_requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"requirements.txt: {line!r} is not an exact pin (name==version)"
        pins[match.group(1).lower()] = match.group(2)
    return pins


def conda_pins(path: Path) -> dict[str, str]:
    spec = yaml.safe_load(path.read_text())
    pins = {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                match = PIN.match(line.strip())
                if match:
                    pins[match.group(1).lower()] = match.group(2)
    return pins


def test_requirements_are_exact_pins_and_torch_is_the_cpu_release() -> None:
    pins = read_requirements()
    assert pins["torch"] == "2.13.0"
    assert "lightning" not in pins, "import pytorch_lightning only; do not install the lightning package too"


def test_every_conda_environment_matches_requirements() -> None:
    pins = read_requirements()
    env_files = sorted((ROOT / "envs").glob("*.yaml"))
    assert env_files, "envs/ holds no conda environment"
    for path in env_files:
        found = conda_pins(path)
        assert found == pins, f"{path.name} disagrees with requirements.txt: {set(found.items()) ^ set(pins.items())}"


def test_makefile_installs_the_pinned_torch_first() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert f"torch=={read_requirements()['torch']}" in makefile


def test_workflow_rules_name_an_existing_conda_environment() -> None:
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / env).resolve().is_file(), f"{smk.name}: conda env {env} does not exist"
