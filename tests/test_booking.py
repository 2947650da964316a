"""What a run books (issue 22): device-aware runtime and memory from the cost model, the totals a dry run
prints, the GPU check's measurement picked up, and more time and memory on a retry.

The dry runs (`snakemake -n`, a few seconds each) run in a scratch folder linking the workflow files, so the
numbers are those of a fresh checkout; no flag is added by hand beyond the profile and the presets.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spectral_collapse import cost
from spectral_collapse.config import load_config

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
WORKFLOW_FILES = ["Snakefile", "config.yaml", "workflow", "scripts", "presets", "profiles", "envs"]
PAPER = ["presets/paper.yaml"]
PAPER_GPU = ["presets/paper.yaml", "presets/paper-gpu.yaml"]


def _workdir(folder: Path) -> Path:
    for name in WORKFLOW_FILES:
        (folder / name).symlink_to(REPO / name)
    return folder


def dry_run(workdir: Path, configfiles: list[str], profile: str | None = "profiles/slurm") -> str:
    env = dict(os.environ)
    env.setdefault("WORLDCLIM_DIR", str(REPO.parent / "shared" / "worldclim" / "wc2.1_10m_bio"))
    args = [str(SNAKEMAKE), "-n", "--configfile", *configfiles]
    if profile:
        args += ["--workflow-profile", profile]
    proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    return text


def booked_total(text: str) -> tuple[float, float]:
    """(GPU-hours, core-hours) of the dry run's `total:` booking line."""
    match = re.search(r"^\s*total: ([\d.]+) GPU-hours, ([\d.]+) core-hours", text, re.M)
    assert match, f"no booking line in the dry run:\n{text[:3000]}"
    return float(match.group(1)), float(match.group(2))


def train_requests(text: str) -> list[dict[str, str]]:
    """The resources line of every `rule train:` job of the dry run, as dicts."""
    jobs = []
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", text):
        if re.match(r"\s*rule train:", block):
            line = re.search(r"resources: (.*)", block).group(1)
            jobs.append(dict(item.split("=", 1) for item in line.split(", ")))
    return jobs


@pytest.fixture(scope="module")
def paper_gpu_profile(tmp_path_factory) -> str:
    return dry_run(_workdir(tmp_path_factory.mktemp("book")), PAPER)


def test_paper_preset_on_the_gpu_profile_books_under_200_gpu_hours(paper_gpu_profile: str):
    """Issue 22 acceptance: 605 one-point training jobs on profiles/slurm (one GPU each), the stated GPU cost
    model; the printed total is the sum of the jobs' own requests."""
    gpu_h, _ = booked_total(paper_gpu_profile)
    jobs = train_requests(paper_gpu_profile)
    assert len(jobs) == 605
    assert all(job.get("gpu") == "1" for job in jobs)
    requested = sum(int(job["runtime"]) for job in jobs) / 60
    assert gpu_h == pytest.approx(requested, abs=0.1), (gpu_h, requested)
    assert gpu_h < 200, f"the paper preset books {gpu_h} GPU-hours"
    assert "gpu: stated default" in paper_gpu_profile
    # What the issue found before: 176 min per job (a CPU estimate on a GPU), 1,775 GPU-hours.
    assert max(int(job["runtime"]) for job in jobs) < 60


def test_paper_gpu_preset_books_under_8_hours_per_job(tmp_path: Path):
    """Issue 22 acceptance: presets/paper-gpu.yaml with no --set-resources flag: 5 ensemble jobs of 121 members,
    each under 8 h (it asked for 14 days before), host memory from the GPU entry."""
    text = dry_run(_workdir(tmp_path), PAPER_GPU)
    jobs = train_requests(text)
    assert len(jobs) == 5
    assert all(int(job["runtime"]) < 8 * 60 for job in jobs), [job["runtime"] for job in jobs]
    entry = cost.load_model(tmp_path)["gpu"]
    assert all(int(job["mem_mb"]) == cost.train_mem_mb(entry, 121) for job in jobs)


