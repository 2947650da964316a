"""Issue 19's two-sided reference run assembled from its runs (two_sided_run.assemble), on exact linear-oracle
tables written as two workflow runs (no training): the scan tables of each side are copied, the two-sided test
marks the point where the hot side held a latent shut as the one exception with its reason, the linear
thresholds from the other points are within 2% of lambda_k / V, and the cost tables hold every job and chain point
of both sides; a pair whose sides used different stores, or a side never run, stops with the fix."""

from __future__ import annotations

import copy

import json

import numpy as np
import pandas as pd
import pytest

from spectral_collapse import two_sided_run
from spectral_collapse.analysis.synthetic import linear_scan_tables, pca_table
from spectral_collapse.scan import t_grid, t_label

T_K = np.sort(np.array([9.8, 4.2, 1.9, 1.2, 0.65, 0.53, 0.31, 0.17, 0.11, 0.067, 0.018, 0.015]) / 19.0)[::-1]
GRID = t_grid({"max": 1.0, "min": 1e-4, "per_decade": 5})


def _write_runs(root, shut_T=None, cold_pca=None, drop_cold_T=None):
    """Both sides of the linear pair as finished workflow runs (``prepare``'s working directories): analysis
    tables, PCA, summary and run.json with the run's config, the training and measurement jobs' benchmarks and
    train.json with its chain. ``shut_T``: the hot side holds rank 2 shut there."""
    from spectral_collapse.bundle import _run_config
    from spectral_collapse.provenance import config_hash
    from spectral_collapse.storepath import store_paths
    from spectral_collapse.worldclim import pinned_checksums

    sides = two_sided_run.prepare(root, ["linear"])["linear_seed0"]
    for side, work in sides.items():
        lat, prn, runs = linear_scan_tables(T_K, GRID, splits=("test", "train"))
        if side == "hot" and shut_T is not None:
            shut = (lat["T"] == shut_T) & (lat["rank"] == 2)
            lat.loc[shut, "M2"] = 0.0
            lat.loc[shut, "active"] = False
        if side == "cold" and drop_cold_T is not None:
            lat = lat[lat["T"] != drop_cold_T]
        runs = pd.DataFrame([{k: v for k, v in r.items() if k != "totals"} for r in runs])
        runs["validation_loss"] = 1.0 + 0.1 * (side == "hot") * (runs["T"] == shut_T)  # the shut latent costs
        runs["train_loss"] = runs["validation_loss"]
        analysis = work / "results/analysis/linear"
        analysis.mkdir(parents=True)
        for name, table in (("latents", lat), ("pruning", prn), ("runs", runs)):
            table.to_parquet(analysis / f"scan_{name}.parquet")
        pca = cold_pca if side == "cold" and cold_pca is not None else pca_table(T_K)
        pca.to_parquet(work / "results/analysis/pca.parquet")
        config = _run_config(work, two_sided_run.side_presets())
        (work / "results/summary.json").write_text(json.dumps({"config_hash": config_hash(config)}))
        paths = store_paths(config["store"], work, data=config["data"])
        for rel, payload in ((paths.description, {"store": "described"}), (paths.verified, {"files": pinned_checksums()})):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(json.dumps(payload))
        group = f"T{t_label(GRID[0])}_T{t_label(GRID[-1])}"
        for rule, cpu in (("train", 100.0), ("measure", 10.0)):
            bench = work / "results/benchmarks" / rule / "linear" / group
            bench.mkdir(parents=True)
            (bench / "seed0.tsv").write_text(f"s\tcpu_time\tmax_rss\n{cpu + 1}\t{cpu}\t500\n")
        chain = [{"T": T, "init": "initialisation" if i == 0 else "T?", "updates": 1000, "wall_time_s": 1.0,
                  "reused": i == 1, "lr_restarts": 0, "reopened": [3] if side == "hot" and i else []}
                 for i, T in enumerate(GRID)]
        record = {"members": [{"status": "converged"} for _ in GRID], "updates": 1000 * len(GRID),
                  "point_updates": 1000 * len(GRID), "point_updates_unfrozen": 1000 * len(GRID), "ms_per_step": 1.0,
                  "chain": chain}
        run = work / "results/runs/linear" / group / "seed0"
        run.mkdir(parents=True)
        (run / "train.json").write_text(json.dumps(record))
        (run / "run.json").write_text(json.dumps({"config": config}))
    return sides["hot"], sides["cold"]


