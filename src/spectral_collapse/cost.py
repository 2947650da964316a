"""What a training job asks the scheduler for: runtime and memory from a cost model per device kind.

The model (``cost_model.yaml`` next to this file, its sources stated there) has a ``cpu`` entry from the
measured benchmarks of docs/performance.md and a ``gpu`` entry that is a stated default until ``make gpu-check``
writes a GPU measurement (``GPU_MEASUREMENT``), which then replaces it. Which entry a job uses follows the
profile: a training rule that asks for a GPU (``gpu``, ``gpus``, ``gpu_model`` or a ``gres`` naming a gpu in
its ``set-resources``) is costed as a GPU job. Imported by workflow/rules/common.smk: no torch here, so
parsing the workflow stays fast.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from .paths import BENCHMARKS_ROOT
from .scan import ModelSpec, training_settings

MODEL_FILE = Path(__file__).with_name("cost_model.yaml")
GPU_MEASUREMENT = Path(BENCHMARKS_ROOT, "gpu_cost.json")  # relative to the workflow's working directory
DEVICES = ("cpu", "gpu")
GPU_RESOURCES = ("gpu", "gpus", "gpu_model")


class CostModelError(ValueError):
    """A cost model or GPU measurement file that cannot be used; the message names the file and the fix."""


def requested_device(rule_resources: Mapping[str, Any] | None) -> str:
    """``gpu`` when a rule's overriding resources (the profile's ``set-resources``) ask for a GPU, else ``cpu``."""
    res = dict(rule_resources or {})
    for key in GPU_RESOURCES:
        value = res.get(key)
        if value not in (None, 0, "0", "", False):
            return "gpu"
    return "gpu" if "gpu" in str(res.get("gres", "")).lower() else "cpu"


def _check_entry(entry: Any, where: str) -> dict:
    need = {"safety", "fixed_s", "update_ms", "eval_s", "factors", "mem_mb"}
    if not isinstance(entry, Mapping) or not need <= set(entry):
        missing = sorted(need - set(entry)) if isinstance(entry, Mapping) else sorted(need)
        raise CostModelError(f"{where}: missing keys {missing}; every device entry needs {sorted(need)} "
                             f"(see {MODEL_FILE})")
    for part in ("update_ms", "eval_s", "mem_mb"):
        if not {"base", "per_member"} <= set(entry[part]):
            raise CostModelError(f"{where}: {part} needs base and per_member (see {MODEL_FILE})")
    if not {"base", "member"} <= set(entry["factors"]):
        raise CostModelError(f"{where}: factors needs base and member tables (see {MODEL_FILE})")
    return dict(entry)


def load_model(workdir: str | os.PathLike = ".") -> dict[str, dict]:
    """The cost model: cost_model.yaml's entries, the gpu entry replaced by a GPU measurement when
    ``make gpu-check`` wrote one under ``workdir``. Each entry gets ``origin`` (where it came from)."""
    with open(MODEL_FILE) as f:
        model = yaml.safe_load(f)
    entries = {}
    for device in DEVICES:
        entries[device] = _check_entry(model.get(device), f"{MODEL_FILE}: {device}")
        entries[device]["origin"] = f"{MODEL_FILE.name} ({device}: {'measured benchmarks' if device == 'cpu' else 'stated default'})"
    measured = Path(workdir) / GPU_MEASUREMENT
    if measured.is_file():
        try:
            data = json.loads(measured.read_text())
        except json.JSONDecodeError as exc:
            raise CostModelError(f"{measured}: not valid JSON ({exc}); rerun `make gpu-check` on a GPU, or delete "
                                 "the file to use the stated GPU default") from exc
        entries["gpu"] = _check_entry(data.get("entry"), f"{measured}: entry")
        entries["gpu"]["origin"] = f"{measured} (measured on {data.get('gpu', 'a GPU')})"
    return entries


def model_factor(table: Mapping, model_id: str) -> float:
    """A model's cost factor (mlp-d4 = 1): the table's value, or linear in the depth between (and beyond) the
    tabulated depths."""
    spec = ModelSpec.from_id(model_id)
    if spec.family == "linear":
        return float(table["linear"])
    depths = sorted(int(k) for k in table if str(k) != "linear")
    values = {int(k): float(v) for k, v in table.items() if str(k) != "linear"}
    if spec.depth in values:
        return values[spec.depth]
    lo = max([d for d in depths if d < spec.depth], default=depths[0])
    hi = min([d for d in depths if d > spec.depth], default=depths[-1])
    if lo == hi:  # outside the table: the slope of its two nearest depths
        lo, hi = (depths[0], depths[1]) if spec.depth < depths[0] else (depths[-2], depths[-1])
    slope = (values[hi] - values[lo]) / (hi - lo)
    return max(values[lo] + slope * (spec.depth - lo), 1e-3)


def job_seconds(entry: Mapping, config: Mapping, model_id: str, members: int) -> float:
    """Booked seconds of one training job of ``members`` scan points (attempt 1): safety x (fixed + updates +
    evaluations), every member training to the budget: side by side as one ensemble of ``members``, or, with the
    warm-start chain (training.chain), one point after another, each a one-member job with its own budget."""
    st = training_settings(config, ModelSpec.from_id(model_id).family)
    updates, evals = int(st["max_updates"]), int(st["max_updates"]) // int(st["eval_every"])
    runs, width = (members, 1) if st["chain"] else (1, members)
    fb, fm = model_factor(entry["factors"]["base"], model_id), model_factor(entry["factors"]["member"], model_id)
    update_ms = entry["update_ms"]["base"] * fb + width * entry["update_ms"]["per_member"] * fm
    eval_s = entry["eval_s"]["base"] * fb + width * entry["eval_s"]["per_member"] * fm
    return float(entry["safety"]) * (float(entry["fixed_s"]) + runs * (updates * update_ms / 1e3 + evals * eval_s))


@functools.lru_cache(maxsize=None)
def runtime_floor_min() -> int:
    """cost_model.yaml's ``min_runtime_min``: no training job is booked for less at attempt 1 (why: stated there)."""
    with open(MODEL_FILE) as f:
        value = yaml.safe_load(f).get("min_runtime_min")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CostModelError(f"{MODEL_FILE}: min_runtime_min must be a whole number of minutes >= 1, got {value!r}; "
                             "set it to the shortest runtime a training job may be booked for (10 as shipped)")
    return value


