"""Config validation (issue 18 item 5, issue 23 items 5-6): nested `--config` values and YAML's `1e-3` are
numbers, NaN/inf temperatures and reversed windows are errors, and a bad value is reported in one line
naming the key and the fix, before anything else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.cli import parse_config

from spectral_collapse.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_nested_command_line_T_list_validates() -> None:
    override = parse_config(['scan={"T":{"values":[0.1, 1e-3]}}', 'training={"lr":"2e-3","max_updates":"50"}'])
    assert override["scan"]["T"]["values"] == ["0.1", "1e-3"]  # what Snakemake hands over: strings
    config = load_config(override)
    assert config["scan"]["T"]["values"] == [0.1, 1e-3]
    assert config["training"]["lr"] == 2e-3 and config["training"]["max_updates"] == 50


def test_yaml_1e_minus_3_is_a_number() -> None:
    preset = yaml.safe_load("training:\n  lr: 1e-3\n")
    assert preset["training"]["lr"] == "1e-3"  # YAML 1.1: text
    assert load_config(preset)["training"]["lr"] == 1e-3


@pytest.mark.parametrize("values", [[0.1, float("nan")], [float("inf"), 0.1]])
def test_non_finite_T_is_rejected(values: list[float]) -> None:
    with pytest.raises(ConfigError, match=r"^config key scan\.T\.values\[\d\]: (nan|inf) is not a finite number"):
        load_config({"scan": {"T": {"values": values}}})
    with pytest.raises(ConfigError, match=r"^config key models\.mlp\.T\.values"):
        load_config({"models": {"mlp": {"T": {"values": values}}}})


def test_reversed_window_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^config key analysis\.meanfield_window: \[0\.6, 0\.1\].*lower < upper"):
        load_config({"analysis": {"meanfield_window": [0.6, 0.1]}})
    with pytest.raises(ConfigError, match=r"^config key analysis\.rate_window"):
        load_config({"analysis": {"rate_window": [1.0, 1.0]}})
    load_config({"analysis": {"meanfield_window": [0.1, 0.6]}})


def test_schema_error_is_one_line_naming_key_and_fix() -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"training": {"lr": "fast"}})
    assert str(err.value).startswith("config key training.lr: 'fast' is not of type 'number'; write a number")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^config key scan: .*'bogus' was unexpected.*remove or rename"):
        load_config({"scan": {"bogus": 1}})


def test_snakemake_reports_the_key_before_anything_else(tmp_path: Path) -> None:
    """The command line a user types: the nested form runs (dry run), a bad value stops with the key line first."""
    for name in ["Snakefile", "config.yaml", "workflow", "scripts", "presets", "profiles", "envs"]:
        (tmp_path / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if k != "WORLDCLIM_DIR"}
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    ok = subprocess.run([snakemake, "-n", "data", "--config", 'scan={"T":{"values":[0.1]}}'], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-3000:]
    bad = subprocess.run([snakemake, "-n", "data", "--config", 'scan={"T":{"values":[0.1,".nan"]}}'], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in (bad.stdout + bad.stderr).splitlines() if line.strip()]
    first = next(i for i, line in enumerate(lines) if "ConfigError" in line)
    assert bad.returncode != 0 and lines[first + 1].startswith("config key scan.T.values[1]: nan is not a finite")
