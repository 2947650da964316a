"""What the benchmarks share (`make bench`, `make bench-dag`, `make gpu-check`): the config, the model
settings, the device, the data, scratch folders, a timing callback and the `name: value` output lines.

- Config: ``spectral_collapse.config.load_config`` (config.yaml plus presets, validated, the schema's
  defaults filled in, as a workflow run sees it). Where snakemake, which does the validation, is not installed
  (a GPU image with torch and Lightning only) the files are merged without validation, and the header line says so.
- Model settings: ``spectral_collapse.scan.model_settings``, what the train rule gives a job.
- Device: ``BENCH_DEVICE`` = auto (default: cuda when there is one, else cpu), cpu or cuda.
- Data: the real WorldClim store built from ``WORLDCLIM_DIR`` (default ../shared/worldclim/wc2.1_10m_bio) in
  a scratch folder, or synthetic data of the study's shape (``synthetic_data``: 19 Gaussian features with
  WorldClim-like covariance eigenvalues, cell-area-like weights on the held-out splits, the 10' grid's
  held-out sizes).
- Scratch: a temporary folder under ``BENCH_SCRATCH`` (default: the system's temporary folder), removed at the
  end; nothing is written into the repository. Cached analysis tables are read from ``BENCH_RESULTS_DIR``
  (default: the workflow's results/ folder) where a benchmark times the figures.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
try:  # the package from the repository when it is not installed (e.g. a GPU image without the project's venv)
    import spectral_collapse  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "src"))

DEFAULT_WORLDCLIM = REPO.parent / "shared" / "worldclim" / "wc2.1_10m_bio"
MODEL_ID = "mlp-d4"  # the paper's default model: 4 x 64 MLP VAE, 32 latents
# Held-out cells of the WorldClim 10' grid with the config's split (store_description of the real store): the
# validation and test splits are every land cell of their blocks, whatever store.n_train is.
HELDOUT_ROWS = {"validation": 71_377, "test": 73_231}
# Eigenvalues of the 19 standardised bioclimatic variables' covariance (sum ~19), rounded: the synthetic data's
# spectrum, so that a synthetic run has the study's shape and conditioning.
SPECTRUM = (9.8, 4.2, 1.9, 1.2, 0.65, 0.53, 0.31, 0.17, 0.11, 0.067, 0.018, 0.015, 0.0053, 0.003, 0.0029,
            0.0021, 0.0012, 0.0006, 0.0001)


def quiet() -> None:
    """Silence Lightning's info banners and warnings (pytorch_lightning sets its logger to INFO on import)."""
    import pytorch_lightning  # noqa: F401

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def out(name: str, value: Any, note: str = "") -> None:
    """One output line: ``name: value`` (a note in parentheses after two spaces)."""
    print(f"{name}: {value}" + (f"  ({note})" if note else ""), flush=True)


def load_config(*presets: str | Path) -> tuple[dict, str]:
    """config.yaml with ``presets`` merged over it: (config, how it was loaded)."""
    from spectral_collapse import config as cfg

    names = " + ".join(["config.yaml", *(str(Path(p).resolve().relative_to(REPO)) for p in presets)])
    try:
        return cfg.load_config(*presets), f"{names}, validated against the schema"
    except ModuleNotFoundError as exc:
        if exc.name != "snakemake":
            raise
    import yaml

    config = yaml.safe_load(cfg.CONFIG.read_text())
    for preset in presets:
        config = cfg.merge(config, yaml.safe_load(Path(preset).read_text()) or {})
    return config, f"{names}, merged WITHOUT schema validation (snakemake, which validates, is not installed)"


def model_settings(config: dict, model_id: str = MODEL_ID) -> dict:
    """What the train rule gives a job of this model (family, depth, model block, decoder, training)."""
    from spectral_collapse.scan import model_settings as settings

    return settings(config, model_id)


