"""PCA of the standardized training sample: eigenvalues lambda_k (descending), lambda_k / V.

Population covariance (ddof = 0), so that sum_k lambda_k = V exactly (V as the store defines it: the
total variance of the standardized training sample). Reused by the analysis stage and the oracle tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PCA:
    lam: np.ndarray  # (d,) eigenvalues, descending
    vectors: np.ndarray  # (d, d) eigenvectors as columns, same order
    mean: np.ndarray  # (d,)
    V: float  # total variance = sum(lam)

    @property
    def lambda_over_V(self) -> np.ndarray:
        return self.lam / self.V

    @property
    def T_k(self) -> np.ndarray:
        """Linear-oracle collapse thresholds T_k = lambda_k / V."""
        return self.lambda_over_V

    def table(self):
        """pandas DataFrame with columns k (1-based), lambda, lambda_over_V, V (contracts.md section 4)."""
        import pandas as pd

        return pd.DataFrame({
            "k": np.arange(1, len(self.lam) + 1),
            "lambda": self.lam,
            "lambda_over_V": self.lambda_over_V,
            "V": self.V,
        })


def pca(x: np.ndarray, rows: int = 200_000) -> PCA:
    """Eigen-decomposition of the covariance of x (n, d), accumulated in float64, rows at a time."""
    x = np.asarray(x)
    n, d = x.shape
    mean = np.zeros(d)
    for start in range(0, n, rows):
        mean += x[start : start + rows].astype(np.float64).sum(0)
    mean /= n
    cov = np.zeros((d, d))
    for start in range(0, n, rows):
        xc = x[start : start + rows].astype(np.float64) - mean
        cov += xc.T @ xc
    cov /= n
    lam, vec = np.linalg.eigh(cov)
    order = np.argsort(lam)[::-1]
    lam, vec = np.clip(lam[order], 0.0, None), vec[:, order]
    return PCA(lam=lam, vectors=vec, mean=mean, V=float(np.trace(cov)))