def test_assemble_tests_the_pair_and_costs_every_job(tmp_path):
    shut = GRID[6]
    hot, cold = _write_runs(tmp_path / "runs", shut_T=shut)
    summary = two_sided_run.assemble(tmp_path / "out", {"linear": (hot, cold)})
    pair = summary["pairs"]["linear"]["linear"]
    assert pair["points"] == len(GRID) and pair["agree"] == len(GRID) - 1
    analysis = pair["analysis"]
    assert [(e["T"], e["check"]) for e in analysis["not_at_equilibrium"]] == [(shut, "sides")]
    assert analysis["resolved_ranks"]["0"] >= 8 and analysis["ranks_within"] == analysis["resolved_ranks"]
    for side in ("hot", "cold"):
        assert (tmp_path / "out/linear" / side / "linear/scan_latents.parquet").is_file()
    # where the sides disagree: the hot side holds one latent fewer; each side alone passes the one-sided checks
    apart = pair["disagreement"]
    assert (apart["points"], apart["hot_fewer_active"], apart["hot_more_active"]) == (1, 1, 0)
    assert apart["hot_passes_one_sided_checks"] == apart["cold_passes_one_sided_checks"] == 1
    assert apart["cold_lower_loss"] == 1 and apart["loss_ratio_hot_over_cold"] == pytest.approx([1.1, 1.1])
    # the lower training loss is on the side nearer the oracle (the cold side: the hot side holds rank 2 shut)
    assert {k: apart["loss_arbitration"][k] for k in ("points", "agree")} == {"points": 1, "agree": 1}
    assert apart["loss_arbitration"]["rows"][0]["lower_loss"] == "cold"
    assert apart["one_sided"]["hot"]["at_equilibrium"] == apart["one_sided"]["cold"]["at_equilibrium"] == len(GRID)
    assert apart["one_sided"]["cold"]["resolved_ranks"]["0"] >= analysis["resolved_ranks"]["0"]
    assert apart["one_sided"]["cold"]["ranks_within"] == apart["one_sided"]["cold"]["resolved_ranks"]  # exact oracle
    marked = pd.read_parquet(tmp_path / "out/linear/two_sided/scan_runs_linear.parquet")
    assert marked["sides_agree"].eq(0.0).sum() == 1
    jobs = pd.read_csv(tmp_path / "out/cost_jobs.csv")
    assert sorted(zip(jobs["side"], jobs["rule"])) == [("cold", "measure"), ("cold", "train"), ("hot", "measure"),
                                                      ("hot", "train")]
    assert jobs["seed"].tolist() == [0, 0, 0, 0] and jobs.loc[jobs["rule"] == "train", "reused_points"].tolist() == [1, 1]
    assert summary["cost"]["cpu_s"] == 220.0 and summary["cost"]["train_cpu_s"] == 200.0
    points = pd.read_csv(tmp_path / "out/cost_points.csv")
    assert len(points) == 2 * len(GRID) and points.loc[points["side"] == "hot", "reopened"].sum() == len(GRID) - 1
    provenance = json.loads((tmp_path / "out/linear/pair.json").read_text())["runs"]
    assert "chain_reopen: encoder" in provenance["hot"]["presets"]["overlay.yaml"]
    assert provenance["hot"]["code"][0]["commit"]
    # A second pair (another session's) is added beside the first; the summary holds both, costs summed.
    again = two_sided_run.assemble(tmp_path / "out", {"linear_again": (hot, cold)})
    assert set(again["pairs"]) == {"linear", "linear_again"} and again["cost"]["cpu_s"] == 440.0
    assert not list((tmp_path / "out").glob(".*"))