def train_runtime_min(entry: Mapping, config: Mapping, model_id: str, members: int, attempt: int = 1) -> int:
    """sbatch -t in minutes: the booked seconds rounded up, at least cost_model.yaml's ``min_runtime_min``,
    times the attempt."""
    minutes = max(math.ceil(job_seconds(entry, config, model_id, members) / 60), runtime_floor_min())
    return minutes * int(attempt)


def train_mem_mb(entry: Mapping, members: int, attempt: int = 1) -> int:
    """Host memory in MB: the entry's base plus per member, times the attempt."""
    return int(entry["mem_mb"]["base"] + members * entry["mem_mb"]["per_member"]) * int(attempt)


def booking(jobs: list[dict], device: str) -> dict[str, Any]:
    """Totals of what a run books at attempt 1. ``jobs``: one dict per submitted job with ``rule``,
    ``runtime_min``, ``threads`` and ``gpus``. GPU-hours = runtime x GPUs; core-hours = runtime x threads."""
    out: dict[str, Any] = {"device": device, "rules": {}}
    for job in jobs:
        r = out["rules"].setdefault(job["rule"], {"jobs": 0, "gpu_hours": 0.0, "core_hours": 0.0, "max_min": 0})
        r["jobs"] += 1
        r["gpu_hours"] += job["runtime_min"] * job["gpus"] / 60
        r["core_hours"] += job["runtime_min"] * job["threads"] / 60
        r["max_min"] = max(r["max_min"], job["runtime_min"])
    out["gpu_hours"] = sum(r["gpu_hours"] for r in out["rules"].values())
    out["core_hours"] = sum(r["core_hours"] for r in out["rules"].values())
    return out


