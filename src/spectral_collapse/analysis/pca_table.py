"""The PCA table (contracts.md section 4): eigenvalues of the covariance of the standardized training
sample, lambda_k / V with V from the store (total variance of the same sample)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def pca_eigenvalues(x: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of the population covariance (ddof=0) of x (n, d), in float64, from the
    project's one PCA implementation (`spectral_collapse.pca.pca`)."""
    from spectral_collapse.pca import pca

    return np.asarray(pca(x).lam, dtype=float)


def pca_table(lam: np.ndarray, V: float) -> pd.DataFrame:
    lam = np.sort(np.asarray(lam, dtype=float))[::-1]
    return pd.DataFrame({"k": np.arange(1, len(lam) + 1), "lambda": lam, "lambda_over_V": lam / V, "V": float(V)})


def pca_from_store(store_path: str | Path) -> pd.DataFrame:
    from spectral_collapse.store import load_split, store_V

    return pca_table(pca_eigenvalues(load_split(store_path, "train")), store_V(store_path))
