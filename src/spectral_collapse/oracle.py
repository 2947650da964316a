"""The linear Gaussian oracle of docs/science.md section 3 (exact equilibrium of a linear beta-VAE).

lambda_k: covariance eigenvalues of the (standardized) training data; V = total variance;
T = beta sigma_dec^2 / V; T_k = lambda_k / V. Every function takes numpy arrays / floats.
"""

from __future__ import annotations

import numpy as np


def thresholds(lam, V: float) -> np.ndarray:
    """Collapse thresholds T_k = lambda_k / V (beta_c,k = lambda_k / sigma_dec^2)."""
    return np.asarray(lam, dtype=float) / float(V)


def beta_of_T(T, V: float, sigma2: float):
    """beta = T V / sigma_dec^2 (docs/science.md section 2): the one place the project converts T to beta."""
    return np.asarray(T, dtype=float) * float(V) / float(sigma2)


def T_of_beta(beta, V: float, sigma2: float):
    """T = beta sigma_dec^2 / V (T_eff of a learned decoder variance), the inverse of beta_of_T."""
    return np.asarray(beta, dtype=float) * float(sigma2) / float(V)


def w2(lam, beta: float, sigma2: float) -> np.ndarray:
    """Squared decoder column norms ||w_k||^2 = [lambda_k - beta sigma_dec^2]_+."""
    return np.maximum(np.asarray(lam, dtype=float) - beta * sigma2, 0.0)


def s2(T: float, T_k) -> np.ndarray:
    """Encoder variances s_k^2 = min(T / T_k, 1)."""
    return np.minimum(T / np.asarray(T_k, dtype=float), 1.0)


def var_mu(T: float, T_k) -> np.ndarray:
    """Var(mu_k) = [1 - T / T_k]_+."""
    return np.maximum(1.0 - T / np.asarray(T_k, dtype=float), 0.0)


def m2(T: float, T_k) -> np.ndarray:
    """Order parameter M_k^2 = [1 - T / T_k]_+."""
    return var_mu(T, T_k)


def rate(T: float, T_k) -> np.ndarray:
    """Per-mode rate R_k = [1/2 log(T_k / T)]_+ (nats)."""
    return np.maximum(0.5 * np.log(np.asarray(T_k, dtype=float) / T), 0.0)


def total_kl(lam, beta: float, sigma2: float) -> float:
    """Total KL = sum over active modes (lambda_k > beta sigma2) of 1/2 log(lambda_k / (beta sigma2))."""
    lam = np.asarray(lam, dtype=float)
    active = lam > beta * sigma2
    return float(0.5 * np.log(lam[active] / (beta * sigma2)).sum())


def distortion_tilde(lam, T: float, V: float) -> float:
    """Expected normalized distortion E||x - x_hat(z)||^2 / V at equilibrium (reverse water-filling):
    each active mode contributes beta sigma2 (the water level), each collapsed one lambda_k."""
    lam = np.asarray(lam, dtype=float)
    level = T * V
    return float(np.minimum(lam, level).sum() / V)


def learned_sigma2(lam, beta: float, n_latents: int, iters: int = 200) -> float:
    """Self-consistent learned decoder variance: sigma^2 = sum_{j not active} lambda_j / (d - beta n_active),
    active = the (at most n_latents) largest modes with lambda_k > beta sigma^2. beta = 1 gives pPCA."""
    lam = np.sort(np.asarray(lam, dtype=float))[::-1]
    d = len(lam)
    sigma2 = float(lam.mean())
    for _ in range(iters):
        n_active = int(min(n_latents, np.sum(lam > beta * sigma2)))
        new = float(lam[n_active:].sum() / (d - beta * n_active))
        if abs(new - sigma2) < 1e-14:
            break
        sigma2 = new
    return sigma2
