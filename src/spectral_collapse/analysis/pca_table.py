"""The PCA table (contracts.md section 4): eigenvalues of the covariance of the standardized training
sample, lambda_k / V with V from the store (total variance of the same sample), and the held-out weighting
shifts a_k of the validation and test splits along the same principal axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..oracle import thresholds

HELDOUT_SPLITS = ("test", "validation")


def pca_table(lam: np.ndarray, V: float) -> pd.DataFrame:
    lam = np.sort(np.asarray(lam, dtype=float))[::-1]
    return pd.DataFrame({"k": np.arange(1, len(lam) + 1), "lambda": lam, "lambda_over_V": thresholds(lam, V), "V": float(V)})


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


def heldout_msq(x: np.ndarray, weights: np.ndarray, vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Weighted mean square of a held-out split's projection on each training principal axis, about the TRAINING
    mean: the error a PCA reconstruction x_hat = mean + P_K P_K^T (x - mean) with training eigenvectors leaves on
    that split is sum_{k>K} of these (issue 17, item 7: the model's D~_K is measured on the held-out split, and
    so is this curve). Unlike `heldout_shift`, an offset of the held-out mean counts: the model's decoder bias is
    the training one too."""
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    proj = (np.asarray(x, dtype=np.float64) - mean) @ vectors
    return w @ proj ** 2


def pca_from_store(store_path: str | Path) -> pd.DataFrame:
    """Columns k, lambda, lambda_over_V, V, a_test, a_validation, msq_test_over_V, msq_validation_over_V
    (`heldout_msq` / V): the PCA of the store's training sample
    (the project's one PCA implementation, `spectral_collapse.pca.pca`, float64, ddof=0)."""
    from spectral_collapse.pca import pca
    from spectral_collapse.store import load_split, load_weights, store_V

    fit = pca(load_split(store_path, "train"))
    table = pca_table(fit.lam, store_V(store_path))
    for split in HELDOUT_SPLITS:
        x, w = load_split(store_path, split), load_weights(store_path, split)
        table[f"a_{split}"] = heldout_shift(x, w, fit.vectors, fit.lam)
        table[f"msq_{split}_over_V"] = heldout_msq(x, w, fit.vectors, fit.mean) / table["V"].iloc[0]
    return table