@pytest.mark.parametrize("problem, error, match", [
    ("missing", FileNotFoundError, "cold side"), ("swapped", ValueError, "not a hot-side run"),
    ("store", ValueError, "different stores"), ("point", ValueError, "one side only")])
def test_assemble_stops_on_a_pair_that_is_not_one_and_leaves_nothing(tmp_path, problem, error, match):
    hot, cold = _write_runs(tmp_path / "runs", cold_pca=pca_table(T_K * 1.01) if problem == "store" else None,
                            drop_cold_T=GRID[3] if problem == "point" else None)
    pair = {"missing": (hot, tmp_path / "missing"), "swapped": (cold, hot)}.get(problem, (hot, cold))
    with pytest.raises(error, match=match):
        two_sided_run.assemble(tmp_path / "out", {"linear": pair})
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_pairs_compare_what_they_scan_not_how_the_config_spells_it():
    """A side prepared before the overlay pinned the seed (scan.seeds [0, 1], the model's seeds [0]) scans what a
    side with seeds [0] scans; another T grid or another seed does not."""
    from spectral_collapse.config import load_config

    base = load_config()
    base["scan"].update(families=["linear"], model_seeds={"linear": [0]})
    spelled = copy.deepcopy(base)
    spelled["scan"]["seeds"] = [0, 1]
    pinned = copy.deepcopy(base)
    pinned["scan"]["seeds"] = [0]
    assert two_sided_run.scan_of(spelled) == two_sided_run.scan_of(pinned)
    assert list(two_sided_run.scan_of(pinned)) == ["linear"]
    finer = copy.deepcopy(pinned)
    finer["models"]["linear"]["T"] = {"max": 1.0, "min": 1.0e-3, "per_decade": 11}  # the family's own grid wins
    other_seed = copy.deepcopy(pinned)
    other_seed["scan"]["model_seeds"] = {"linear": [1]}
    assert two_sided_run.scan_of(finer) != two_sided_run.scan_of(pinned)
    assert two_sided_run.scan_of(other_seed) != two_sided_run.scan_of(pinned)


def test_prepare_writes_one_working_directory_per_side_that_selects_its_model_seed_and_side(tmp_path):
    from spectral_collapse.config import load_config
    from spectral_collapse.scan import model_seeds, model_specs

    dirs = two_sided_run.prepare(tmp_path / "root", ["mlp-d4:1", "linear"])
    assert set(dirs) == {"mlp-d4_seed1", "linear_seed0"}
    for name, sides in dirs.items():
        for side, work in sides.items():
            config = load_config(work / "presets/reference.yaml", work / "presets/overlay.yaml")
            specs = [s.model_id for s in model_specs(config)]
            assert specs == [name.split("_seed")[0]]
            assert model_seeds(config, specs[0]) == [int(name.split("_seed")[1])]
            assert config["training"]["chain"] and config["training"]["chain_reopen"] == ("encoder" if side == "hot" else False)
            assert config["training"]["chain_from"] == ("cold" if side == "cold" else "hot")
            assert (work / "config.yaml").is_file() and json.loads((work / "code.jsonl").read_text())["commit"]
    # one side alone (the other finished elsewhere): only its directory; an unknown side stops
    alone = two_sided_run.prepare(tmp_path / "alone", ["mlp-d2:0"], sides=["hot"])
    assert list(alone["mlp-d2_seed0"]) == ["hot"] and [p.name for p in (tmp_path / "alone").iterdir()] == ["mlp-d2_seed0_hot"]
    with pytest.raises(ValueError, match="--sides"):
        two_sided_run.prepare(tmp_path / "alone", ["mlp-d2:0"], sides=["warm"])
    # a rerun keeps the directories; another side's overlay in one, or a root inside the repository, stops
    assert two_sided_run.prepare(tmp_path / "root", ["linear"])["linear_seed0"]["hot"] == dirs["linear_seed0"]["hot"]
    (dirs["linear_seed0"]["hot"] / "presets/overlay.yaml").write_text("training: {chain_from: cold}\n")
    with pytest.raises(ValueError, match="another side"):
        two_sided_run.prepare(tmp_path / "root", ["linear"])
    with pytest.raises(ValueError, match="outside the work tree"):
        two_sided_run.prepare(two_sided_run.REPO_ROOT / "results" / "two_sided", ["linear"])
    with pytest.raises(ValueError, match="seed"):
        two_sided_run.parse_pair("mlp-d4:x")
    with pytest.raises(ValueError, match="twice"):
        two_sided_run.prepare(tmp_path / "other", ["linear", "linear:0"])