def test_a_gpu_check_measurement_is_picked_up(tmp_path: Path):
    """`make gpu-check` writes results/benchmarks/gpu_cost.json; the next run books with it, and says so."""
    workdir = _workdir(tmp_path)
    config = load_config(*(REPO / p for p in PAPER_GPU))
    stated = cost.load_model(workdir)["gpu"]
    timings = {"fixed_s": 30.0, "mlp-d4": {1: {"ms_per_update": 1.0, "eval_s": 0.2},
                                             121: {"ms_per_update": 13.0, "eval_s": 1.4}}}
    for model, ms in {"linear": 3.0, "mlp-d2": 8.0, "mlp-d8": 24.0, "mlp-d16": 48.0}.items():
        timings[model] = {121: {"ms_per_update": ms, "eval_s": 1.0}}
    entry = cost.gpu_entry_from_timings(timings)
    assert entry["update_ms"] == {"base": pytest.approx(0.9), "per_member": pytest.approx(0.1)}
    cost.write_gpu_measurement(workdir / cost.GPU_MEASUREMENT, entry, "Test GPU")
    text = dry_run(workdir, PAPER_GPU)
    assert f"{cost.GPU_MEASUREMENT} (measured on Test GPU)" in text
    runtimes = sorted(int(job["runtime"]) for job in train_requests(text))
    expected = sorted(cost.train_runtime_min(entry, config, m, 121)
                      for m in ("linear", "mlp-d2", "mlp-d4", "mlp-d8", "mlp-d16"))
    assert runtimes == expected
    assert runtimes != sorted(cost.train_runtime_min(stated, config, m, 121)
                              for m in ("linear", "mlp-d2", "mlp-d4", "mlp-d8", "mlp-d16"))


def test_a_broken_measurement_names_the_file(tmp_path: Path):
    path = tmp_path / cost.GPU_MEASUREMENT
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(cost.CostModelError, match=r"gpu_cost.json.*make gpu-check"):
        cost.load_model(tmp_path)
    path.write_text(json.dumps({"gpu": "x", "entry": {"safety": 1}}))
    with pytest.raises(cost.CostModelError, match=r"gpu_cost.json: entry: missing keys"):
        cost.load_model(tmp_path)


def test_cpu_entry_and_device_from_the_profile():
    """The laptop profile asks for no GPU: CPU costs (the measured benchmarks); the slurm profile's `gpu: 1`
    (or a gres naming a gpu) makes it a GPU job. The CPU estimate of a paper job is the benchmark's."""
    assert cost.requested_device(None) == "cpu"
    assert cost.requested_device({"gpu": 1}) == "gpu"
    assert cost.requested_device({"gres": "gpu:a100:1"}) == "gpu"
    assert cost.requested_device({"gpu": 0, "mem_mb": 100}) == "cpu"
    model = cost.load_model(REPO / "no-such-folder")
    config = load_config(*(REPO / p for p in PAPER))
    # mlp-d4, one point, 1e6 updates, 1,000 evaluations: 2 x (10 s + 1e6 x 1.32 ms + 1000 x 0.09 s) = 2,840 s
    assert cost.job_seconds(model["cpu"], config, "mlp-d4", 1) == pytest.approx(2 * (10 + 1320 + 90))
    # depths between the tabulated ones: linear in the depth
    d6 = cost.job_seconds(model["cpu"], config, "mlp-d6", 1)
    assert cost.job_seconds(model["cpu"], config, "mlp-d4", 1) < d6 < cost.job_seconds(model["cpu"], config, "mlp-d8", 1)
    assert cost.train_mem_mb(model["cpu"], 1) == 4100 and cost.train_mem_mb(model["gpu"], 121) == 7025


def test_a_retry_asks_for_more():
    """After a job fails on time or memory, the retry (attempt 2, 3) asks for twice, three times as much."""
    model = cost.load_model(REPO / "no-such-folder")
    config = load_config(*(REPO / p for p in PAPER))
    for entry in model.values():
        first = cost.train_runtime_min(entry, config, "mlp-d16", 1, attempt=1)
        assert cost.train_runtime_min(entry, config, "mlp-d16", 1, attempt=2) == 2 * first
        assert cost.train_runtime_min(entry, config, "mlp-d16", 1, attempt=3) == 3 * first
        assert cost.train_mem_mb(entry, 121, attempt=2) == 2 * cost.train_mem_mb(entry, 121, attempt=1)


