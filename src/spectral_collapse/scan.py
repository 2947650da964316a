"""The scan design: the T grid, model identifiers and run labels, derived from the config.

Kept in the library (not in the Snakefile) so that the workflow, the scripts and the tests
agree on one naming scheme for every run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

FAMILIES = ("linear", "mlp")
MODEL_ID_PATTERN = r"linear|mlp-d[0-9]+"
T_LABEL_PATTERN = r"[0-9]\.[0-9]{4}e[+-][0-9]{2}"
VAE_KEYS = ("latents", "width", "logvar_bias_init", "mean_init_scale")  # keys of a family's model block that shape its VAE
GROUP_PATTERN = rf"T{T_LABEL_PATTERN}(_T{T_LABEL_PATTERN})?"


def t_grid(spec: Mapping[str, Any]) -> list[float]:
    """The scan temperatures of a T spec, descending. ``{max, min, per_decade}`` gives a log-spaced grid with
    both ends included (paper: 1 to 1e-6 at 20 per decade = 121 values); ``{values: [...]}`` is taken as is
    and wins when both forms are present (a preset's explicit list merged over config.yaml's grid)."""
    if spec.get("values") is not None:
        values = sorted({float(v) for v in spec["values"]}, reverse=True)
    else:
        hi, lo, per = float(spec["max"]), float(spec["min"]), int(spec["per_decade"])
        if lo > hi:
            raise ValueError(f"config key scan.T: min ({lo}) must not exceed max ({hi})")
        n = int(round(np.log10(hi / lo) * per)) + 1
        values = [float(v) for v in np.logspace(np.log10(hi), np.log10(lo), n)]
    labels = [t_label(v) for v in values]
    if len(set(labels)) != len(labels):
        raise ValueError("config key scan.T: two T values share a label at 5 significant digits")
    return values


def model_t_grid(config: Mapping[str, Any], family: str) -> list[float]:
    """The scan of one family: ``models.<family>.T`` when given (e.g. a denser grid for the cheap linear
    family), else ``scan.T``."""
    return t_grid(config["models"].get(family, {}).get("T") or config["scan"]["T"])


def model_points_per_job(config: Mapping[str, Any], family: str) -> int:
    """Scan points per training job of one family: ``models.<family>.points_per_job`` when given (the cheap
    linear family in one job, the MLP split over the cores), else ``scan.points_per_job``."""
    return int(config["models"].get(family, {}).get("points_per_job") or config["scan"]["points_per_job"])


def t_label(T: float) -> str:
    """The run-directory label of a temperature, e.g. 1.0000e-02 (5 significant digits)."""
    return f"{T:.4e}"


def t_from_label(label: str) -> float:
    if not re.fullmatch(T_LABEL_PATTERN, label):
        raise ValueError(f"not a T label: {label!r} (expected e.g. 1.0000e-02)")
    return float(label)


@dataclass(frozen=True)
class ModelSpec:
    """One model family at one depth: `linear`, or `mlp-d4` for a 4-hidden-layer MLP."""

    family: str
    depth: int  # hidden layers of the MLP encoder and decoder; 0 for the linear family

    @property
    def model_id(self) -> str:
        return "linear" if self.family == "linear" else f"mlp-d{self.depth}"

    @classmethod
    def from_id(cls, model_id: str) -> "ModelSpec":
        if model_id == "linear":
            return cls("linear", 0)
        m = re.fullmatch(r"mlp-d([0-9]+)", model_id)
        if not m:
            raise ValueError(f"unknown model id {model_id!r} (expected 'linear' or 'mlp-d<depth>')")
        return cls("mlp", int(m.group(1)))


def model_specs(config: Mapping[str, Any]) -> list[ModelSpec]:
    """Every (family, depth) the config asks for, in a stable order."""
    specs = []
    for family in config["scan"]["families"]:
        if family == "linear":
            specs.append(ModelSpec("linear", 0))
        else:
            specs.extend(ModelSpec("mlp", int(d)) for d in config["models"]["mlp"]["depths"])
    return specs


def model_seeds(config: Mapping[str, Any], model_id: str) -> list[int]:
    """The seeds of one model: ``scan.model_seeds[model_id]`` when given (e.g. one seed for the depth study),
    else ``scan.seeds``."""
    return [int(s) for s in config["scan"]["model_seeds"].get(model_id, config["scan"]["seeds"])]


def training_settings(config: Mapping[str, Any], family: str) -> dict[str, Any]:
    """The training block with the family's overrides (models.<family>.training) applied."""
    merged = dict(config["training"])
    merged.update(config["models"].get(family, {}).get("training", {}))
    return merged


def largest_batch_size(config: Mapping[str, Any]) -> int:
    """The largest training batch of the scanned families: a source needs at least this many training rows."""
    return max(int(training_settings(config, family)["batch_size"]) for family in config["scan"]["families"])


def model_settings(config: Mapping[str, Any], model_id: str) -> dict[str, Any]:
    """Everything a training job needs to know about its model: family, depth, the family's model block,
    the decoder and the training settings (the ``settings`` of ``group.train_group``); with
    ``training.chain_reopen``, ``reopen_threshold``: the analysis' active threshold, which decides the latents a
    chain reopens (one threshold for what is collapsed, in training and in the measurements)."""
    spec = ModelSpec.from_id(model_id)
    model = {k: v for k, v in config["models"].get(spec.family, {}).items() if k in VAE_KEYS}
    training = training_settings(config, spec.family)
    reopen = {"reopen_threshold": float(config["analysis"]["active_threshold"])} if training.get("chain_reopen") \
        else {}
    return {
        "family": spec.family,
        "depth": spec.depth,
        "model": model,
        "decoder": dict(config["decoder"]),
        "training": training,
        **reopen,
    }


def scan_groups(values: Sequence[float], points_per_job: int) -> list[list[float]]:
    """Scan points grouped into training jobs, in grid order (``scan.points_per_job`` points each)."""
    return [list(values[i : i + points_per_job]) for i in range(0, len(values), points_per_job)]


def group_label(Ts: Sequence[float]) -> str:
    """The folder name of a group: ``T<label>`` of its one point, or ``T<first>_T<last>``."""
    first = f"T{t_label(Ts[0])}"
    return first if len(Ts) == 1 else f"{first}_T{t_label(Ts[-1])}"