def test_run_runs_every_side_and_reports_failures(tmp_path, monkeypatch):
    import sys

    real = two_sided_run.snakemake_command
    command = real(tmp_path)
    assert command[1:3] == ["-m", "snakemake"] and "presets/overlay.yaml" in command and "--rerun-incomplete" in command

    def fake(work, preset=two_sided_run.PRESET):
        code = "import pathlib, sys; pathlib.Path('ran').write_text('x'); sys.exit('cold' in pathlib.Path.cwd().name)"
        return [sys.executable, "-c", code]

    monkeypatch.setattr(two_sided_run, "snakemake_command", fake)
    monkeypatch.delenv("WORLDCLIM_DIR", raising=False)
    with pytest.raises(ValueError, match="WORLDCLIM_DIR"):
        two_sided_run.run(tmp_path / "root", ["linear"])
    monkeypatch.setenv("WORLDCLIM_DIR", str(tmp_path))
    status = two_sided_run.run(tmp_path / "root", ["linear", "mlp-d2:1"], streams=2)
    assert len(status) == 4 and all((tmp_path / "root" / w / "ran").is_file() for w in
                                    ("linear_seed0_hot", "linear_seed0_cold", "mlp-d2_seed1_hot", "mlp-d2_seed1_cold"))
    assert sorted(rc for rc in status.values()) == [0, 0, 1, 1]



def test_ship_makes_a_valid_bundle_whose_analysis_is_the_two_sided_one(tmp_path):
    """The committed run from both sides shipped as a bundle (two_sided_run.ship): bundle.check passes, every
    model of the evidence is there, and the redrawn analysis of each model counts exactly the points the pairs'
    two-sided analyses accepted and removed (the sides check travels in the runs table)."""
    from pathlib import Path

    from spectral_collapse import bundle

    evidence = Path(__file__).resolve().parents[1] / "reference" / "two_sided_encoder"
    pairs = json.loads((evidence / "summary.json").read_text())["pairs"]
    record = two_sided_run.ship(evidence, tmp_path / "bundle")
    assert bundle.check(tmp_path / "bundle") == [] and record["two_sided"]["pairs"] == sorted(pairs)
    shipped = json.loads((tmp_path / "bundle/results/summary.json").read_text())["models"]
    expected: dict[str, dict[str, int]] = {}
    for pair in pairs.values():
        for model in pair["models"]:
            a = pair[model]["analysis"]
            counts = expected.setdefault(model, {"equilibrium": 0, "sides": 0})
            counts["equilibrium"] += a["at_equilibrium"]
            counts["sides"] += a["removed_by"]["sides"]
    assert set(shipped) == set(expected)
    for model, counts in expected.items():
        runs = json.loads((tmp_path / f"bundle/results/analysis/{model}/analysis.json").read_text())["runs"]
        assert runs["equilibrium"] == counts["equilibrium"] and runs["removed_by"]["sides"] == counts["sides"], model
        assert "sides_agree" in runs["fits_use"]
        # every point the fourth check removed is listed (and those that failed an earlier check first too)
        assert len(runs["sides_failed_points"]) >= runs["removed_by"]["sides"] > 0


