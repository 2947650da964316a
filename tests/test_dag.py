"""The DAG for each preset (`snakemake -n` job counts), `snakemake --lint`, and config validation.

Every snakemake call runs in a scratch folder that links the workflow files of the repository, so
the counts are those of a fresh checkout whatever results/ the developer already has.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from spectral_collapse.config import load_config
from spectral_collapse.scan import model_points_per_job, model_seeds, model_specs, model_t_grid, scan_groups

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
WORKFLOW_FILES = ["Snakefile", "config.yaml", "workflow", "scripts", "presets", "profiles", "envs"]
PRESETS = {"laptop": None, "ci": "presets/ci.yaml", "paper": "presets/paper.yaml",
           "reference": "presets/reference.yaml"}


def merged_config(preset: str | None) -> dict:
    """config.yaml with a preset merged over it, as snakemake's --configfile merges, validated."""
    return load_config(*([REPO / preset] if preset else []))


def n_jobs(config: dict, model_id: str) -> int:
    """Training jobs of one model and seed: the model's scan in groups of scan.points_per_job."""
    family = "linear" if model_id == "linear" else "mlp"
    return len(scan_groups(model_t_grid(config, family), model_points_per_job(config, family)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dag")
    for name in WORKFLOW_FILES:
        (folder / name).symlink_to(REPO / name)
    return folder


def snakemake(workdir: Path, *args: str, env_update: dict | None = None, timeout: int = 300):
    env = dict(os.environ)
    default_worldclim = REPO.parent / "shared" / "worldclim" / "wc2.1_10m_bio"
    env.setdefault("WORLDCLIM_DIR", str(default_worldclim))
    env.update(env_update or {})
    return subprocess.run(
        [str(SNAKEMAKE), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


_DRY_RUNS: dict[tuple[str, str | None], tuple[Counter, Counter]] = {}


def dry_run_jobs(workdir: Path, preset: str | None) -> tuple[Counter, Counter]:
    """(jobs per rule, training jobs per (model, seed)) from `snakemake -n` (once per preset)."""
    key = (str(workdir), preset)
    if key not in _DRY_RUNS:
        _DRY_RUNS[key] = _dry_run_jobs(workdir, preset)
    return _DRY_RUNS[key]


def _dry_run_jobs(workdir: Path, preset: str | None) -> tuple[Counter, Counter]:
    args = ["-n", "--cores", "2"] + (["--configfile", preset] if preset else [])
    proc = snakemake(workdir, *args)
    assert proc.returncode == 0, f"snakemake -n failed ({preset or 'config.yaml'}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    text = proc.stdout + proc.stderr
    per_rule: Counter = Counter()
    per_model: Counter = Counter()
    rule = None
    for line in text.splitlines():
        match = re.match(r"^(?:localrule|rule) (\w+):$", line.strip())
        if match:
            rule = match.group(1)
            per_rule[rule] += 1
            continue
        if rule == "train" and line.strip().startswith("wildcards:"):
            wc = dict(item.split("=", 1) for item in line.split(":", 1)[1].strip().split(", "))
            per_model[(wc["model"], wc["seed"])] += 1
    return per_rule, per_model


def expected_counts(config: dict) -> dict[str, int]:
    models = [spec.model_id for spec in model_specs(config)]
    runs = sum(n_jobs(config, m) * len(model_seeds(config, m)) for m in models)
    return {
        "runs": runs,
        "models": len(models),
        "figure": len(models),  # one job draws a model's five figures
        "collect_scan": len(models),
        "analyse_model": len(models),
        "latent_maps": len(models),
        "latent_variables": len(models),  # issue 20: latent spectroscopy
        "collinearity": 1,
        "spectroscopy": 1,
        "pca": 1,
        "summary": 1,
        "build_store": 1,
        "fetch_worldclim": 1,
    }


@pytest.mark.parametrize("name", list(PRESETS))
def test_dry_run_job_counts(workdir: Path, name: str):
    preset = PRESETS[name]
    config = merged_config(preset)
    expected = expected_counts(config)
    per_rule, per_model = dry_run_jobs(workdir, preset)
    for rule in ("figure", "collect_scan", "analyse_model", "latent_maps", "latent_variables", "collinearity",
                 "spectroscopy", "pca", "summary", "build_store", "fetch_worldclim"):
        assert per_rule[rule] == expected[rule], f"{name}: {rule} jobs {per_rule[rule]} != {expected[rule]}; all: {dict(per_rule)}"
    assert per_rule["train"] == per_rule["measure"] == expected["runs"], f"{name}: {dict(per_rule)} != {expected['runs']}"
    for (model, _), n in per_model.items():
        assert n == n_jobs(config, model), f"{name}: training jobs of {model}: {n}"


def test_a_preset_can_give_an_explicit_T_list(workdir: Path):
    """scan: {T: {values: [...]}} in a --configfile is merged over config.yaml's {max, min, per_decade}: the
    list wins (one training job per listed value for the MLP with points_per_job 1; the linear family keeps the
    grid config.yaml gives it under models.linear.T), and validation passes."""
    configfile = write_preset(workdir, "t_values", {"scan": {"T": {"values": [0.3, 0.03, 0.003]},
                                                             "points_per_job": 1}})
    proc = snakemake(workdir, "-n", "--configfile", configfile)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert len(re.findall(r"model=mlp-d4, group=T[^,]+, seed=0", text)) == 2 * 3  # train and measure, 3 points
    for label in ("T3.0000e-01", "T3.0000e-02", "T3.0000e-03"):
        assert f"results/runs/mlp-d4/{label}/seed0/model.pt" in text


def test_paper_preset_is_the_protocol(workdir: Path):
    """121 training jobs per family, depth and seed, and the protocol's values (docs/science.md section 4)."""
    config = merged_config("presets/paper.yaml")
    grid = model_t_grid(config, "mlp")
    assert len(grid) == 121 and grid[0] == pytest.approx(1.0) and grid[-1] == pytest.approx(1e-6)
    ratios = [a / b for a, b in zip(grid, grid[1:])]
    assert max(ratios) == pytest.approx(10 ** (1 / 20)) and min(ratios) == pytest.approx(10 ** (1 / 20))
    for family in ("linear", "mlp"):
        from spectral_collapse.scan import training_settings

        settings = training_settings(config, family)
        assert settings["lr"] == 3e-4 and settings["batch_size"] == 256 and settings["max_updates"] == 1_000_000
        assert settings["tolerance"] == 1e-3 and settings["patience_fraction"] == 0.01
        assert settings["lr_drops"] == 0  # the paper's rule: stop at the first convergence
    assert config["store"]["n_train"] == 500_000 and config["store"]["block_km"] == 500
    assert config["store"]["split_seed"] == 0
    mlp = config["models"]["mlp"]
    assert mlp["depths"] == [2, 4, 8, 16] and mlp["width"] == 64 and mlp["latents"] == 32
    assert mlp["logvar_bias_init"] == -4.0
    assert config["decoder"] == {"variance": "fixed", "sigma2": 1.0}

    _, per_model = dry_run_jobs(workdir, "presets/paper.yaml")
    expected = {(m, str(s)) for m in ("linear", "mlp-d2", "mlp-d4", "mlp-d8", "mlp-d16") for s in config["scan"]["seeds"]}
    assert set(per_model) == expected, sorted(per_model)
    assert all(n == 121 for n in per_model.values()), dict(per_model)


def test_lint_is_clean(workdir: Path):
    proc = snakemake(workdir, "--lint")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in text, f"snakemake --lint:\n{text[-6000:]}"


# --------------------------------------------------------------------------- config validation


def write_preset(workdir: Path, name: str, content: dict) -> str:
    path = workdir / f"bad_{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return path.name


@pytest.mark.parametrize(
    "name, preset, must_name",
    [
        ("negative_T_min", {"scan": {"T": {"max": 1.0, "min": -1.0e-3, "per_decade": 4}}}, ["scan", "T", "min"]),
        ("negative_T_value", {"scan": {"T": {"values": [1.0, -0.01]}}}, ["scan", "T"]),
        ("unknown_family", {"scan": {"families": ["linear", "transformer"]}}, ["scan", "families", "transformer"]),
        ("unknown_key", {"training": {"learning_rate": 0.1}}, ["learning_rate"]),
        ("worldclim_dir", {"data": {"worldclim_dir": "/nonexistent/worldclim"}}, ["data.worldclim_dir", "/nonexistent/worldclim"]),
    ],
)
def test_wrong_config_value_names_the_key(workdir: Path, name: str, preset: dict, must_name: list[str]):
    configfile = write_preset(workdir, name, preset)
    proc = snakemake(workdir, "-n", "--configfile", configfile)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{name}: snakemake accepted a wrong config:\n{text[-3000:]}"
    for word in must_name:
        assert word in text, f"{name}: the error does not name {word!r}:\n{text[-3000:]}"


def test_missing_worldclim_env_names_the_variable(workdir: Path):
    proc = snakemake(workdir, "-n", env_update={"WORLDCLIM_DIR": "/nonexistent/wc_env"})
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "WORLDCLIM_DIR" in text and "/nonexistent/wc_env" in text, text[-3000:]


def test_a_family_can_have_its_own_group_size():
    """models.<family>.points_per_job, when given, groups that family's scan instead of scan.points_per_job
    (the laptop preset trains the cheap linear family in one job and splits the MLP over the cores)."""
    config = load_config()
    config["scan"]["points_per_job"] = 4
    config["models"]["linear"]["points_per_job"] = 31
    config["models"]["mlp"].pop("points_per_job", None)
    assert model_points_per_job(config, "linear") == 31
    assert model_points_per_job(config, "mlp") == 4
