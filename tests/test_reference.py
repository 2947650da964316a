"""The reference bundle (reference/): its provenance and sizes, and a redraw of every figure and the summary from
it in a fresh working directory, without the rasters and without training (`make reference-figures`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from spectral_collapse import bundle
from spectral_collapse.redraw import REDRAW_RULES

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
FIGURES = ("cascade", "spectra", "meanfield", "truncation", "maps")
HEADLINE = ("identity_r2", "identity_r2_ranks", "rank_agreement", "kendall_tau", "rank_inversions", "T_c", "dD",
            "best_D", "threshold_status")


def test_bundle_sizes_and_provenance():
    assert bundle.check() == []
    record = json.loads((bundle.BUNDLE / "provenance.json").read_text())
    commits = record["code_commit"] if isinstance(record["code_commit"], list) else [record["code_commit"]]
    assert commits and all(re.fullmatch(r"[0-9a-f]{40}", c) for c in commits), record["code_commit"]  # a two-sided
    # ship (two_sided_run.ship) lists every commit its sides ran at
    assert record["jobs"] and {"train", "measure"} <= {job["rule"] for job in record["jobs"]}
    assert all(job["point_updates"] <= job["point_updates_unfrozen"] for job in record["jobs"] if job["rule"] == "train")
    for name in ("torch", "pytorch-lightning", "numpy", "snakemake"):
        assert record["package_versions"].get(name, "not installed") != "not installed", name


def test_figures_and_summary_redraw_from_the_bundle(tmp_path):
    """The redraw-only DAG on the bundle's cached tables: every figure of every model and results/summary.json,
    nothing else run, and the recomputed analysis equals the shipped one."""
    workdir = bundle.prepare(tmp_path / "reference")
    env = {k: v for k, v in os.environ.items() if k != "WORLDCLIM_DIR"}  # no rasters needed
    start = time.monotonic()
    proc = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "workflow/Redraw.smk"), "-d", str(workdir), "--cores",
                           "2", "figures"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    print(f"redraw of the reference bundle: {elapsed:.1f} s")
    ran = set(re.findall(r"^(?:local)?rule (\w+):$", text, flags=re.M))
    assert ran and ran <= set(REDRAW_RULES), ran
    shipped = json.loads((bundle.BUNDLE / "results/summary.json").read_text())
    redrawn = json.loads((workdir / "results/summary.json").read_text())
    assert set(redrawn["models"]) == set(shipped["models"])
    for model, analysis in shipped["models"].items():
        for fig in FIGURES:
            for ext in ("png", "pdf"):
                assert (workdir / f"results/figures/{model}/{fig}.{ext}").is_file(), (model, fig, ext)
        for key in HEADLINE:
            a, b = analysis[key], redrawn["models"][model][key]
            if isinstance(a, list) and a and not isinstance(a[0], str):
                np.testing.assert_allclose(np.array(a, dtype=float), np.array(b, dtype=float), rtol=1e-9,
                                           err_msg=f"{model} {key}")
            else:
                assert a == b, (model, key, a, b)


def _docs_tables():
    """docs/tables.py, the docs generator (not part of the library)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_tables", REPO / "docs" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_puts_every_model_beside_the_paper():
    text = _docs_tables().readme_tables()
    shipped = json.loads((bundle.BUNDLE / "results/summary.json").read_text())
    header = text.splitlines()[0]
    assert all(model in header for model in shipped["models"]) and "paper" in header
    for paper_value in ("~0.98", "| 13 |", "~4 (ranks 4-17)", "| PCA, paper | 6 | 9 | 10 | 12 | 15 | 17 |"):
        assert paper_value in text, paper_value
    assert "wall s without freezing (estimate)" in text


def test_the_documented_tables_are_the_bundles():
    """Every table row that `make reference-tables` prints from the shipped bundle stands, as printed, in README.md
    or docs/results.md: a new bundle cannot ship beside the numbers of the old one."""
    text = (REPO / "README.md").read_text() + (REPO / "docs/results.md").read_text()
    tables = _docs_tables()
    printed = "\n".join([tables.readme_tables(),  # and issue 19's runs from both sides
                          *(tables.two_sided_tables(e) for e in (tables.TWO_SIDED, tables.TWO_SIDED_ENCODER))])
    rows = [line for line in printed.splitlines() if line.startswith("|")]
    missing = [line for line in rows if line not in text]
    assert rows and not missing, "run `make reference-tables` and paste its tables:\n" + "\n".join(missing[:10])


