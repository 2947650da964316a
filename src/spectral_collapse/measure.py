"""Measurements of a trained model (docs/science.md section 2): per-latent table and ranked-pruning curve.

For every ensemble member e and latent k, over an evaluation split:
mu2 = mean(mu_k^2), s2 = mean(s_k^2), logs2 = mean(log s_k^2), rate R_k = mean KL_k,
M2 = mu2 / (mu2 + s2), snr = mu2 / s2, rank by M2 (descending, 1-based), active = M2 > threshold.
Pruning: D_tilde_K = mean ||x - x_hat^(K)||^2 / V for K = 0..L, decoding the posterior means with the
latents of rank > K set to 0. Totals: D (the loss's distortion, one posterior sample per data point drawn
with a fixed generator), D_tilde_sampled = 2 sigma_dec^2 D / V (the same, normalized like D_tilde_K),
R = sum R_k, loss = D + beta R, and D_tilde_mean = D_tilde_L (posterior means, every latent kept).
Ablation utility (issue 17, the direct test of the ordering): ablation_dD_k = D~ with latent k alone set to 0
(every other latent kept) minus D_tilde_mean, for every ACTIVE latent (NaN for the others: a collapsed latent
carries no signal, and its decode would cost as much as an active one's); decoded in the same pass as the
pruning curve.

Every mean is weighted when the split has weights: the held-out splits are every land cell of their blocks,
and a mean over them is a cell-area-weighted mean (docs/science.md section 4; ``store.load_weights``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .vae import VAE

NOISE_ROWS = 32768  # rows per draw of the sampling noise (fixes which noise each row gets)
NOISE_SEED = 20260522
BLOCK_ROWS = 8192  # rows x members (x pruning levels) per forward pass: activations that stay in cache
BLOCK_ROWS_GPU = 2**19  # the same on a GPU: no cache to fit, the cost is per kernel launch (128 MB per activation)
MIN_BLOCK_ROWS = 256
MIN_PRUNE_ROWS = 32


@torch.no_grad()
def measure_split(model: VAE, x: np.ndarray | torch.Tensor, V: float, active_threshold: float,
                  weights: np.ndarray | None = None, curves: bool = True) -> dict[str, np.ndarray]:
    """All measurements of every member on one split; arrays shaped (E, L), (E, L+1) or (E,).
    ``weights`` (n,): every mean is the weighted mean (None: every row weighs the same).
    ``curves=False`` skips the second pass (D_tilde_K, D_tilde_mean and ablation_dD are NaN): what the
    stability check needs (moments, D, R) at half the cost.

    Two passes over the split. (1) Posterior moments and the sampled distortion D, in blocks of rows that
    keep the activations of all members in cache; the sampling noise is drawn per NOISE_ROWS rows with a fixed
    generator, so D does not depend on the block size. (2) The ranked-pruning curve and the ablations: for each
    block, the L + 1 pruned copies of its posterior means (rank > K set to 0, K = 0..L) and the ablated copies
    (active latent k alone set to 0) are decoded in one call.
    """
    model = model.eval()
    device = model.log_sigma2.device
    x = torch.as_tensor(np.asarray(x, dtype=np.float32) if not torch.is_tensor(x) else x, device=device)
    E, L = model.ensemble, model.config.latents
    n = x.shape[0]
    w = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64), device=device)
    if w is not None and w.shape != (n,):
        raise ValueError(f"{len(w)} weights for {n} rows")
    total = float(n) if w is None else float(w.sum())
    # The noise is drawn by the CPU generator on every device (then moved): the same tables wherever measured.
    gen = torch.Generator().manual_seed(NOISE_SEED)
    block_rows = BLOCK_ROWS if device.type == "cpu" else BLOCK_ROWS_GPU
    mu2 = torch.zeros(E, L, dtype=torch.float64, device=device)
    s2 = torch.zeros_like(mu2)
    logs2 = torch.zeros_like(mu2)
    kl = torch.zeros_like(mu2)
    sq_sample = torch.zeros(E, dtype=torch.float64, device=device)
    mus = torch.empty((E, n, L), dtype=model.log_sigma2.dtype, device=device)  # posterior means, model's dtype
    block = max(MIN_BLOCK_ROWS, block_rows // E)
    for start in range(0, n, NOISE_ROWS):
        rows = min(NOISE_ROWS, n - start)
        noise = torch.randn((E, rows, L), generator=gen).to(device)
        for b in range(0, rows, block):
            lo, hi = start + b, start + min(b + block, rows)
            xb = x[lo:hi]
            add = _row_sum(None if w is None else w[lo:hi])
            mu, logvar = model.encode(xb)
            var = logvar.exp()
            mu2 += add(mu.pow(2), 1)
            s2 += add(var, 1)
            logs2 += add(logvar, 1)
            kl += add(0.5 * (mu.pow(2) + var - logvar - 1.0), 1)
            x_hat = model.decode(mu + var.sqrt() * noise[:, b : b + block])
            sq_sample += add((x_hat - xb).pow(2).sum(-1), -1)
            mus[:, lo:hi] = mu
    mu2, s2, logs2, kl = mu2 / total, s2 / total, logs2 / total, kl / total
    m2 = mu2 / (mu2 + s2)
    # rank 1 = largest M^2 (stable sort, ties by latent index)
    order = torch.argsort(-m2, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(1, L + 1, device=device).expand(E, L).contiguous())
    sq_pruned = torch.full((E, L + 1), float("nan"), dtype=torch.float64, device=device)
    sq_ablated = torch.full((E, L), float("nan"), dtype=torch.float64, device=device)
    if curves:
        sq_pruned, sq_ablated = _pruned_errors(model, x, w, mus, rank, m2 > active_threshold, block_rows)
    sigma2 = model.sigma2.double()
    D = sq_sample / total / (2.0 * sigma2)
    out = {
        "mu2": mu2, "s2": s2, "logs2": logs2, "rate": kl, "M2": m2, "snr": mu2 / s2, "rank": rank,
        "active": m2 > active_threshold, "D_tilde_K": sq_pruned / total / V,
        "D": D, "D_tilde_sampled": sq_sample / total / V, "R": kl.sum(1),
    }
    out = {k: v.cpu().numpy() for k, v in out.items()}
    out["D_tilde_mean"] = out["D_tilde_K"][:, -1].copy()
    out["ablation_dD"] = (sq_ablated / total / V).cpu().numpy() - out["D_tilde_mean"][:, None]
    out["n"] = np.full(E, n)
    if model.config.family == "linear":
        out["w2"] = model.decoder_column_norms().double().cpu().numpy()
    else:
        out["w2"] = np.full((E, L), np.nan)
    return out


def _pruned_errors(model: VAE, x: torch.Tensor, w: torch.Tensor | None, mus: torch.Tensor, rank: torch.Tensor,
                   ablate: torch.Tensor, block_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed (weighted) squared errors of the posterior means decoded with masks, every member and mask in one
    call per block of rows: (E, L + 1) the ranked pruning (latents of rank > K set to 0, K = 0..L), and (E, L)
    the ablations (latent k alone set to 0) of the latents marked in ``ablate`` (E, L), NaN elsewhere.

    Ablation masks are shared slots: A = the most latents any member ablates; member e's slot j is its j-th
    marked latent, or the full mask when it has fewer (a decode whose result is dropped)."""
    E, n, L = mus.shape
    device = mus.device
    # keep[e, K, 0, k] = 1 if latent k of member e has rank <= K
    pruned = rank[:, None, None, :] <= torch.arange(L + 1, device=device)[None, :, None, None]
    count = ablate.sum(1)  # (E,)
    A = int(count.max()) if L else 0
    slot_latent = torch.argsort((~ablate).to(torch.int8), dim=1, stable=True)[:, :A]  # marked latents first
    used = torch.arange(A, device=device)[None, :] < count[:, None]  # (E, A)
    ablated = torch.ones(E, A, 1, L, dtype=torch.bool, device=device)
    ablated[torch.nonzero(used, as_tuple=True) + (0,) + (slot_latent[used],)] = False
    keep = torch.cat([pruned, ablated], 1).to(mus.dtype)  # (E, L + 1 + A, 1, L)
    masks = L + 1 + A
    sq = torch.zeros(E, masks, dtype=torch.float64, device=device)
    block = max(MIN_PRUNE_ROWS, block_rows // (E * masks))
    for start in range(0, n, block):
        xb = x[start : start + block]
        z = mus[:, None, start : start + block] * keep  # (E, masks, rows, L)
        x_hat = model.decode(z.view(E, -1, L)).view(E, masks, xb.shape[0], -1)
        sq += _row_sum(None if w is None else w[start : start + block])((x_hat - xb).pow(2).sum(-1), -1)
    abl = torch.full((E, L), float("nan"), dtype=torch.float64, device=device)
    rows = torch.nonzero(used, as_tuple=True)[0]
    abl[rows, slot_latent[used]] = sq[:, L + 1 :][used]
    return sq[:, : L + 1], abl


def _row_sum(w: torch.Tensor | None):
    """``add(v, dim)``: the sum of ``v`` over its row dimension ``dim`` in float64, each row weighted by ``w``."""

    def add(v: torch.Tensor, dim: int) -> torch.Tensor:
        if w is None:
            return v.sum(dim, dtype=torch.float64)
        shape = [1] * v.dim()
        shape[dim] = -1
        return (v.double() * w.view(shape)).sum(dim)

    return add


def measure_tables(
    model: VAE,
    splits: Mapping[str, np.ndarray],
    *,
    V: float,
    run_ids: Sequence[str],
    model_id: str,
    T: Sequence[float],
    beta: Sequence[float],
    seed: int,
    active_threshold: float,
    weights: Mapping[str, np.ndarray | None] | None = None,
    m2_drift: np.ndarray | None = None,
    converged: Sequence[bool] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """The latents and pruning tables (contracts.md section 3) and per-member totals per split.

    ``T`` is each member's temperature as the tables report it (the scan point, or T_eff with a learned
    decoder variance); ``weights[split]``: the split's row weights (missing or None: unweighted).
    Returns (latents, pruning, totals) with totals[e][split] = {D, D_tilde_sampled, D_tilde_mean, R, loss, n,
    n_active}.
    """
    E, L = model.ensemble, model.config.latents
    family, depth = model.config.family, model.config.depth
    drift = np.full((E, L), np.nan) if m2_drift is None else np.asarray(m2_drift, dtype=float).reshape(E, L)
    conv = [False] * E if converged is None else list(converged)
    lat_rows, prune_frames = [], []
    totals: list[dict[str, Any]] = [{} for _ in range(E)]
    for split, x in splits.items():
        m = measure_split(model, x, V, active_threshold, (weights or {}).get(split))
        for e in range(E):
            ident = {"run_id": run_ids[e], "model": model_id, "family": family, "depth": depth,
                     "T": float(T[e]), "beta": float(beta[e])}
            lat_rows.append(pd.DataFrame({
                **ident, "V": float(V), "seed": int(seed), "split": split,
                "latent": np.arange(L), "rank": m["rank"][e].astype(np.int64),
                "mu2": m["mu2"][e], "s2": m["s2"][e], "logs2": m["logs2"][e], "rate": m["rate"][e],
                "M2": m["M2"][e], "snr": m["snr"][e], "active": m["active"][e].astype(bool),
                "m2_drift": drift[e], "converged": bool(conv[e]), "w2": m["w2"][e],
                "ablation_dD": m["ablation_dD"][e],
            }))
            prune_frames.append(pd.DataFrame({
                **ident, "seed": int(seed), "split": split, "K": np.arange(L + 1),
                "D_tilde": m["D_tilde_K"][e],
            }))
            totals[e][split] = {
                "D": float(m["D"][e]), "D_tilde_sampled": float(m["D_tilde_sampled"][e]),
                "D_tilde_mean": float(m["D_tilde_mean"][e]), "R": float(m["R"][e]),
                "loss": float(m["D"][e] + beta[e] * m["R"][e]), "n": int(m["n"][e]),
                "n_active": int(m["active"][e].sum()),
            }
    return pd.concat(lat_rows, ignore_index=True), pd.concat(prune_frames, ignore_index=True), totals
