"""The PCA table (contracts.md section 4): eigenvalues of the covariance of the standardized training
sample, lambda_k / V with V from the store (total variance of the same sample), and the held-out weighting
shifts a_k of the validation and test splits along the same principal axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HELDOUT_SPLITS = ("test", "validation")


def pca_table(lam: np.ndarray, V: float) -> pd.DataFrame:
    lam = np.sort(np.asarray(lam, dtype=float))[::-1]
    return pd.DataFrame({"k": np.arange(1, len(lam) + 1), "lambda": lam, "lambda_over_V": lam / V, "V": float(V)})


def heldout_shift(x: np.ndarray, weights: np.ndarray, vectors: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """a_k = (weighted variance of a held-out split along the training principal axis k) / lambda_k.

    Held-out means are cell-area-weighted (docs/science.md section 4), so the variance is too: each row weighs
    its cell area, and the variance is taken about the split's own weighted mean (an offset of the held-out
    blocks' mean is not variance). The held-out blocks' covariance differs from the training one, and a
    rate measured on the test split is shifted by about 1/2 (a_k - 1) nats from its training-split value
    (linear oracle): a_k says by how much. NaN where lambda_k = 0.
    """
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    proj = np.asarray(x, dtype=np.float64) @ vectors
    var = w @ (proj - w @ proj) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lam > 0, var / lam, np.nan)


def pca_from_store(store_path: str | Path) -> pd.DataFrame:
    """Columns k, lambda, lambda_over_V, V, a_test, a_validation: the PCA of the store's training sample
    (the project's one PCA implementation, `spectral_collapse.pca.pca`, float64, ddof=0)."""
    from spectral_collapse.pca import pca
    from spectral_collapse.store import load_split, load_weights, store_V

    fit = pca(load_split(store_path, "train"))
    table = pca_table(fit.lam, store_V(store_path))
    for split in HELDOUT_SPLITS:
        table[f"a_{split}"] = heldout_shift(load_split(store_path, split), load_weights(store_path, split),
                                            fit.vectors, fit.lam)
    return table