def test_export_refuses_a_config_the_summary_was_not_made_with(tmp_path):
    """The shipped config must be the run's: config.yaml + the presets it used (the summary's config hash)."""
    import shutil

    import pytest

    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    shutil.copyfile(REPO / "config.yaml", run / "config.yaml")
    shutil.copyfile(REPO / "presets/reference.yaml", run / "reference.yaml")
    shutil.copyfile(bundle.BUNDLE / "results/summary.json", run / "results/summary.json")
    with pytest.raises(ValueError, match="another config"):
        bundle.export(run, tmp_path / "bundle")  # the presets not given: config.yaml's hash, not the summary's
    assert not (tmp_path / "bundle").exists()


def test_paper_comparisons_leave_unresolved_what_the_accepted_points_cannot_say():
    """docs/tables.py's model-to-paper claims: a seed without a d_eff fails the paper's d_eff only when it resolves
    at least that many thresholds (else "not resolved"); the depth claim is judged only for seeds where both
    models resolve HEAD_K thresholds."""
    from spectral_collapse.analysis.model_analysis import HEAD_K

    tables = _docs_tables()
    eps = [0.05]  # the paper's VAE: d_eff 2 at 5%

    def model(depth: int, resolved: dict[str, int], d_eff: dict[str, int | None], head: dict[str, float]) -> dict:
        spread = {"n_resolved": {"per_seed": resolved}, "d_eff_0.05": {"per_seed": d_eff},
                  "best_D_head": {"per_seed": head}}
        return {"family": "mlp", "depth": depth, "thresholds_resolved": {"n_resolved": max(resolved.values())},
                "best_D": [0.5] * 8, "d_eff": {"model": [None]}, "seed_spread": spread}

    many, few = HEAD_K + 2, 1
    models = {"mlp-d2": model(2, {"0": many, "1": many}, {"0": None, "1": 2}, {"0": 0.4, "1": 0.4}),
              "mlp-d4": model(4, {"0": many, "1": few}, {"0": None, "1": None}, {"0": 0.3, "1": 0.3})}
    rows = {line.split(" | ")[0].lstrip("| "): line.rsplit(" | ", 1)[-1].rstrip(" |")
            for line in tables._paper_comparisons(models, list(models), eps) if line.startswith("| m")}
    assert rows["mlp-d2: d_eff at 5% equals the paper's VAE (2)"] == "seed-dependent"  # seed 0 fails, seed 1 holds
    assert rows["mlp-d4: d_eff at 5% equals the paper's VAE (2)"] == "not resolved"  # seed 1 resolves 1 < 2
    models["mlp-d4"]["seed_spread"]["n_resolved"]["per_seed"]["1"] = many
    rows = {line.split(" | ")[0].lstrip("| "): line.rsplit(" | ", 1)[-1].rstrip(" |")
            for line in tables._paper_comparisons(models, list(models), eps) if line.startswith("| ")}
    assert rows["mlp-d4: d_eff at 5% equals the paper's VAE (2)"] == "fails for every seed"
    depth = next(v for k, v in rows.items() if k.startswith("depth"))
    assert depth == "holds for every seed"  # 0.3 < mlp-d2's 0.5 in both seeds, both resolve HEAD_K
    models["mlp-d4"]["seed_spread"]["n_resolved"]["per_seed"]["1"] = few
    rows = {line.split(" | ")[0].lstrip("| "): line.rsplit(" | ", 1)[-1].rstrip(" |")
            for line in tables._paper_comparisons(models, list(models), eps) if line.startswith("| ")}
    assert next(v for k, v in rows.items() if k.startswith("depth")) == "not resolved"