def device():
    """The benchmark's device: ``BENCH_DEVICE`` (auto | cpu | cuda; auto: cuda when there is one)."""
    import torch

    name = os.environ.get("BENCH_DEVICE", "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("BENCH_DEVICE=cuda, but torch sees no CUDA GPU (a CPU-only torch, or no driver)")
    return torch.device(name)


def accelerator(dev) -> str:
    """Lightning's accelerator name for a torch device."""
    return "gpu" if dev.type == "cuda" else "cpu"


def synchronize(dev) -> None:
    """Wait for the device's queued work (timings of asynchronous CUDA work); nothing on the CPU."""
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def describe_device(dev) -> str:
    import torch

    if dev.type != "cuda":
        return f"cpu ({os.cpu_count()} cores)"
    props = torch.cuda.get_device_properties(dev)
    return f"{props.name}, {props.total_memory / 2**30:.1f} GiB, {props.multi_processor_count} SMs"


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder under ``BENCH_SCRATCH`` (default: the system's), removed afterwards."""
    base = os.environ.get("BENCH_SCRATCH") or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=base) as name:
        yield Path(name)


def results_dir() -> Path:
    """The workflow's results folder whose cached tables a benchmark may read (``BENCH_RESULTS_DIR``)."""
    return Path(os.environ.get("BENCH_RESULTS_DIR") or REPO / "results").expanduser().resolve()


def worldclim_folder(prog: str) -> Path:
    """$WORLDCLIM_DIR, else the shared copy next to the repository; exits naming the variable if it holds no rasters."""
    folder = Path(os.environ.get("WORLDCLIM_DIR") or DEFAULT_WORLDCLIM).expanduser().resolve()
    if not (folder / "wc2.1_10m_bio_1.tif").is_file():
        sys.exit(f"{prog}: WorldClim rasters not found in {folder}; set WORLDCLIM_DIR to the folder holding "
                 "wc2.1_10m_bio_1.tif ... wc2.1_10m_bio_19.tif (or BENCH_DATA=synthetic)")
    return folder


def synthetic_arrays(n_train: int, n_validation: int = HELDOUT_ROWS["validation"],
                     n_test: int = HELDOUT_ROWS["test"], seed: int = 0) -> dict[str, Any]:
    """Data of the study's shape: 19 Gaussian features whose covariance has ``SPECTRUM`` as eigenvalues (total
    variance ~19, as for the 19 standardised variables; a fixed random rotation), the three splits, and positive
    weights on the held-out splits (cell areas ~ cos(latitude))."""
    import numpy as np

    rng = np.random.default_rng(seed)
    d = len(SPECTRUM)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scale = np.sqrt(np.asarray(SPECTRUM))

    def sample(n: int) -> np.ndarray:
        return ((rng.standard_normal((n, d)) * scale) @ rotation.T).astype(np.float32)

    splits = {"train": sample(n_train), "validation": sample(n_validation), "test": sample(n_test)}
    weights = {s: np.cos(rng.uniform(-1.3, 1.3, len(splits[s]))) for s in ("validation", "test")}
    return {"splits": splits, "weights": weights}


def synthetic_data(n_train: int, n_validation: int = HELDOUT_ROWS["validation"],
                   n_test: int = HELDOUT_ROWS["test"], seed: int = 0):
    """``synthetic_arrays`` as the training job's ArrayDataModule (source kind 'synthetic')."""
    from spectral_collapse.datamodule import ArrayDataModule

    arrays = synthetic_arrays(n_train, n_validation, n_test, seed)
    s = arrays["splits"]
    dm = ArrayDataModule(s["train"], s["validation"], s["test"], weights=arrays["weights"])
    dm.source = {"kind": "synthetic", "n_train": n_train, "features": len(SPECTRUM), "seed": seed}
    return dm


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM of /proc/self/status). Unlike the child's ru_maxrss seen
    by the parent, it does not inherit the parent's resident size at fork time (Linux keeps the larger)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_timer(dev):
    """A Lightning callback timing a training job from outside, with the device synchronised at every mark
    (CUDA work is asynchronous): the training loop, each epoch's update part (data gathering + its
    ``eval_every`` updates), and the evaluations (validation pass and the checkpoint written after it: the
    callback is the last one called)."""
    import pytorch_lightning as pl

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.val_s, self.n_val, self.train_s, self.val_cpu, self.train_cpu = 0.0, 0, 0.0, 0.0, 0.0
            self.epochs: list[tuple[float, int]] = []  # (seconds, updates) of each epoch's update part
            self.evals: list[float] = []  # seconds of each evaluation

        def _now(self) -> tuple[float, float]:
            synchronize(dev)
            return time.perf_counter(), time.process_time()

        def on_train_start(self, trainer, module) -> None:
            self.t_train, self.c_train = self._now()

        def on_train_end(self, trainer, module) -> None:
            t, c = self._now()
            self.train_s, self.train_cpu = t - self.t_train, c - self.c_train

        def on_train_epoch_start(self, trainer, module) -> None:
            self.t_epoch, _ = self._now()
            self.step_epoch = trainer.global_step

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            t, _ = self._now()
            self.epochs.append((t - self.t_epoch, trainer.global_step - self.step_epoch))

        def on_validation_start(self, trainer, module) -> None:
            self.t_val, self.c_val = self._now()

        def on_validation_end(self, trainer, module) -> None:
            t, c = self._now()
            self.val_s += t - self.t_val
            self.val_cpu += c - self.c_val
            self.n_val += 1
            self.evals.append(t - self.t_val)

    return Timer()


