"""No mistake costs finished work (issue 23), the parts that need no finished run: each preset's store has its
own path, a complete store is never scheduled for a rebuild without a WorldClim source, corrupt tables are
recognised and set aside, the redraw hint's command parses as the command it means, and a permission fault is
one line. The end-to-end repros on a finished CI run are in tests/test_cached_runs.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from spectral_collapse import redraw
from spectral_collapse.integrity import set_aside_corrupt, table_problem
from spectral_collapse import worldclim as wc
from spectral_collapse.config import load_config
from spectral_collapse.rulelog import rule_log
from spectral_collapse.storepath import CONTENT_KEYS, LEGACY_DESCRIPTION, LEGACY_STORE, store_paths

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "presets/ci.yaml"


def test_each_preset_has_its_own_store(tmp_path: Path) -> None:
    laptop, ci = load_config()["store"], load_config(CI)["store"]
    assert laptop["n_train"] != ci["n_train"]
    a, b = store_paths(laptop, tmp_path), store_paths(ci, tmp_path)
    assert a.store != b.store and a.description != b.description and "store-" in a.store
    assert store_paths(dict(ci), tmp_path) == b  # the key is the settings, not the dict
    # a store built before the keyed layout is kept where it is for the settings it was built with
    (tmp_path / LEGACY_DESCRIPTION).parent.mkdir(parents=True)
    (tmp_path / LEGACY_DESCRIPTION).write_text(json.dumps({k: ci[k] for k in CONTENT_KEYS}))
    assert store_paths(ci, tmp_path).store == LEGACY_STORE
    assert store_paths(laptop, tmp_path) == a


def test_corrupt_tables_are_recognised_and_set_aside(tmp_path: Path) -> None:
    table = tmp_path / "latents.parquet"
    pd.DataFrame({"x": range(2000)}).to_parquet(table)
    (tmp_path / "run.json").write_text("{}")
    assert table_problem(table) is None and table_problem(tmp_path / "run.json") is None
    with open(table, "r+b") as fh:  # `truncate -s`: the repro
        fh.truncate(table.stat().st_size // 2)
    (tmp_path / "run.json").write_text('{"upda')
    assert "not a complete Parquet file" in table_problem(table)
    assert "not readable" in table_problem(tmp_path / "run.json")
    lines = set_aside_corrupt(["latents.parquet", "run.json", "absent.parquet"], tmp_path)
    assert len(lines) == 2 and "set aside as latents.parquet.corrupt" in lines[0]
    assert not table.exists() and (tmp_path / "latents.parquet.corrupt").is_file()


def test_redraw_hint_is_a_command_that_works(tmp_path: Path) -> None:
    from snakemake.cli import get_argument_parser

    with pytest.raises(redraw.RedrawError) as err:
        redraw.check_cached_inputs(["linear"], tmp_path, configfiles=["presets/ci.yaml"])
    command = next(line for line in str(err.value).splitlines() if "snakemake analysis" in line)
    command = command.split("`")[1]
    args = get_argument_parser().parse_args(command.split()[1:])
    assert list(args.targets) == ["analysis"] and [str(c) for c in args.configfile] == ["presets/ci.yaml"]
    # the form the hint used to suggest takes the target for a config file
    old = get_argument_parser().parse_args(["--configfile", "presets/ci.yaml", "analysis"])
    assert not old.targets and "analysis" in [str(c) for c in old.configfile]


def _workdir(tmp_path: Path, ci_store: bool) -> Path:
    for name in ["Snakefile", "config.yaml", "workflow", "scripts", "presets", "profiles", "envs"]:
        (tmp_path / name).symlink_to(REPO / name)
    data = tmp_path / "results/data"
    data.mkdir(parents=True)
    (data / "worldclim_verified.json").write_text(json.dumps(wc.verified_record(wc.pinned_checksums())))
    if ci_store:
        paths = store_paths(load_config(CI)["store"], tmp_path)
        (tmp_path / paths.store).mkdir(parents=True)
        (tmp_path / paths.description).write_text("{}")
    return tmp_path


def _dry_run(work: Path, args: list[str], worldclim: Path | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "WORLDCLIM_DIR"}
    if worldclim is not None:
        env["WORLDCLIM_DIR"] = str(worldclim)
    proc = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-n", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    return text


def test_a_failed_store_rebuild_loses_nothing(tmp_path: Path) -> None:
    """Repro B without a finished run: a complete store, a forced rebuild, no WorldClim source. The rebuild runs and
    fails naming WORLDCLIM_DIR; Snakemake neither deletes the store nor its description first (update() outputs,
    workflow/rules/data.smk), and puts them back as they were."""
    work = _workdir(tmp_path, ci_store=True)
    paths = store_paths(load_config(CI)["store"], work)
    (work / paths.store / "zarr.json").write_text('{"a finished store": true}')
    (work / paths.description).write_text('{"n_land": 1}')
    before = {p: (work / p).read_bytes() for p in (f"{paths.store}/zarr.json", paths.description)}
    env = {k: v for k, v in os.environ.items() if k != "WORLDCLIM_DIR"}
    proc = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "data", "--configfile", "presets/ci.yaml",
                           "--forcerun", "build_store", "--config", f'data={{"url": "file://{tmp_path}/absent.zip"}}'],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "rule build_store" in text and "WORLDCLIM_DIR" in text, text[-4000:]
    assert {p: (work / p).read_bytes() for p in before} == before
    # restored as complete, not left incomplete: the next run (rerun-incomplete) has nothing to rebuild
    assert "Nothing to be done" in _dry_run(work, ["data", "--configfile", "presets/ci.yaml"], None)


def test_another_preset_never_plans_over_this_store(tmp_path: Path) -> None:
    """Repro A's plan: the laptop config after a CI run builds its own store; the CI store is no output."""
    work = _workdir(tmp_path, ci_store=True)
    ci = store_paths(load_config(CI)["store"], work)
    laptop = store_paths(load_config()["store"], work)
    text = _dry_run(work, ["data"], None)
    assert "rule build_store" in text and laptop.store in text and ci.store not in text


def test_permission_fault_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "rule.log"
    with pytest.raises(SystemExit) as err:
        with rule_log(log, "figure"):
            raise PermissionError(13, "Permission denied", "results/figures/linear/cascade.png")
    text = log.read_text()
    assert str(err.value).startswith("Permission denied: results/figures/linear/cascade.png")
    assert "chmod -R u+w results/figures/linear" in text and "Traceback" not in text