def test_active_by_depth_and_model_costs_read_each_pair(tmp_path):
    """docs/tables.py: the depth-by-side table puts each MLP pair's active latents per side and seed side by side
    (a shipped pair without hot/ reads its marked runs table; a missing point or NaN prints "-"; linear is left
    out; a side failing its own checks there is starred), and the per-model cost table sums the pairs' jobs per model."""
    tables = _docs_tables()
    Ts = (1e-2, 1e-3)
    for model, seed, hot, cold in (("mlp-d2", 0, [4, 5], [4, 7]), ("mlp-d4", 0, [3, 4], [4, 7]),
                                   ("mlp-d4", 1, [3, float("nan")], [4, 7])):
        pair = tmp_path / f"{model}_seed{seed}"
        pair.mkdir()
        (pair / "pair.json").write_text(json.dumps({"models": [model]}))
        for side, active in (("hot", hot), ("cold", cold)):
            folder = pair / "two_sided" if (side == "hot" and seed == 1) else pair / side / model
            folder.mkdir(parents=True, exist_ok=True)
            name = f"scan_runs_{model}.parquet" if folder.name == "two_sided" else "scan_runs.parquet"
            pd.DataFrame({"T": list(Ts), "train_n_active": active}).to_parquet(folder / name)
    marks = tmp_path / "mlp-d4_seed0/two_sided"  # the pair's own checks: hot fails stability at 1e-2, the cold
    marks.mkdir()  # side drifts at 1e-3; a point failing only the fourth check ("sides") is not starred
    pd.DataFrame({"seed": [0, 0], "T": list(Ts), "cold_failed": [None, "drift"]}).to_csv(
        marks / "two_sided_mlp-d4.csv", index=False)
    (marks / "two_sided.json").write_text(json.dumps({"mlp-d4": {"analysis": {"not_at_equilibrium": [
        {"seed": 0, "T": 1e-2, "check": "stability"}, {"seed": 0, "T": 1e-3, "check": "sides"}]}}}))
    (tmp_path / "linear_seed0").mkdir()
    (tmp_path / "linear_seed0/pair.json").write_text(json.dumps({"models": ["linear"]}))
    rows = tables._active_by_depth(tmp_path, Ts)
    assert rows[0] == "| T | side | mlp-d2: active, seed 0 / 1 | mlp-d4: active, seed 0 / 1 |"
    assert rows[2:6] == ["| 1e-02 | hot | 4 / - | 3* / 3 |", "| 1e-02 | cold | 4 / - | 4 / 4 |",
                         "| 1e-03 | hot | 5 / - | 4 / - |", "| 1e-03 | cold | 7 / - | 7* / 7 |"]
    assert "fails its own checks" in rows[-1]
    jobs = pd.DataFrame([
        {"model": "mlp-d4", "seed": s, "side": side, "rule": rule, "cpu_s": cpu, "points": 31 if rule == "train" else None}
        for s in (0, 1) for side, rule, cpu in (("hot", "train", 100.0), ("cold", "train", 50.0), ("hot", "measure", 10.0),
                                                ("cold", "measure", 10.0))]
        + [{"model": "linear", "seed": 0, "side": "hot", "rule": "train", "cpu_s": 31.0, "points": 31}])
    jobs.to_csv(tmp_path / "cost_jobs.csv", index=False)
    costs = tables._two_sided_model_costs(tmp_path / "cost_jobs.csv")
    assert costs[2] == "| linear | 1 | 31 / 0 | 0 | 0.01 | 1 | 8% |"  # 31 of 371 CPU s
    assert costs[3] == "| mlp-d4 | 2 | 200 / 100 | 40 | 0.09 | 5 | 92% |"  # 340 CPU s over 2 x 31 points


def test_the_committed_validation_is_the_bundles_and_the_linear_oracle_holds(tmp_path):
    """reference/validation/ (issue 19's validation of the method, `make reference-validation`) is what the shipped
    bundle gives now, and on the linear family it holds: every point accepted at equilibrium within 0.05 of the
    exact oracle's M^2 at every rank, every resolved threshold within 2% of the training PCA's lambda_k/V."""
    from spectral_collapse.analysis import start_check

    committed = bundle.BUNDLE / "validation"
    fresh = start_check.validate_bundle(bundle.BUNDLE, tmp_path)
    assert json.loads((committed / "validation.json").read_text()) == json.loads((tmp_path / "validation.json").read_text())
    tables = sorted(p.name for p in tmp_path.glob("*.csv"))
    assert tables == sorted(p.name for p in committed.glob("*.csv"))
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_csv(committed / name), pd.read_csv(tmp_path / name), obj=name)
    oracle = fresh["linear_oracle"]
    assert oracle["points_at_equilibrium"] > 0 and oracle["points_within"] == oracle["points_at_equilibrium"], oracle
    assert oracle["resolved_ranks"] > 0 and oracle["ranks_within"] == oracle["resolved_ranks"], oracle
    assert oracle["max_relative_error"] <= start_check.TC_TOL, oracle
