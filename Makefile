# Two commands set everything up: `make run` (the study) and `make test` (the test suite).
# Both create .venv with the pinned dependencies of requirements.txt first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SNAKEMAKE_ARGS ?=

.PHONY: example-table-data venv run run-ci run-slurm run-paper test bench bench-dag bench-optimizer gpu-check depth-cost figures report reference-figures reference-tables reference-validation reference-two-sided lint clean-venv

venv: $(STAMP)

# torch first and alone, pinned: pip then takes the local CPU wheel and never resolves a CUDA build.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake $(SNAKEMAKE_ARGS)

# The other two presets and the cluster (docs/running.md): the CI preset locally, the laptop preset
# on SLURM, and the paper's protocol on SLURM (STUDY_SLURM_* variables: see profiles/slurm).
run-ci: $(STAMP)
	$(BIN)/snakemake --configfile presets/ci.yaml $(SNAKEMAKE_ARGS)

run-slurm: $(STAMP)
	$(BIN)/snakemake --workflow-profile profiles/slurm $(SNAKEMAKE_ARGS)

run-paper: $(STAMP)
	$(BIN)/snakemake --workflow-profile profiles/slurm --configfile presets/paper.yaml $(SNAKEMAKE_ARGS)

# Latent spectroscopy of other data (issue 20, docs/own-data.md): one preset per example under presets/examples/,
# merged over config.yaml, each run in its own folder results/examples/<name>/ (-d) so that it never touches the
# WorldClim 2.1 study's results. `make example-table` first generates its point table from the local WorldClim copy.
# EXAMPLE_ARGS: more presets, e.g. EXAMPLE_ARGS="$(CURDIR)/presets/examples/linear-only.yaml".
EXAMPLES := wc14-bioclim wc14-tmax table
EXAMPLE_ARGS ?=

example-table-data: $(STAMP)
	$(BIN)/python -m spectral_collapse.examples resources/examples/worldclim_points.csv

example-table: example-table-data
example-%: $(STAMP)
	@test -f presets/examples/$*.yaml || { echo "no example '$*' (presets/examples/$*.yaml); examples: $(EXAMPLES)"; exit 2; }
	$(BIN)/snakemake -d results/examples/$* --configfile $(CURDIR)/config.yaml $(CURDIR)/presets/examples/$*.yaml $(EXAMPLE_ARGS) $(SNAKEMAKE_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks (benchmarks/, docs/performance.md): single jobs on this machine's device (BENCH_DEVICE=auto).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_step.py

# The training stage of a sweep through Snakemake: one point per job against groups of points (minutes).
bench-dag: $(STAMP)
	$(BIN)/python benchmarks/bench_dag.py

# Cost per update of a reference-preset group job at MLP depth 2, 4, 8, 16 (the depths the reference run leaves out).
depth-cost: $(STAMP)
	$(BIN)/python benchmarks/depth_cost.py

# The optimizer step alone: the project's flat Adam against torch.optim.Adam (foreach, fused) with one group per
# member, its share of a whole update, and whether the trained numbers stay bit for bit (docs/performance.md).
bench-optimizer: $(STAMP)
	$(BIN)/python benchmarks/optimizer_step.py

# The GPU check (docs/gpu.md): CUDA tests, step timings at E = 1, 16, 121, the paper preset's GPU-hours; under
# 5 minutes on one GPU, a dry run on the CPU without one. GPU_PYTHON: an interpreter with a CUDA build of torch
# (and Lightning, pandas, pytest) to use instead of the venv's CPU torch; the venv is then not needed.
# On a GPU it writes results/benchmarks/gpu_cost.json, the cost model the workflow then books training jobs with.
gpu-check: $(if $(GPU_PYTHON),,$(STAMP))
	PYTHONPATH=src $(or $(GPU_PYTHON),$(BIN)/python) benchmarks/gpu_check.py

# Redraw only (issues 11 and 21): the redraw workflow, workflow/Redraw.smk, includes only the rules that draw from
# the cached tables (analysis, summary, figures): nothing is fetched, trained, measured or collected, whatever
# changed, and WORLDCLIM_DIR is never looked at (`make report`'s second step parses the main Snakefile, so it runs
# without WORLDCLIM_DIR: the report reads no data). A missing cached table stops it with Snakemake's missing-input
# error and a hint naming the command that makes it; stale ones are reported, never recomputed. --forcerun figure
# redraws every figure, so an edit of the plotting code shows. Pass the run's preset:
# make figures SNAKEMAKE_ARGS="--configfile ...". Expensive jobs: docs/running.md "What reruns, what never does".
REDRAW := $(BIN)/snakemake -s workflow/Redraw.smk --workflow-profile profiles/default

figures: $(STAMP)
	$(REDRAW) figures --forcerun figure $(SNAKEMAKE_ARGS)

# The HTML report of the whole study (fetch -> store -> train -> measure -> tables -> figures, with each job's
# runtime) against the main Snakefile: `snakemake --report` reads the metadata of outputs that exist and runs
# nothing. The figures are redrawn first (redraw workflow).
report: figures
	env -u WORLDCLIM_DIR $(BIN)/snakemake --report results/report.html $(SNAKEMAKE_ARGS)

# The reference bundle (reference/, docs/results.md): its figures and summary redrawn in results/reference/
# from the shipped tables, without the rasters and without training (the redraw workflow, as `make figures`).
reference-figures: $(STAMP)
	$(BIN)/python -m spectral_collapse.bundle prepare results/reference
	$(REDRAW) -d results/reference figures $(SNAKEMAKE_ARGS)

# The tables of README.md and docs/results.md, printed from the bundle (docs/tables.py, a docs generator).
reference-tables: $(STAMP)
	$(BIN)/python docs/tables.py

# Issue 19's validation of the bundle's start method (reference/validation/): the exact linear oracle, and agreement
# with the independent random-start tables in reference/random_start/ (analysis.start_check).
reference-validation: $(STAMP)
	$(BIN)/python -m spectral_collapse.analysis.start_check reference

# Issue 19's reference run from both sides (hours on 2 cores: start it first). Every side of every pair runs in its
# own working directory under TWO_SIDED_ROOT, outside the repository; run it again to resume. Longest pairs first,
# so that the two streams finish together. Needs WORLDCLIM_DIR (a local WorldClim copy: otherwise every side would
# download its own). Then: python -m spectral_collapse.two_sided_run assemble OUT --pair ...
TWO_SIDED_ROOT ?= ../two_sided_run
TWO_SIDED_PAIRS ?= mlp-d8:0 mlp-d4:0 mlp-d4:1 mlp-d2:0 mlp-d2:1 linear
reference-two-sided: $(STAMP)
	$(BIN)/python -m spectral_collapse.two_sided_run run $(TWO_SIDED_ROOT) --pairs $(TWO_SIDED_PAIRS) --streams 2

lint: $(STAMP)
	$(BIN)/snakemake --lint

clean-venv:
	rm -rf $(VENV)
