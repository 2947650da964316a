"""A LightningDataModule serving whole batches drawn by tensor indexing from one on-device tensor.

No ``Dataset.__getitem__``, no per-sample collate: each split is one ``(n, d)`` float32 tensor, moved to
the training device once, with optional per-row weights (the held-out splits of the store: cell areas, so that
a validation mean is a cell-area-weighted mean, docs/science.md section 4); a training "epoch" is ``eval_every`` updates (validation, convergence check and
checkpoint follow each epoch); its batches come from a permutation drawn by a generator seeded with
``(seed, epoch)``, so a run resumed from an epoch-end checkpoint sees exactly the batches an
uninterrupted run would have seen.

Sources: the Zarr store (``ArrayDataModule.from_store``) or in-memory arrays (synthetic tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytorch_lightning as pl
import torch

EVAL_ROWS = 65536  # rows per validation batch (one fixed noise draw each)


class IndexedBatches:
    """The epoch's ``n_batches`` batches ``data[idx]`` (idx from per-epoch seeded permutations), served as
    stacks of ``per_item`` consecutive batches, each a ``(per_item, batch_size, d)`` tensor gathered by one
    indexing op; the LightningModule takes one optimizer step per batch of a stack (the per-batch cost of
    Lightning's loop is paid once per stack; docs/performance.md). Default: the whole epoch (= eval_every
    updates) in one stack. The batches and their order are those of one batch per item."""

    def __init__(self, owner: "ArrayDataModule", n_batches: int, per_item: int | None = None) -> None:
        self.owner = owner
        self.n_batches = int(n_batches)
        self.per_item = max(1, int(per_item or n_batches))

    def __len__(self) -> int:
        return -(-self.n_batches // self.per_item)

    def __iter__(self) -> Iterator[torch.Tensor]:
        owner = self.owner
        data = owner.train_tensor
        idx = owner.epoch_indices(owner.current_epoch(), self.n_batches).to(data.device)
        for i in range(0, self.n_batches, self.per_item):
            rows = idx[i : i + self.per_item]
            # index_select on the flat row list: the same rows as data[rows], ~9x faster than 2-D advanced indexing
            yield torch.index_select(data, 0, rows.reshape(-1)).view(*rows.shape, data.shape[1])


class EvaluationBatches:
    """Iterable over one evaluation split in large contiguous batches of ``rows`` rows (views, no copy):
    ``(x, w)`` pairs, ``w`` the rows' weights or None (every row weighs the same)."""

    def __init__(self, data: torch.Tensor, weights: torch.Tensor | None, rows: int = EVAL_ROWS) -> None:
        self.data, self.weights, self.rows = data, weights, int(rows)

    def __len__(self) -> int:
        return max(1, -(-len(self.data) // self.rows))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for start in range(0, len(self.data), self.rows):
            w = None if self.weights is None else self.weights[start : start + self.rows]
            yield self.data[start : start + self.rows], w


class ArrayDataModule(pl.LightningDataModule):
    """Training / validation / test samples as tensors; ``place(device)`` moves them once.

    ``weights``: optional per-row weights of the evaluation splits, ``{"validation": (n,), "test": (n,)}``;
    the validation loss is then their weighted mean. Without weights every row counts the same."""

    def __init__(
        self,
        train: np.ndarray,
        validation: np.ndarray | None = None,
        test: np.ndarray | None = None,
        *,
        batch_size: int = 256,
        eval_every: int = 200,
        seed: int = 0,
        V: float | None = None,
        weights: dict[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.train_tensor = torch.as_tensor(np.ascontiguousarray(train, dtype=np.float32))
        self.val_tensor = torch.as_tensor(np.ascontiguousarray(validation if validation is not None else train, dtype=np.float32))
        self.test_tensor = torch.as_tensor(np.ascontiguousarray(test if test is not None else self.val_tensor.numpy(), dtype=np.float32))
        self.batch_size = int(batch_size)
        self.eval_every = int(eval_every)
        self.seed = int(seed)
        # V = total variance of the (standardized) training sample: sum of per-feature variances.
        self.V = float(V) if V is not None else total_variance(self.train_tensor.numpy())
        self.source: dict = {"kind": "arrays"}
        # normalised to mean 1 (a weighted mean does not change), float32 like the data
        self.weights = {name: torch.as_tensor(np.asarray(w, dtype=np.float64) / np.mean(w), dtype=torch.float32)
                        for name, w in (weights or {}).items()}
        for name, w in self.weights.items():
            if w.shape != (len(self.split(name)),):
                raise ValueError(f"weights of split {name!r} have shape {tuple(w.shape)}, the split {len(self.split(name))} rows")

    @classmethod
    def from_store(cls, store_path: str | Path, **kwargs) -> "ArrayDataModule":
        from .store import load_split, load_weights, store_V

        dm = cls(
            load_split(store_path, "train"),
            load_split(store_path, "validation"),
            load_split(store_path, "test"),
            V=float(store_V(store_path)),
            weights={s: load_weights(store_path, s) for s in ("validation", "test")},
            **kwargs,
        )
        dm.source = {"kind": "store", "path": str(store_path)}
        return dm

    @property
    def n_features(self) -> int:
        return int(self.train_tensor.shape[1])

    def place(self, device: torch.device | str) -> None:
        """Move every split to ``device`` (once; a no-op when already there)."""
        device = torch.device(device)
        for name in ("train_tensor", "val_tensor", "test_tensor"):
            tensor = getattr(self, name)
            if tensor.device != device:
                setattr(self, name, tensor.to(device))
        self.weights = {name: w.to(device) for name, w in self.weights.items()}

    def current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else 0

    def epoch_indices(self, epoch: int, n_batches: int) -> torch.Tensor:
        """(n_batches, batch_size) int64 row indices for one epoch (concatenated permutations)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * int(epoch) + 12345)
        n, need = len(self.train_tensor), n_batches * self.batch_size
        perms = [torch.randperm(n, generator=gen) for _ in range(-(-need // n))]
        return torch.cat(perms)[:need].view(n_batches, self.batch_size)

    def train_dataloader(self):
        return IndexedBatches(self, self.eval_every)

    def val_dataloader(self):
        return EvaluationBatches(self.val_tensor, self.weights.get("validation"))

    def test_dataloader(self):
        return EvaluationBatches(self.test_tensor, self.weights.get("test"))

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train_tensor, "validation": self.val_tensor, "test": self.test_tensor}[name]


def total_variance(x: np.ndarray) -> float:
    """V: the sum over features of the per-feature (population) variance."""
    x = np.asarray(x, dtype=np.float64)
    return float(x.var(axis=0).sum())
