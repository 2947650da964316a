"""Synthetic per-run tables of a linear Gaussian VAE at equilibrium (docs/science.md section 3), in the schema
of contracts.md section 3, for tests and demonstrations of the analysis without training.

At T with T_k = lambda_k / V: Var(mu_k) = [1 - T/T_k]_+, s_k^2 = min(T/T_k, 1), M_k^2 = [1 - T/T_k]_+,
R_k = [1/2 log(T_k/T)]_+. Decoding posterior means, an active mode leaves a normalized error T^2/T_k and a
pruned or collapsed one T_k, so D~_K(T) = sum_{k>K or collapsed} T_k + sum_{k<=K active} T^2/T_k.

Single-latent ablation (`ablation_dD`): along PC k the decoded mean is ||w_k|| mu_k = (1 - T/T_k) x_k, so the
residual is (T/T_k) x_k; setting mu_k = 0 leaves x_k instead, and D~ rises by
(lambda_k - (T/T_k)^2 lambda_k) / V = T_k - T^2/T_k (not ||w_k||^2 Var(mu_k) / V = T_k (1 - T/T_k)^2: the residual
and the removed part are correlated); 0 for a collapsed mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import oracle

UNIT_SIGMA2 = 1.0  # the synthetic tables are those of a unit decoder variance: beta = T V


def oracle_point(T: float, T_k: np.ndarray) -> dict[str, np.ndarray]:
    """Per-mode equilibrium quantities of the linear oracle at one T (modes in the order of T_k)."""
    T_k = np.asarray(T_k, dtype=float)
    active = T < T_k
    s2, mu2 = oracle.s2(T, T_k), oracle.var_mu(T, T_k)
    return {"mu2": mu2, "s2": s2, "logs2": np.log(s2), "rate": 0.5 * (mu2 + s2 - np.log(s2) - 1.0),
            "M2": mu2 / (mu2 + s2), "err": np.where(active, T ** 2 / T_k, T_k),
            "ablation_dD": np.where(active, T_k - T ** 2 / T_k, 0.0)}


def linear_scan_tables(T_k, T_grid, seeds=(0,), noise: float = 0.0, unconverged: dict | None = None,
                       model: str = "linear", V: float = 19.0, rng_seed: int = 0,
                       splits=("test", "validation"), a_test=None):
    """(latents, pruning, runs) DataFrames for a linear-oracle scan.

    noise: relative (log-normal) jitter of every mode's threshold, independent per run, and 0.1 x noise
    relative noise on D~. unconverged: {(seed, T): factor}
    marks those runs unconverged and scales their Var(mu) by `factor` (a run stopped short of equilibrium), so
    that including them would bias the fits.
    """
    rng = np.random.default_rng(rng_seed)
    T_k = np.sort(np.asarray(T_k, dtype=float))[::-1]
    n = len(T_k)
    unconverged = unconverged or {}
    lat_rows, prn_rows, runs = [], [], []
    for seed in seeds:
        perm = np.random.default_rng(1000 + seed).permutation(n)  # latent index of each mode
        for T in T_grid:
            bad = next((f for (s, t), f in unconverged.items() if s == seed and np.isclose(t, T)), None)
            run_id = f"{model}/T{T:.4e}/seed{seed}"
            beta = float(oracle.beta_of_T(T, V, UNIT_SIGMA2))
            # Each run finds a slightly perturbed equilibrium: thresholds jittered by `noise` (relative).
            T_eff = T_k * np.exp(noise * rng.standard_normal(n)) if noise else T_k
            q = oracle_point(T, T_eff)
            conv = bad is None
            for split in splits:
                # a held-out split with variance a_k lambda_k along PC k (training statistics otherwise)
                a = np.asarray(a_test, dtype=float) if (split == "test" and a_test is not None) else np.ones(n)
                mu2 = q["mu2"] * a * (bad or 1.0)
                M2 = mu2 / (mu2 + q["s2"])
                rate = 0.5 * (mu2 + q["s2"] - q["logs2"] - 1.0)
                order = np.lexsort((perm, -M2))  # modes by M^2 descending (ties by latent index)
                rank = np.empty(n, dtype=int)
                rank[order] = np.arange(1, n + 1)
                for m in range(n):
                    lat_rows.append({
                        "run_id": run_id, "model": model, "family": "linear", "depth": 0, "T": float(T),
                        "beta": beta, "V": V, "seed": seed, "split": split, "latent": int(perm[m]),
                        "rank": int(rank[m]), "mu2": float(mu2[m]), "s2": q["s2"][m],
                        "logs2": q["logs2"][m], "rate": float(rate[m]), "M2": float(M2[m]),
                        "snr": float(mu2[m] / q["s2"][m]), "active": bool(M2[m] > 0.1), "m2_drift": 0.0,
                        "converged": conv, "ablation_dD": float(a[m] * q["ablation_dD"][m]),
                    })
                err_by_rank = (a * q["err"])[order]
                full_by_rank = (a * T_eff)[order]
                for K in range(n + 1):
                    D = float(np.sum(err_by_rank[:K]) + np.sum(full_by_rank[K:]))
                    if noise:
                        D *= 1.0 + 0.1 * noise * rng.standard_normal()
                    prn_rows.append({"run_id": run_id, "model": model, "family": "linear", "depth": 0,
                                     "T": float(T), "beta": beta, "seed": seed, "split": split,
                                     "K": K, "D_tilde": D})
            runs.append({"run_id": run_id, "model": model, "family": "linear", "depth": 0, "T": float(T),
                         "beta": beta, "V": V, "seed": seed,
                         "status": "converged" if conv else "budget", "converged": conv, "updates": 1000, "wall_time_s": 1.0,
                         "totals": {"test": {"D_tilde_sampled": float(np.sum(q["err"])),
                                                    "R": float(np.sum(q["rate"]))}}})
    return pd.DataFrame(lat_rows), pd.DataFrame(prn_rows), runs


def write_run_dirs(root: str | Path, latents: pd.DataFrame, pruning: pd.DataFrame, runs: list[dict]) -> dict:
    """Write the tables as one job directory per run, root/{model}/T{T}/seed{seed}/ (groups of one scan point,
    run.json in the job layout of contracts.md section 3); returns the path lists."""
    root = Path(root)
    paths = {"latents": [], "pruning": [], "runs": []}
    for run in runs:
        d = root / run["run_id"]
        d.mkdir(parents=True, exist_ok=True)
        latents[latents["run_id"] == run["run_id"]].to_parquet(d / "latents.parquet", index=False)
        pruning[pruning["run_id"] == run["run_id"]].to_parquet(d / "pruning.parquet", index=False)
        (d / "run.json").write_text(json.dumps({"runs": [run]}))
        paths["latents"].append(d / "latents.parquet")
        paths["pruning"].append(d / "pruning.parquet")
        paths["runs"].append(d / "run.json")
    return paths


def pca_table(T_k, V: float = 19.0) -> pd.DataFrame:
    """The PCA table of the oracle's data; a_test = a_validation = 1: its held-out splits share the training
    covariance."""
    lam = np.sort(np.asarray(T_k, dtype=float))[::-1]
    return pd.DataFrame({"k": np.arange(1, len(lam) + 1), "lambda": lam * V, "lambda_over_V": lam, "V": V,
                         "a_test": 1.0, "a_validation": 1.0})