def timing_settings(settings: dict, updates: int, eval_every: int | None = None) -> dict:
    """The model's training settings with a fixed budget: ``updates`` updates, no member ever converging
    (the patience window is the whole budget), evaluations every ``eval_every`` updates (default: the model's)."""
    st = {**settings["training"], "max_updates": int(updates), "tolerance": 0.0, "patience_fraction": 1.0}
    if eval_every:
        st["eval_every"] = int(eval_every)
    return st


def lightning_job(data, settings: dict, T: float | Sequence[float], updates: int, *, dev, threads: int = 1,
                  eval_every: int | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """One training job of the project (``training.train``, the code path of the train rule) on ``dev`` with a
    fixed budget, timed from outside. ``ms_per_step``: the update loop without the evaluations;
    ``steady_ms_per_update``: the epochs after the first (warm: allocator, kernels, Adam state), data
    gathering included; ``eval_s``: per evaluation (validation pass + checkpoint), the first one left out when
    there are more (it also draws the fixed validation noise, once per job: counted in ``fixed_s``)."""
    import torch

    from spectral_collapse.training import train
    from spectral_collapse.vae import VAEConfig

    st = timing_settings(settings, updates, eval_every)
    Ts = [float(t) for t in (T if isinstance(T, (list, tuple)) else [T])]
    cfg = VAEConfig.from_settings(settings, n_features=data.n_features, ensemble=len(Ts))
    timer = make_timer(dev)
    if dev.type == "cuda":  # the peak of this job alone: earlier jobs' optimizers and Trainers collected first
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        result = train(data, cfg, Ts, settings=st, seed=0, threads=threads, progress=False,
                       accelerator=accelerator(dev), extra_callbacks=[timer, *callbacks])
        wall = time.perf_counter() - t0
    steps = int(result.record["updates"])
    warm = timer.epochs[1:] or timer.epochs
    warm_s, warm_updates = sum(s for s, _ in warm), sum(n for _, n in warm)
    later = timer.evals[1:] or timer.evals or [0.0]
    eval_s = sum(later) / len(later)
    return {
        "E": len(Ts),
        "updates": steps,
        "device": result.record["device"],
        "ms_per_step": 1e3 * (timer.train_s - timer.val_s) / steps,
        "cpu_ms_per_step": 1e3 * (timer.train_cpu - timer.val_cpu) / steps,
        "steady_ms_per_update": 1e3 * warm_s / max(warm_updates, 1),
        "fit_ms_per_update": float(result.record.get("ms_per_step", float("nan"))),
        "job_ms_per_update": 1e3 * wall / steps,
        "job_s": wall,
        "val_s": timer.val_s,
        "n_val": timer.n_val,
        "eval_s": eval_s,
        # Trainer setup and teardown outside the training loop, and the first evaluation's extra cost
        "fixed_s": wall - timer.train_s + (timer.evals[0] - eval_s if timer.evals else 0.0),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan"),
    }


def point_arguments(parser) -> None:
    """The positional arguments of a diagnostic on one saved chain point of a finished two-sided run side:
    RUN_DIR MODEL SEED T (benchmarks/reopen_trace.py, benchmarks/hold_point.py)."""
    parser.add_argument("run_dir", help="a finished side of the two-sided run (config.yaml, presets/, results/)")
    parser.add_argument("model")
    parser.add_argument("seed", type=int)
    parser.add_argument("T", type=float)


def finished_side(run_dir: str | Path, model_id: str):
    """(config, model settings, data, single-member VAEConfig) of a finished two-sided run side, as its jobs saw
    them: its own config.yaml and presets, its own store."""
    from spectral_collapse.config import load_config as load_run_config
    from spectral_collapse.datamodule import ArrayDataModule
    from spectral_collapse.two_sided_run import side_presets
    from spectral_collapse.vae import VAEConfig

    run = Path(run_dir).resolve()
    config = load_run_config(*(run / p for p in side_presets()))
    settings = model_settings(config, model_id)
    store = next((run / "results/data").glob("store-*/worldclim.zarr"), None)
    if store is None:
        raise SystemExit(f"{run}: no results/data/store-*/worldclim.zarr: give a finished side of the two-sided run")
    data = ArrayDataModule.from_store(store)
    return config, settings, data, VAEConfig.from_settings(settings, n_features=data.n_features, ensemble=1)
