"""A small group whose first member converges (and freezes) long before the others, and a callback that kills a
job right after a checkpoint: shared by the freezing tests on the CPU (test_group) and on CUDA (test_cuda)."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl

from spectral_collapse.datamodule import ArrayDataModule

FREEZE = {"lr": 1e-2, "batch_size": 256, "max_updates": 3000, "tolerance": 1e-3, "patience_fraction": 0.05,
          "eval_every": 50, "lr_drops": 1}
FREEZE_T = [2.0, 0.02, 0.005]  # everything collapsed (converges first), then two colder points


def freeze_data() -> ArrayDataModule:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6000, 5)) * np.sqrt([4.0, 2.0, 1.0, 0.5, 0.25])).astype(np.float32)
    return ArrayDataModule(x, x[:1500])


class Killed(Exception):
    pass


class CrashAt(pl.Callback):
    """A job killed right after the checkpoint of update `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed at {self.step}")
