"""Finished runs are never thrown away (issue 11).

- Redraw only: `make figures`, `make report` and `snakemake figures` run the redraw rules
  (spectral_collapse.redraw.REDRAW_RULES) from the cached tables and nothing upstream of them; a missing
  cached table stops the run naming it; stale ones are reported, never recomputed.
- Content, not path: the WorldClim data is its 19 checksums. Another folder, a symlinked copy, a zip or
  an unset WORLDCLIM_DIR reruns nothing; a changed file stops the run with a checksum error before any
  job starts.

The end-to-end tests run the CI preset once (module fixture `study`, several minutes) in a copy of the
repository, then check Snakemake's own record of the jobs each command ran (.snakemake/log) against the
allowlist of redraw rules, and the mtime of every file under results/ that a redraw must not touch.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from spectral_collapse import redraw
from spectral_collapse.codefiles import package_files
from spectral_collapse.integrity import table_problem
from spectral_collapse.staleness import STORE_KEYS, config_warnings
from spectral_collapse import worldclim as wc
from spectral_collapse.worldclim import BIO_FILES, WorldClimError

REPO = Path(__file__).resolve().parents[1]
COPIED = ["Snakefile", "config.yaml", "workflow", "scripts", "presets", "profiles", "envs", "src",
          "Makefile", "requirements.txt", "pyproject.toml"]
CI = "--configfile presets/ci.yaml"
# The redraw workflow, as `make figures` runs it.
REDRAW = ["-s", "workflow/Redraw.smk", "--workflow-profile", "profiles/default"]
CI_MODELS = ["linear", "mlp-d2"]
# Outputs of the figure rule (figures, their logs and benchmarks) and the report: a redraw rewrites them.
FIGURE_OUTPUTS = ("results/figures/", "results/logs/figures/", "results/benchmarks/figures/", "results/report.html")


# --------------------------------------------------------------------------- the redraw boundary


def test_cached_inputs_are_the_redraw_boundary() -> None:
    cached = redraw.cached_inputs(["linear", "mlp-d4"])
    assert len(cached) == 2 * 5 + 3
    assert cached["results/analysis/linear/scan_runs.parquet"] == redraw.ANALYSIS_COMMAND
    assert cached["results/analysis/mlp-d4/latent_maps.nc"] == redraw.ANALYSIS_COMMAND
    assert cached["results/data/worldclim_verified.json"] == redraw.DATA_COMMAND


def test_missing_cached_inputs_are_named_with_their_command(tmp_path: Path) -> None:
    for path in redraw.cached_inputs(["linear"]):
        _placeholder(tmp_path / path)
    (tmp_path / "results/analysis/linear/scan_pruning.parquet").unlink()
    (tmp_path / "results/data/worldclim_store.json").unlink()
    with pytest.raises(redraw.RedrawError) as err:
        redraw.check_cached_inputs(["linear", "mlp-d4"], tmp_path)
    text = str(err.value)
    assert "results/analysis/linear/scan_pruning.parquet" in text and "results/data/worldclim_store.json" in text
    assert "results/analysis/mlp-d4/scan_runs.parquet" in text and "snakemake all" in text
    assert "snakemake analysis" in text and "snakemake data" in text
    # results hold linear only and the config asks for linear and mlp-d4: a table is missing, no other config
    assert "another --configfile" not in text
    assert "results/analysis/linear/scan_latents.parquet" not in text
    with pytest.raises(redraw.RedrawError, match="another --configfile"):  # tables of a model not asked for
        redraw.check_cached_inputs(["mlp-d4"], tmp_path)


def test_redraw_workflow_holds_only_the_redraw_rules(tmp_path: Path) -> None:
    """workflow/Redraw.smk includes exactly the rules listed in redraw.REDRAW_RULES (plus its default target), and
    the main Snakefile all of them too: the boundary is one file of rules (workflow/rules/redraw.smk)."""
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    (tmp_path / "config.yaml").symlink_to(REPO / "config.yaml")
    listed = {}
    for snakefile in ("workflow/Redraw.smk", "Snakefile"):
        proc = subprocess.run([snakemake, "-s", str(REPO / snakefile), "-d", str(tmp_path), "--list-rules"],
                              cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={k: v for k, v in os.environ.items() if k != "WORLDCLIM_DIR"})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        listed[snakefile] = {line.split()[0] for line in proc.stdout.splitlines() if line.strip() and not line[0].isspace()}
    assert listed["workflow/Redraw.smk"] == {*redraw.REDRAW_RULES, "all"}
    assert set(redraw.REDRAW_RULES) < listed["Snakefile"] and {"train", "measure"} <= listed["Snakefile"]
    for name in ("_rules", "_localrules", "sys.argv", "get_argument_parser"):  # no Snakemake internals, no argv
        assert name not in (REPO / "src/spectral_collapse/redraw.py").read_text(), name


def test_code_of_a_rule_follows_its_imports() -> None:
    collect = package_files([REPO / "scripts/collect_scan.py"])
    names = {p.name for p in collect}
    assert {"collect_scan.py", "collect.py", "rulelog.py"} <= names
    assert not any("plotting" in p.parts for p in collect)
    train = package_files([REPO / "scripts/train_group.py"])
    assert {"group.py", "vae.py", "training.py", "callbacks.py"} <= {p.name for p in train}
    plot = package_files([REPO / "scripts/plot_figures.py"])
    assert any("plotting" in p.parts for p in plot)


def test_config_warnings(tmp_path: Path) -> None:
    from spectral_collapse.scan import model_t_grid

    from spectral_collapse.config import load_config

    config = load_config({"scan": {"families": ["linear"]}})
    store = {k: config["store"][k] for k in STORE_KEYS} | {"sha256": wc.pinned_checksums()}
    (tmp_path / "results/data").mkdir(parents=True)
    (tmp_path / redraw.STORE_DESCRIPTION).write_text(json.dumps(store))
    runs = tmp_path / "results/analysis/linear"
    runs.mkdir(parents=True)
    pd.DataFrame({"T_grid": model_t_grid(config, "linear"), "seed": 0}).to_parquet(runs / "scan_runs.parquet")
    (tmp_path / "run.json").write_text(json.dumps({"config": config}))
    records = lambda model: ["run.json"]  # noqa: E731
    assert config_warnings(config, ["linear"], tmp_path, records) == []
    # The analysis settings and the data's location are not what the runs depend on.
    other = yaml.safe_load(yaml.safe_dump(config))
    other["analysis"]["active_threshold"] = 0.2
    other["data"]["worldclim_dir"] = str(tmp_path)
    assert config_warnings(other, ["linear"], tmp_path, records) == []
    other["models"]["linear"]["training"]["max_updates"] = 100
    other["store"]["n_train"] = 5000
    other["models"]["linear"]["T"]["per_decade"] = 8
    [text] = config_warnings(other, ["linear"], tmp_path, records)
    assert "linear: job.training.max_updates: cached 20000, config 100" in text
    assert "store.n_train: cached 100000, config 5000" in text
    assert "linear: the cached scan has 31 T values, the config's grid 25" in text
    assert "nothing is recomputed" in text


# --------------------------------------------------------------------------- the data's identity


@pytest.fixture(scope="module")
def wc_zip(worldclim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wczip") / wc.ARCHIVE_NAME
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in BIO_FILES:
            zf.write(worldclim_dir / name, arcname=f"{wc.FOLDER_NAME}/{name}")
    return path


def _linked_copy(src: Path, dst: Path, corrupt: str | None = None) -> Path:
    dst.mkdir(parents=True)
    for name in BIO_FILES:
        if name == corrupt:
            data = bytearray((src / name).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (dst / name).write_bytes(data)
        else:
            (dst / name).symlink_to(src / name)
    return dst


def test_verified_record_is_the_checksums_only(worldclim_dir: Path, wc_zip: Path) -> None:
    folder = wc.verify_local_source(wc.resolve_local_source(None, str(worldclim_dir)))
    zipped = wc.verify_local_source(wc.resolve_local_source(None, str(wc_zip)))
    assert folder == zipped == wc.pinned_checksums()
    record = wc.verified_record(folder)
    assert set(record) == {"dataset", "files"} and record == wc.verified_record(zipped)
    assert not any(str(worldclim_dir) in str(v) for v in record.values())


def test_record_is_current(tmp_path: Path) -> None:
    path = tmp_path / "verified.json"
    assert not wc.record_is_current(path)
    path.write_text(json.dumps(wc.verified_record(wc.pinned_checksums())))
    assert wc.record_is_current(path)
    # a record written before issue 11 (with raster_dir/source/origin) is current too: nothing reruns
    path.write_text(json.dumps({"raster_dir": "/x", "source": "local", "origin": "/x", "files": wc.pinned_checksums()}))
    assert wc.record_is_current(path)
    path.write_text(json.dumps({"files": {**wc.pinned_checksums(), BIO_FILES[3]: "0" * 64}}))
    assert not wc.record_is_current(path)
    path.write_text("{not json")
    assert not wc.record_is_current(path)


def test_bad_local_copy_names_file_and_variable(worldclim_dir: Path, tmp_path: Path) -> None:
    folder = _linked_copy(worldclim_dir, tmp_path / "wc", corrupt="wc2.1_10m_bio_9.tif")
    src = wc.resolve_local_source(None, str(folder))
    with pytest.raises(WorldClimError, match=r"WORLDCLIM_DIR.*wc2\.1_10m_bio_9\.tif: SHA-256 mismatch.*no result was touched"):
        wc.verify_local_source(src)
    bad_zip = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad_zip, "w") as zf:
        for name in BIO_FILES:
            zf.write(folder / name, arcname=name)
    with pytest.raises(WorldClimError, match=r"config key data\.worldclim_dir.*wc2\.1_10m_bio_9\.tif: SHA-256 mismatch"):
        wc.verify_local_source(wc.resolve_local_source(str(bad_zip), None))


def test_locate_reuses_an_earlier_download(wc_zip: Path, tmp_path: Path) -> None:
    """No download when download_dir already holds the archive or its extraction (the URL is unreachable)."""
    shutil.copy(wc_zip, tmp_path / wc.ARCHIVE_NAME)
    unreachable = "http://127.0.0.1:9/wc2.1_10m_bio.zip"
    folder, info, files = wc.locate_rasters(None, unreachable, tmp_path, progress=False)
    assert files == wc.pinned_checksums() and info["source"] == "download"
    (tmp_path / wc.ARCHIVE_NAME).unlink()
    again, _, files = wc.locate_rasters(None, unreachable, tmp_path, progress=False)
    assert again == folder and files == wc.pinned_checksums()


# --------------------------------------------------------------------------- end to end


def _copy_repo(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst / name)
    (dst / ".venv").symlink_to((REPO / ".venv").resolve())
    return dst


def _env(work: Path, worldclim: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WORLDCLIM_DIR"}
    env["PYTHONPATH"] = str(work / "src")  # the copy's code, so that edits here stay here
    if worldclim is not None:
        env["WORLDCLIM_DIR"] = str(worldclim)
    return env


def _logs(work: Path) -> set[Path]:
    return set((work / ".snakemake" / "log").glob("*.snakemake.log"))


def _run(work: Path, cmd: list[str], worldclim: Path | None, timeout: int = 1500) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run a command in the copy; return it and the rules of the jobs it ran (Snakemake's own logs)."""
    before = _logs(work)
    proc = subprocess.run(cmd, cwd=work, env=_env(work, worldclim), capture_output=True, text=True, timeout=timeout)
    jobs = []
    for log in sorted(_logs(work) - before):
        jobs += re.findall(r"^(?:local)?rule (\w+):$", log.read_text(), flags=re.MULTILINE)
    return proc, jobs