def booking_lines(book: Mapping[str, Any], origin: str) -> list[str]:
    """What the dry run prints: one line per rule and the totals."""
    lines = [f"Booking (attempt 1, the whole study: finished jobs are not submitted again; cost model: {origin}):"]
    for rule, r in book["rules"].items():
        lines.append(f"  {rule}: {r['jobs']} jobs, {r['gpu_hours']:.1f} GPU-hours, {r['core_hours']:.1f} core-hours, "
                     f"longest {r['max_min']} min")
    lines.append(f"  total: {book['gpu_hours']:.1f} GPU-hours, {book['core_hours']:.1f} core-hours "
                 f"(training on {book['device']})")
    return lines


def gpu_entry_from_timings(timings: Mapping[str, Mapping[str, float]], focus: str = "mlp-d4") -> dict:
    """A ``gpu`` cost-model entry from the GPU check's timings: ``timings[model][E]`` = {ms_per_update, eval_s},
    ``timings['fixed_s']`` the fixed cost of a job. ``focus`` needs two ensemble sizes (E = 1 and a larger one):
    its ms per update is split into a base (per update) and a per-member part by a straight line through them;
    the other models' factors are their ms per update at their measured E over the focus model's at that E."""
    sizes = sorted(int(e) for e in timings[focus])
    if len(sizes) < 2:
        raise CostModelError(f"GPU check: {focus} was timed at E = {sizes} only; two ensemble sizes are needed")
    e1, e2 = sizes[0], sizes[-1]
    t1, t2 = (float(timings[focus][e]["ms_per_update"]) for e in (e1, e2))
    per_member = max((t2 - t1) / (e2 - e1), 0.0)
    base = max(t1 - e1 * per_member, 0.0)
    v1, v2 = (float(timings[focus][e]["eval_s"]) for e in (e1, e2))
    eval_member = max((v2 - v1) / (e2 - e1), 0.0)
    eval_base = max(v1 - e1 * eval_member, 0.0)
    factors: dict[str, float] = {}
    for model, by_e in timings.items():
        if model in ("fixed_s", focus) or not isinstance(by_e, Mapping):
            continue
        E = max(int(e) for e in by_e)
        ref = base + E * per_member
        f = float(by_e[E]["ms_per_update"]) / ref
        spec = ModelSpec.from_id(model)
        factors["linear" if spec.family == "linear" else spec.depth] = round(f, 4)
    factors[4 if focus == "mlp-d4" else ModelSpec.from_id(focus).depth] = 1.0
    if "linear" not in factors:  # not timed (the check's time budget ran out): the stated default's ratio
        with open(MODEL_FILE) as f:
            factors["linear"] = float(yaml.safe_load(f)["gpu"]["factors"]["base"]["linear"])
    return {
        "safety": 1.0,
        "fixed_s": round(float(timings.get("fixed_s", 60.0)), 2),
        "update_ms": {"base": round(base, 5), "per_member": round(per_member, 6)},
        "eval_s": {"base": round(eval_base, 4), "per_member": round(eval_member, 6)},
        # one factor per model for both parts: measured at the model's E, where both parts are in the time
        "factors": {"base": dict(factors), "member": dict(factors)},
        "mem_mb": {"base": 4000, "per_member": 25},
    }


def write_gpu_measurement(path: str | os.PathLike, entry: Mapping, gpu: str) -> Path:
    """Write the GPU check's entry where the workflow reads it, under a temporary name renamed when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_entry(entry, f"{path}: entry")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"gpu": gpu, "entry": dict(entry)}, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path