def _restore_hot_sides(evidence, shipped) -> None:
    """The inverse of ``slim`` for a test: each slimmed pair's hot/ folder written back from the bundle it was
    shipped in (the seed's rows of its scan tables, the first seed's maps and correlations), read by the library's
    own readers of a slimmed pair (``_hot_table``, ``_hot_file``)."""
    import shutil

    from spectral_collapse.analysis.start_check import TABLES
    from spectral_collapse.scan import model_seeds

    for record_path in sorted(evidence.glob("*/pair.json")):
        pair = record_path.parent
        if (pair / "hot").is_dir():
            continue
        record = json.loads(record_path.read_text())
        for model in record["models"]:
            seed = model_seeds(record["config"], model)[0]
            tables = {name: two_sided_run._hot_table(pair, model, seed, name, shipped) for name in TABLES}
            files = {name: two_sided_run._hot_file(pair, model, name, shipped)
                     for name in (two_sided_run.MAPS_GZ, "latent_correlations.parquet")} if seed == two_sided_run.MAP_SEED else {}
            dst = pair / "hot" / model
            dst.mkdir(parents=True)
            for name, table in tables.items():
                table.to_parquet(dst / f"scan_{name}.parquet")
            for name, path in files.items():
                shutil.copyfile(path, dst / name)


def test_slim_keeps_each_hot_side_once_and_a_ship_from_the_slim_evidence_is_the_same(tmp_path):
    """After a ship, ``slim`` removes the pairs' hot/ folders only when the bundle holds exactly their content (a
    bundle that differs stops it, removing nothing); shipping the slimmed evidence again, its hot sides read from
    that bundle, gives the same tables and maps; the bundle's maps are packed and ``bundle.prepare`` unpacks
    them for the redraw."""
    import gzip
    import shutil
    from pathlib import Path

    import xarray as xr

    from spectral_collapse import bundle

    evidence = tmp_path / "evidence"
    shutil.copytree(Path(__file__).resolve().parents[1] / "reference" / "two_sided_encoder", evidence)
    _restore_hot_sides(evidence, bundle.BUNDLE)  # committed evidence already shipped and slimmed: from the bundle
    pairs = sorted(p.parent.name for p in evidence.glob("*/pair.json") if (p.parent / "hot").is_dir())
    assert pairs, "the committed evidence holds a pair with its hot side"
    two_sided_run.ship(evidence, tmp_path / "first")
    analysis = tmp_path / "first/results/analysis"
    models = sorted(p.name for p in analysis.iterdir() if p.is_dir())
    assert all((analysis / m / "latent_maps.nc.gz").is_file() and not (analysis / m / "latent_maps.nc").exists()
               for m in models)

    changed = tmp_path / "changed"
    shutil.copytree(tmp_path / "first", changed)
    table = changed / f"results/analysis/{models[0]}/scan_latents.parquet"
    latents = pd.read_parquet(table)
    latents.loc[0, "M2"] += 0.01
    latents.to_parquet(table)
    with pytest.raises(ValueError, match="scan_latents"):
        two_sided_run.slim(evidence, changed)
    assert all((evidence / p / "hot").is_dir() for p in pairs)

    assert two_sided_run.slim(evidence, tmp_path / "first") == pairs
    assert not any((evidence / p / "hot").exists() for p in pairs)
    two_sided_run.ship(evidence, tmp_path / "second", shipped=tmp_path / "first")
    for model in models:
        for name in ("latents", "pruning", "runs"):
            first = pd.read_parquet(analysis / model / f"scan_{name}.parquet")
            assert first.equals(pd.read_parquet(tmp_path / f"second/results/analysis/{model}/scan_{name}.parquet"))
        packed = [(tmp_path / run / f"results/analysis/{model}/latent_maps.nc.gz").read_bytes()
                  for run in ("first", "second")]
        assert packed[0] == packed[1]

    work = bundle.prepare(tmp_path / "work", tmp_path / "second")
    for model in models:
        unpacked = work / f"results/analysis/{model}/latent_maps.nc"
        assert not Path(f"{unpacked}.gz").exists()
        assert unpacked.read_bytes() == gzip.decompress(
            (tmp_path / f"second/results/analysis/{model}/latent_maps.nc.gz").read_bytes())
        with xr.open_dataset(unpacked, engine="scipy") as maps:
            assert maps["mu"].notnull().any()