def _make(work: Path, target: str, worldclim: Path | None, args: str = CI):
    # -o: the copy's .venv is the repository's, already installed; never rebuild it from here.
    return _run(work, ["make", "-o", ".venv/.installed", target, f"SNAKEMAKE_ARGS={args}"], worldclim)


def _snakemake(work: Path, args: list[str], worldclim: Path | None):
    return _run(work, [str(work / ".venv/bin/snakemake"), *args], worldclim)


def _mtimes(work: Path, exclude: tuple[str, ...] = FIGURE_OUTPUTS) -> dict[str, int]:
    out = {}
    for path in (work / "results").rglob("*"):
        rel = path.relative_to(work).as_posix()
        if path.is_file() and not rel.startswith(exclude):
            out[rel] = path.stat().st_mtime_ns
    return out


def _assert_redraw_only(proc: subprocess.CompletedProcess, jobs: list[str], before: dict[str, int], after: dict[str, int]) -> None:
    text = proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, text
    assert set(jobs) <= set(redraw.REDRAW_RULES), f"jobs outside the redraw rules ran: {jobs}\n{text}"
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"a redraw touched earlier outputs: {changed[:20]}"


@pytest.fixture(scope="module")
def study(worldclim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CI preset run once in a copy of the repository (`make run-ci`, WORLDCLIM_DIR set)."""
    work = _copy_repo(tmp_path_factory.mktemp("cached") / "repo")
    proc, jobs = _make(work, "run-ci", worldclim_dir, args="")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    assert "train" in jobs and (work / "results/summary.json").is_file()
    return work


@pytest.fixture(scope="module")
def moved_copy(worldclim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second folder with the same 19 files (copies: other inodes, other mtimes)."""
    folder = tmp_path_factory.mktemp("moved") / "elsewhere"
    folder.mkdir()
    for name in BIO_FILES:
        shutil.copy(worldclim_dir / name, folder / name)
    return folder


# What may differ between two runs of the same numbers: where the rasters were read from (provenance), the
# config's hash and the package versions. Everything else in results/summary.json is compared bit for bit.
VOLATILE = (("config_hash",), ("package_versions",), ("data", "raster_source"))  # path prefixes


def _leaves(value, path: tuple = ()) -> dict[tuple, object]:
    """{path: value} of every leaf of a JSON document (floats as they were written: bit for bit)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_leaves(item, (*path, key)))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(_leaves(item, (*path, i)))
        return out
    return {path: value}


# Float32 training gives other last bits on another kind of CPU (other SIMD kernels): the golden of this
# machine's processor is compared bit for bit; on a processor without one, the AMD golden within a tolerance
# above those bits and far below any change of the science. Measured, Intel Xeon against AMD EPYC (the same code,
# 6dec410): 337 numbers differ, by at most 1.2e-5 relative where they differ by more than 1e-7, and by at most
# 1.8e-5 absolute (an identity R^2 tail of 6.4).
GOLDENS = sorted((REPO / "tests/data").glob("run_ci_summary*.json"))
OTHER_CPU_TOL = {"rel_tol": 1e-4, "abs_tol": 1e-6}


def _golden_for(processor: str) -> tuple[dict, bool]:
    """(the golden summary, whether it is this processor's own: compare bit for bit)."""
    docs = [json.loads(p.read_text()) for p in GOLDENS]
    own = [d for d in docs if d.get("processor") == processor]
    return (own[0]["summary"], True) if own else (docs[0]["summary"], False)


@pytest.mark.slow
def test_run_ci_numbers_are_bit_for_bit_unchanged(study: Path) -> None:
    """Issues 20 and 21: `make run-ci` gives the numbers it gave before issue 21's changes (tests/data/
    run_ci_summary*.json, one per processor kind, each with its provenance), bit for bit on a processor with a
    golden; elsewhere within OTHER_CPU_TOL. Runs first on the fresh run, before any test edits it."""
    from spectral_collapse.bundle import _cpu_name

    golden, own = _golden_for(_cpu_name())
    now = json.loads((study / "results/summary.json").read_text())
    before, after = ({p: v for p, v in _leaves(doc).items() if not any(p[:len(prefix)] == prefix for prefix in VOLATILE)}
                     for doc in (golden, now))
    assert set(before) == set(after), (sorted(set(before) ^ set(after), key=str)[:20])

    def same(a, b) -> bool:
        if own or isinstance(a, bool) or not isinstance(a, float) or not isinstance(b, (int, float)):
            return a == b
        return math.isclose(a, b, **OTHER_CPU_TOL)

    differ = [(p, before[p], after[p]) for p in before if not same(before[p], after[p])]
    assert not differ, (f"{len(differ)} numbers differ from the run before issue 21 "
                        f"({'bit for bit' if own else OTHER_CPU_TOL} on {_cpu_name()}), e.g. {differ[:10]}")


def test_goldens_name_their_processor_and_hold_the_same_study():
    """Every golden says which processor made it and holds the same keys (one study, other last bits)."""
    docs = [json.loads(p.read_text()) for p in GOLDENS]
    assert len(docs) >= 2 and all(d.get("processor") and d.get("provenance") for d in docs)
    assert len({d["processor"] for d in docs}) == len(docs)
    keys = [set(_leaves(d["summary"])) - {k for k in _leaves(d["summary"]) if k[:1] in (("config_hash",), ("package_versions",))}
            for d in docs]
    assert all(k == keys[0] for k in keys)


@pytest.mark.slow
def test_report_with_worldclim_unset(study: Path) -> None:
    """The issue's step 2: `make report` in a shell without WORLDCLIM_DIR redraws and reports only."""
    before = _mtimes(study)
    proc, jobs = _make(study, "report", None)
    _assert_redraw_only(proc, jobs, before, _mtimes(study))
    assert jobs.count("figure") == len(CI_MODELS)  # make figures redraws every figure (one job per model)
    assert (study / "results/report.html").is_file()
    text = proc.stdout + proc.stderr
    assert "Redraw only" in text and "older than the code" not in text
    # the report is the whole study's (main Snakefile): its workflow and runtimes include training (issue 21)
    html = (study / "results/report.html").read_text(errors="replace")
    assert re.search(r"\btrain\b", html) and "fetch_worldclim" in html and "measure" in html


@pytest.mark.slow
def test_figures_from_another_copy(study: Path, moved_copy: Path) -> None:
    before = _mtimes(study)
    proc, jobs = _make(study, "figures", moved_copy)
    _assert_redraw_only(proc, jobs, before, _mtimes(study))
    assert "figure" in jobs
    # the redraw workflow without make too: the same rules only (nothing is outdated, so nothing runs)
    proc, jobs = _snakemake(study, [*REDRAW, "figures", *CI.split()], moved_copy)
    _assert_redraw_only(proc, jobs, before, _mtimes(study))


@pytest.mark.slow
def test_full_run_after_a_change_of_source_runs_nothing(study: Path, moved_copy: Path, wc_zip: Path,
                                                        worldclim_dir: Path, tmp_path: Path) -> None:
    """The whole study (default target) with the same data reached another way: nothing to do."""
    symlinked = tmp_path / "link"
    symlinked.symlink_to(worldclim_dir, target_is_directory=True)
    before = _mtimes(study, exclude=())
    for source in (moved_copy, symlinked, wc_zip, None):
        proc, jobs = _snakemake(study, CI.split(), source)
        text = proc.stdout[-3000:] + proc.stderr[-4000:]
        assert proc.returncode == 0 and jobs == [], f"source {source}: jobs {jobs}\n{text}"
        assert "Nothing to be done" in text, text
    assert _mtimes(study, exclude=()) == before


@pytest.mark.slow
def test_plotting_code_change_redraws_only(study: Path) -> None:
    style = study / "src/spectral_collapse/plotting/style.py"
    style.write_text(style.read_text() + "\n# a comment: plotting code changed\n")
    before = _mtimes(study)
    proc, jobs = _make(study, "figures", None)
    _assert_redraw_only(proc, jobs, before, _mtimes(study))
    assert jobs.count("figure") == len(CI_MODELS)
    assert "older than the code" not in proc.stdout + proc.stderr  # plotting code never makes cached tables stale


@pytest.mark.slow
def test_training_code_change_warns_and_recomputes_nothing(study: Path) -> None:
    vae = study / "src/spectral_collapse/vae.py"
    text, stat = vae.read_text(), vae.stat()
    vae.write_text(text + "\n# a comment: training code changed\n")
    try:
        before = _mtimes(study)
        proc, jobs = _snakemake(study, [*REDRAW, "figures", *CI.split()], None)
        _assert_redraw_only(proc, jobs, before, _mtimes(study))
        assert "older than the code of the path that produced them" in proc.stderr
        assert "src/spectral_collapse/vae.py" in proc.stderr and "scan_latents.parquet" in proc.stderr
    finally:
        vae.write_text(text)
        os.utime(vae, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.slow
def test_config_change_warns_and_recomputes_nothing(study: Path) -> None:
    (study / "more_updates.yaml").write_text(yaml.safe_dump({"models": {"linear": {"training": {"max_updates": 100}}}}))
    # results/summary.json records the config, so its redraw rule may rerun; nothing upstream may.
    exclude = (*FIGURE_OUTPUTS, "results/summary.json", "results/logs/analysis/summary.log")
    before = _mtimes(study, exclude)
    proc, jobs = _snakemake(study, [*REDRAW, "figures", "--configfile", "presets/ci.yaml", "more_updates.yaml"], None)
    _assert_redraw_only(proc, jobs, before, _mtimes(study, exclude))
    assert "linear: job.training.max_updates: cached 20000, config 100" in proc.stderr


@pytest.mark.slow
def test_missing_cached_table_stops_the_redraw(study: Path) -> None:
    table = study / "results/analysis/linear/scan_runs.parquet"
    aside = table.with_name("scan_runs.parquet.aside")
    before = _mtimes(study, exclude=())
    os.rename(table, aside)  # a rename keeps the mtime
    try:
        proc, jobs = _snakemake(study, [*REDRAW, "figures", *CI.split()], None)
        assert proc.returncode != 0 and jobs == []
        assert "Cannot redraw" in proc.stderr and "results/analysis/linear/scan_runs.parquet" in proc.stderr
        assert "snakemake analysis --configfile presets/ci.yaml" in proc.stderr  # a command that works
        proc, jobs = _make(study, "figures", None, args="")  # the laptop config: other models
        assert proc.returncode != 0 and jobs == [] and "another --configfile" in proc.stderr
    finally:
        os.rename(aside, table)
    assert _mtimes(study, exclude=()) == before


@pytest.mark.slow
def test_corrupt_copy_stops_the_job_that_reads_it(study: Path, worldclim_dir: Path, tmp_path: Path) -> None:
    """A corrupt copy is found by the job that reads the rasters, before it writes anything (nothing is checked
    when the workflow is parsed, issue 21 item 2); the verified record is an update() output, put back as it was."""
    corrupt = _linked_copy(worldclim_dir, tmp_path / "corrupt", corrupt="wc2.1_10m_bio_5.tif")
    record = "results/data/worldclim_verified.json"
    exclude = ("results/logs/data/", "results/benchmarks/data/", record)
    before, verified = _mtimes(study, exclude), (study / record).read_bytes()
    proc, jobs = _snakemake(study, [*CI.split(), "--forcerun", "fetch_worldclim", "--until", "fetch_worldclim"], corrupt)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and jobs == ["fetch_worldclim"], text[-4000:]
    assert "wc2.1_10m_bio_5.tif: SHA-256 mismatch" in text and "WORLDCLIM_DIR" in text, text[-4000:]
    assert _mtimes(study, exclude) == before and (study / record).read_bytes() == verified
    # a redraw never reads the rasters, so neither a corrupt nor a moved-away copy blocks it (issue 23)
    # (results/summary.json records the config: an earlier test's other config may rerun its redraw rule)
    exclude = (*FIGURE_OUTPUTS, "results/summary.json", "results/logs/analysis/summary.log")
    for source in (corrupt, tmp_path / "moved-away"):
        before = _mtimes(study, exclude)
        proc, jobs = _make(study, "figures", source)
        _assert_redraw_only(proc, jobs, before, _mtimes(study, exclude))
    assert wc.record_is_current(study / "results/data/worldclim_verified.json")


# --------------------------------------------------------------------------- no mistake costs finished work (issue 23)


def _truncate(path: Path, size: int = 2000) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(min(size, path.stat().st_size // 2))


@pytest.mark.slow
def test_store_and_finished_jobs_survive_without_worldclim(study: Path) -> None:
    """Repros A and B: in a shell without WORLDCLIM_DIR, another preset's `snakemake data` and a CI run after a
    touched build script delete nothing; the failure names WORLDCLIM_DIR."""
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_error(404)

    logs = ("results/logs/data/", "results/benchmarks/data/")
    before = _mtimes(study, exclude=logs)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:  # A: the laptop preset forgotten (its own store, which cannot be built here)
        url = f"http://127.0.0.1:{server.server_address[1]}/{wc.ARCHIVE_NAME}"
        proc, jobs = _snakemake(study, ["data", "--config", f'data={{"url": "{url}"}}'], None)
    finally:
        server.shutdown()
        server.server_close()
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and jobs == ["build_store"] and "WORLDCLIM_DIR" in text, text[-4000:]
    assert _mtimes(study, exclude=logs) == before
    # B: as after a `git pull` that touched the build script: the rebuild runs and fails naming WORLDCLIM_DIR;
    # the store and its description are update() outputs, never deleted first and restored as they were
    script = study / "scripts/build_store.py"
    stat = script.stat()
    report = next(study.glob("results/data/store-*/worldclim_store.json")).relative_to(study).as_posix()
    described = (study / report).read_bytes()
    os.utime(script)
    try:
        proc, jobs = _make(study, "run-ci", None, args="")
    finally:
        os.utime(script, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and jobs == ["build_store"], text[-4000:]
    assert "WORLDCLIM_DIR" in text
    after = _mtimes(study, exclude=logs)
    assert (study / report).read_bytes() == described  # restored by copy: same content, a new mtime
    assert {p: m for p, m in after.items() if p != report} == {p: m for p, m in before.items() if p != report}
    # with the script as it was, the run has nothing to do: no job left incomplete (summary records the report)
    proc, jobs = _make(study, "run-ci", None, args="")
    assert proc.returncode == 0 and set(jobs) <= {"summary", "all"}, (proc.stdout + proc.stderr)[-4000:]


@pytest.mark.slow
def test_forced_train_rerun_trains_afresh(study: Path) -> None:
    """--forcerun of a finished training job retrains from update 0 (it used to resume from its last.ckpt and
    relabel the old weights); same code and settings give the same weights, bit for bit."""
    import hashlib

    model = next((study / "results/runs/linear").glob("*/seed0/model.pt"))
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    target = model.relative_to(study).as_posix()  # the job alone: downstream reruns are not the point here
    proc, jobs = _snakemake(study, [target, *CI.split(), "--forcerun", target], None)
    assert proc.returncode == 0 and jobs == ["train"], (proc.stdout + proc.stderr)[-4000:]
    assert "a rerun trains afresh" in (study / "results/logs/train/linear" / model.parent.parent.name / "seed0.log").read_text()
    record = json.loads((model.parent / "train.json").read_text())
    assert record["resumed_from_step"] == 0 and record["updates"] > 0
    assert hashlib.sha256(model.read_bytes()).hexdigest() == digest


@pytest.mark.slow
def test_corrupt_tables_stop_a_redraw_and_are_rebuilt_by_the_run(study: Path) -> None:
    scan = study / "results/analysis/linear/scan_latents.parquet"
    latents = next((study / "results/runs/linear").glob("*/seed0/latents.parquet"))
    _truncate(scan)
    before = _mtimes(study, exclude=())
    proc, jobs = _make(study, "figures", None)  # a redraw that cannot succeed: stops first, removes nothing
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and jobs == [], text[-4000:]
    assert "results/analysis/linear/scan_latents.parquet: not a complete Parquet file" in text
    assert _mtimes(study, exclude=()) == before
    _truncate(latents)
    proc, jobs = _make(study, "run-ci", None, args="")  # the normal run sets both aside and remakes them
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and {"measure", "collect_scan"} <= set(jobs) and "train" not in jobs, text[-4000:]
    assert scan.with_name(scan.name + ".corrupt").is_file() and latents.with_name(latents.name + ".corrupt").is_file()
    assert table_problem(scan) is None and table_problem(latents) is None
    assert len(pd.read_parquet(scan)) > 0


# --------------------------------------------------------------------------- the boundary, without a run


def test_redraw_dag_needs_only_the_cached_inputs(tmp_path: Path) -> None:
    """The redraw workflow's dry run (`-n figures`) with only the cached inputs present (empty placeholders): the DAG holds the
    redraw rules only, so the list in spectral_collapse.redraw covers every input they read."""
    for name in ["Snakefile", "config.yaml", "workflow", "scripts", "presets", "profiles", "envs"]:
        (tmp_path / name).symlink_to(REPO / name)
    from spectral_collapse.config import load_config
    from spectral_collapse.storepath import store_paths

    report = store_paths(load_config(REPO / "presets/ci.yaml")["store"], tmp_path).description
    for path in redraw.cached_inputs(CI_MODELS, report):
        _placeholder(tmp_path / path)
    # a stale WORLDCLIM_DIR (moved away) does not block a redraw: it never resolves the data source (issue 23)
    env = {**os.environ, "WORLDCLIM_DIR": str(tmp_path / "moved-away")}
    proc = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-n", *REDRAW, "figures", *CI.split()],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    rules = set(re.findall(r"^(?:local)?rule (\w+):$", text, flags=re.MULTILINE))
    assert {"analyse_model", "figure", "figures"} <= rules <= set(redraw.REDRAW_RULES), text[-3000:]


def _placeholder(path: Path) -> None:
    """An empty table that passes integrity.table_problem's format check (its signature bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {".parquet": b"PAR1" + b"\0" * 8 + b"PAR1", ".json": b"{}", ".nc": b"\x89HDF\r\n\x1a\n"}
    path.write_bytes(content[path.suffix])
