"""The settings of one training job as one frozen object, from the scan design (``scan.model_settings``) to the
convergence rule (``callbacks.Convergence``), with its defaults read from the config schema: the one place
defaults live (workflow/schemas/config.schema.yaml, ``training``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from .config import schema_defaults

REOPEN_ENCODER = "encoder"
REQUIRED = ("batch_size", "lr", "max_updates", "tolerance", "patience_fraction", "eval_every")


@dataclass(frozen=True)
class TrainingSettings:
    """A training job's schedule and convergence rule (the config's training block, a family's overrides
    applied). Build it with ``from_mapping``: the six required keys, the rest from the schema's defaults."""

    batch_size: int
    lr: float
    max_updates: int
    tolerance: float
    patience_fraction: float
    eval_every: int
    lr_drops: int
    lr_drop_factor: float
    freeze_converged: bool
    chain: bool
    chain_reopen: bool | str  # false, true (the collapsed latents' own weights) or "encoder" (the whole encoder too)
    chain_from: str

    @classmethod
    def from_mapping(cls, settings: "Mapping[str, Any] | TrainingSettings") -> "TrainingSettings":
        if isinstance(settings, cls):
            return settings
        missing = [key for key in REQUIRED if key not in settings]
        if missing:
            raise ValueError(f"training settings lack {missing}: set them in the config's training block")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise ValueError(f"unknown training settings {unknown} (expected some of {names})")
        merged = {**schema_defaults("training"), **settings}
        return cls(batch_size=int(merged["batch_size"]), lr=float(merged["lr"]),
                   max_updates=int(merged["max_updates"]), tolerance=float(merged["tolerance"]),
                   patience_fraction=float(merged["patience_fraction"]), eval_every=int(merged["eval_every"]),
                   lr_drops=int(merged["lr_drops"]), lr_drop_factor=float(merged["lr_drop_factor"]),
                   freeze_converged=bool(merged["freeze_converged"]), chain=bool(merged["chain"]),
                   chain_reopen=_reopen(merged["chain_reopen"]),
                   chain_from=str(merged["chain_from"]))

    @property
    def fresh_encoder(self) -> bool:
        """``chain_reopen: encoder``: each chain point after the first starts with the whole encoder from the
        initialisation (``chain.fresh_encoder``)."""
        return self.chain_reopen == REOPEN_ENCODER

    @property
    def patience_evals(self) -> int:
        """The patience window in evaluations."""
        return int(round(self.patience_fraction * self.max_updates / self.eval_every))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reopen(value: Any) -> bool | str:
    """``training.chain_reopen`` as given: a bool, or ``encoder``. Why not a second key: a key added with a
    default changes the config hash of every earlier run, and the two-sided evidence checks each run against the
    config it was made with (``bundle._check_run``)."""
    if isinstance(value, bool) or value == REOPEN_ENCODER:
        return value
    raise ValueError(f"training.chain_reopen is {value!r}: use false, true (reopen the collapsed latents' own "
                     f"weights) or {REOPEN_ENCODER!r} (the whole encoder from the initialisation as well)")