def test_a_short_job_is_booked_the_floor(tmp_path: Path, monkeypatch):
    """A job the cost model books for a minute (the CI preset's MLP: 400 updates, ~58 s on the cpu entry) asks for
    cost_model.yaml's min_runtime_min instead, which its retries multiply; a long job keeps its own estimate. A
    floor that is not a whole number of minutes >= 1 is refused, naming the file and the key."""
    model = cost.load_model(REPO / "no-such-folder")
    ci = load_config(REPO / "presets" / "ci.yaml")
    floor = cost.runtime_floor_min()
    assert floor == 10
    for entry in model.values():
        assert cost.job_seconds(entry, ci, "mlp-d2", 31) < 2 * 60
        assert [cost.train_runtime_min(entry, ci, "mlp-d2", 31, attempt=k) for k in (1, 2, 3)] == [10, 20, 30]
    paper = load_config(*(REPO / p for p in PAPER))
    seconds = cost.job_seconds(model["gpu"], paper, "mlp-d16", 1)
    assert seconds > 10 * 60 and cost.train_runtime_min(model["gpu"], paper, "mlp-d16", 1) == -(-seconds // 60)
    broken = tmp_path / "cost_model.yaml"
    broken.write_text(cost.MODEL_FILE.read_text().replace("min_runtime_min: 10", "min_runtime_min: 0.5"))
    cost.runtime_floor_min.cache_clear()
    monkeypatch.setattr(cost, "MODEL_FILE", broken)
    try:
        with pytest.raises(cost.CostModelError, match=r"cost_model.yaml: min_runtime_min must be"):
            cost.runtime_floor_min()
    finally:
        monkeypatch.undo()
        cost.runtime_floor_min.cache_clear()


def test_a_chain_job_is_booked_point_after_point():
    """With the warm-start chain (presets/reference.yaml: training.chain) a job's points train one after another,
    each a one-member job with its own budget: E x the one-point cost, not one E-member ensemble step."""
    entry = cost.load_model(REPO / "no-such-folder")["cpu"]
    config = load_config(REPO / "presets" / "reference.yaml")
    st = config["training"]
    assert st["chain"] is True
    U, n_eval, E = st["max_updates"], st["max_updates"] // st["eval_every"], 31
    point = U * (0.35 + 0.97) / 1e3 + n_eval * 0.09  # mlp-d4, one member: update loop and evaluations
    assert cost.job_seconds(entry, config, "mlp-d4", E) == pytest.approx(2.0 * (10 + E * point))
    config["training"] = {**st, "chain": False}
    assert cost.job_seconds(entry, config, "mlp-d4", E) == pytest.approx(
        2.0 * (10 + U * (0.35 + E * 0.97) / 1e3 + n_eval * E * 0.09))


def test_gpu_check_writes_where_the_workflow_reads(tmp_path: Path, monkeypatch):
    """benchmarks/gpu_check.py on a GPU: its timings (mlp-d4 at E = 1, 16, 121, the other models at 121) become
    results/benchmarks/gpu_cost.json under the repository, which cost.load_model reads; the CPU dry run writes
    nothing. The timings here are made up: the GPU is not needed to check the plumbing."""
    import torch

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    monkeypatch.setattr(gpu_check, "REPO", tmp_path)
    job = {("mlp-d4", E, 0): {"steady_ms_per_update": 0.5 + 0.01 * E, "eval_s": 0.1 + 0.001 * E} for E in (1, 16, 121)}
    job[("mlp-d4", 121, 60)] = {"steady_ms_per_update": 99.0, "eval_s": 9.0}  # half frozen: not a cost entry
    for model, ms in {"linear": 0.4, "mlp-d2": 1.2, "mlp-d8": 2.9, "mlp-d16": 5.0}.items():
        job[(model, 121, 0)] = {"steady_ms_per_update": ms, "eval_s": 0.3}
    gpu_check.write_cost_measurement(False, torch.device("cpu"), job, 20.0)
    assert not (tmp_path / cost.GPU_MEASUREMENT).exists()
    gpu_check.write_cost_measurement(True, torch.device("cpu"), job, 20.0)
    entry = cost.load_model(tmp_path)["gpu"]
    assert str(cost.GPU_MEASUREMENT) in entry["origin"]
    assert entry["update_ms"]["base"] == pytest.approx(0.5) and entry["update_ms"]["per_member"] == pytest.approx(0.01)
    assert entry["fixed_s"] == 20.0
    # mlp-d16 at E = 121 took 5.0 ms against mlp-d4's 1.71 ms: its factor
    assert cost.model_factor(entry["factors"]["base"], "mlp-d16") == pytest.approx(5.0 / 1.71, rel=1e-3)
