"""Unit tests of the analysis functions on synthetic curves with known answers (fast, no data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spectral_collapse.analysis.agreement import (
    identity_r2, leading_ranks, log_identity_r2, rank_agreement, rank_concordance, relative_error)
from spectral_collapse.analysis.collect import run_rows
from spectral_collapse.analysis.d_eff import d_eff, pca_distortion, powerlaw_crossover, powerlaw_fit
from spectral_collapse.analysis.maps import signal_fraction, weighted_corr
from spectral_collapse.analysis.spectrum import utility_spectrum
from spectral_collapse.analysis.model_analysis import _clean
from spectral_collapse.analysis.thresholds import (
    fit_m2_threshold, fit_rate_threshold, meanfield_exponent, threshold_status)
from spectral_collapse.config import load_config

T_GRID = np.logspace(0, -4, 33)  # 8 per decade
CFG = load_config()["analysis"]
WINDOW = CFG["rate_window"]


def rate_curve(T, T_c):
    return np.clip(-0.5 * np.log(T / T_c), 0, None)


# ------------------------------------------------------------------------------------------ thresholds

@pytest.mark.parametrize("T_c", [0.4, 0.037, 2.2e-3])
def test_rate_fit_recovers_threshold(T_c):
    tc, n = fit_rate_threshold(T_GRID, rate_curve(T_GRID, T_c), dD=T_c, window=WINDOW)
    assert n == int(np.sum((T_GRID >= 1e-2 * T_c) & (T_GRID <= T_c)))
    assert tc == pytest.approx(T_c, rel=1e-6)


def test_rate_fit_with_noise_and_offset_utility():
    rng = np.random.default_rng(1)
    T_c = 0.05
    R = rate_curve(T_GRID, T_c) + 0.01 * rng.standard_normal(T_GRID.size)
    # the window is set by the utility, here 20% below the threshold: points beyond it are ignored
    tc, _ = fit_rate_threshold(T_GRID, np.clip(R, 0, None), dD=0.8 * T_c, window=WINDOW)
    assert tc == pytest.approx(T_c, rel=0.03)


def test_rate_fit_ignores_points_outside_the_window():
    T_c = 0.01
    R = rate_curve(T_GRID, T_c)
    R_bad = np.where(T_GRID < 1e-2 * T_c, 50.0, R)  # garbage far below the window
    assert fit_rate_threshold(T_GRID, R_bad, dD=T_c, window=WINDOW)[0] == pytest.approx(T_c, rel=1e-6)


def test_rate_fit_undefined_cases():
    assert np.isnan(fit_rate_threshold(T_GRID, np.zeros_like(T_GRID), dD=0.1, window=WINDOW)[0])  # never active
    assert np.isnan(fit_rate_threshold(T_GRID, rate_curve(T_GRID, 0.1), dD=0.0, window=WINDOW)[0])  # no utility
    assert np.isnan(fit_rate_threshold(T_GRID, rate_curve(T_GRID, 0.1), dD=-1e-6, window=WINDOW)[0])


def test_rate_fit_clipped_model_uses_collapsed_points():
    # utility 3x the threshold: the window holds collapsed points (R = 0) that pin the threshold from above
    T_c = 0.02
    tc, _ = fit_rate_threshold(T_GRID, rate_curve(T_GRID, T_c), dD=3 * T_c, window=WINDOW)
    assert tc == pytest.approx(T_c, rel=1e-6)


@pytest.mark.parametrize("T_c", [0.3, 0.004])
def test_m2_fit_recovers_threshold(T_c):
    M2 = np.clip(1 - T_GRID / T_c, 0, None)
    assert fit_m2_threshold(T_GRID, M2, T_ref=1.3 * T_c)[0] == pytest.approx(T_c, rel=1e-6)


@pytest.mark.parametrize("b", [1.0, 0.7, 1.4])
def test_meanfield_exponent_recovered(b):
    T_cs = np.array([0.3, 0.1, 0.02, 0.006])
    T = np.tile(T_GRID, len(T_cs))
    tc = np.repeat(T_cs, len(T_GRID))
    M2 = np.clip(1 - T / tc, 0, None) ** b
    out = meanfield_exponent(T, M2, tc, rank=np.repeat(np.arange(4), len(T_GRID)), window=(0.05, 0.5),
                             min_points=1)
    assert out["exponent"] == pytest.approx(b, abs=1e-9)
    assert out["n_groups"] == 4 and out["window"] == [0.05, 0.5]
    x = 1 - T / tc
    assert out["n_points"] == int(np.sum((x >= 0.05) & (x <= 0.5)))


def test_meanfield_exponent_uncertainty_with_noise():
    rng = np.random.default_rng(0)
    T_cs = np.array([0.3, 0.1, 0.05, 0.02, 0.006])
    T = np.tile(T_GRID, len(T_cs))
    tc = np.repeat(T_cs, len(T_GRID))
    M2 = np.clip(1 - T / tc, 0, None) * np.exp(0.05 * rng.standard_normal(T.size))
    out = meanfield_exponent(T, M2, tc, rank=np.repeat(np.arange(5), len(T_GRID)), window=(0.05, 0.5),
                             min_points=1)
    assert 0 < out["stderr"] < 0.2
    assert abs(out["exponent"] - 1.0) < 3 * out["stderr"] + 0.02


# ------------------------------------------------------------------------------------------ agreement

def test_identity_r2_hand_cases():
    x = np.log([0.5, 0.2, 0.1, 0.03, 0.01])
    assert identity_r2(x, x) == 1.0
    y = x + 0.3  # constant offset: perfectly correlated, but off the identity
    assert np.corrcoef(x, y)[0, 1] ** 2 == pytest.approx(1.0)
    ss_tot = np.sum((y - y.mean()) ** 2)
    assert identity_r2(x, y) == pytest.approx(1 - len(x) * 0.09 / ss_tot)
    assert identity_r2(x, y) < 1.0
    assert identity_r2(x, x + 1.0) < identity_r2(x, y)  # a larger offset lowers it further
    assert identity_r2(x, 2 * x) < 1.0                   # a slope != 1 lowers it too
    assert identity_r2(x, x + 10) < 0                    # and it can go negative
    assert np.isnan(identity_r2([1.0], [1.0]))
    # log base does not matter; non-positive values are dropped
    assert log_identity_r2([0.5, 0.1, 0.01, -1], [0.4, 0.12, 0.01, 0.3]) == pytest.approx(
        identity_r2(np.log10([0.5, 0.1, 0.01]), np.log10([0.4, 0.12, 0.01])))


def test_rank_agreement_hand_cases():
    assert rank_agreement([5, 4, 3, 2, 1], [50, 40, 30, 20, 10]) == 5
    assert rank_agreement([5, 4, 3, 2, 1], [50, 40, 20, 30, 10]) == 2      # ranks 3 and 4 swapped
    assert rank_agreement([5, 4, 3, 2, 1], [40, 50, 30, 20, 10]) == 0      # disagree at the top
    assert rank_agreement([], []) == 0
    # the orders are by value, not by position: a shuffled listing that agrees still counts
    assert rank_agreement([1, 5, 3], [0.1, 0.5, 0.3]) == 3


def test_rank_agreement_counts_consecutive_leading_ranks():
    """A rank without a threshold (or utility) ends the count: the ranks after it are not leading ranks."""
    assert rank_agreement([.5, np.nan, .1, .05], [.5, .3, .1, .05]) == 1
    assert leading_ranks([.5, np.nan, .1, .05], [.5, .3, .1, .05]) == 1
    assert rank_agreement([5, 4, np.nan, 2, 1], [50, 40, 30, 20, 10]) == 2
    assert rank_agreement([5, 4, 3, 2, 1], [50, 40, 30, 0.0, 10]) == 3    # no utility (dD <= 0) ends it too
    assert rank_agreement([np.nan, 4, 3], [50, 40, 30]) == 0
    assert leading_ranks([5, 4, 3], [50, 40, 30]) == 3


def test_rank_concordance_counts_every_pair():
    # one adjacent swap: one inversion of 10 pairs
    out = rank_concordance([5, 4, 3, 2, 1], [50, 40, 20, 30, 10])
    assert out["inversions"] == 1 and out["n_ranks"] == 5
    assert out["kendall_tau"] == pytest.approx(1 - 2 * 1 / 10)
    # a missing rank is skipped (not the end, unlike the consecutive count); reversed order: all pairs discordant
    out = rank_concordance([1, np.nan, 2, 3], [3, 7, 2, 1])
    assert (out["inversions"], out["n_ranks"]) == (3, 3) and out["kendall_tau"] == pytest.approx(-1.0)
    assert np.isnan(rank_concordance([1.0], [2.0])["kendall_tau"])


def test_threshold_status_rules():
    """A number from the rate fit is a threshold only for a rank active somewhere, inside the scanned range."""
    T_range = (1e-5, 1.0)
    assert threshold_status(0.01, 0.01, True, T_range) == "fitted"
    assert threshold_status(0.01, 0.01, False, T_range) == "never_active"
    assert threshold_status(2.5e-6, 5e-3, True, T_range) == "outside_scan"    # below the coldest point
    assert threshold_status(3.0, 3.0, True, T_range) == "outside_scan"        # above the warmest
    assert threshold_status(np.nan, 0.0, True, T_range) == "no_utility"
    assert threshold_status(np.nan, 1e-3, True, T_range) == "no_rate_in_window"
    # the brief's case: a flat 2e-3-nat rate gives a T_c three decades below its window
    T = np.logspace(0, -6, 49)
    tc, _ = fit_rate_threshold(T, np.full(T.size, 2e-3), 5e-3, WINDOW)
    assert tc < 1e-2 * 5e-3 and threshold_status(tc, 5e-3, True, (T.min(), T.max())) == "outside_scan"


def test_meanfield_exponent_one_intercept_per_rank():
    """Ranks with different prefactors (M^2 = c_k x^b) must not bias the common slope."""
    T_cs = np.array([0.3, 0.1, 0.02, 0.006])
    c = np.array([1.0, 0.3, 0.6, 0.1])
    T = np.tile(T_GRID, len(T_cs))
    tc = np.repeat(T_cs, len(T_GRID))
    group = np.repeat(np.arange(1, 5), len(T_GRID))
    x = np.clip(1 - T / tc, 0, None)
    out = meanfield_exponent(T, np.repeat(c, len(T_GRID)) * x, tc, rank=group, window=(0.05, 0.6), min_points=1)
    assert out["exponent"] == pytest.approx(1.0, abs=1e-9)
    assert out["intercepts"] == pytest.approx({k: np.log(ck) for k, ck in zip(range(1, 5), c)})
    assert out["stderr_bootstrap"] == pytest.approx(0.0, abs=1e-9)


def test_relative_error():
    np.testing.assert_allclose(relative_error([1.05, 0.9], [1.0, 1.0]), [0.05, 0.1])


# ------------------------------------------------------------------------------------------ truncation

def test_utility_spectrum_hand_case():
    rows = []
    for run, T, curve in [("a", 0.1, [1.0, 0.6, 0.5, 0.5]), ("b", 0.01, [1.0, 0.5, 0.3, 0.25]),
                          ("c", 0.001, [1.0, 0.7, 0.2, 0.2])]:
        rows += [{"run_id": run, "T": T, "K": K, "D_tilde": d} for K, d in enumerate(curve)]
    spec = utility_spectrum(pd.DataFrame(rows))
    np.testing.assert_allclose(spec["best_D"], [0.5, 0.2, 0.2])
    np.testing.assert_allclose(spec["dD"], [0.5, 0.3, 0.0])
    np.testing.assert_allclose(spec["T_best"], [0.01, 0.001, 0.001])
    spec_b = utility_spectrum(pd.DataFrame(rows), run_ids={"a", "b"})  # run c excluded
    np.testing.assert_allclose(spec_b["best_D"], [0.5, 0.3, 0.25])


def test_d_eff_and_pca_distortion():
    lam = np.array([0.6, 0.3, 0.08, 0.015, 0.005])
    curve = pca_distortion(lam)
    np.testing.assert_allclose(curve, [1.0, 0.4, 0.1, 0.02, 0.005, 0.0])
    out = d_eff(curve, [0.5, 0.1, 0.01, 0.001])
    assert out == {0.5: 1.0, 0.1: 2.0, 0.01: 4.0, 0.001: 5.0}
    assert np.isnan(d_eff([1.0, 0.5], [0.1])[0.1])


def test_powerlaw_fit():
    K = np.arange(0, 20)
    D = np.where(K > 0, 3.0 * np.maximum(K, 1) ** -4.0, 1.0)
    fit = powerlaw_fit(K, D, (4, 17))
    assert fit["exponent"] == pytest.approx(4.0) and fit["prefactor"] == pytest.approx(3.0)
    assert fit["ranks"] == [4, 17] and fit["n_points"] == 14


# ------------------------------------------------------------------------------------------ maps, I/O

def test_weighted_corr_and_signal_fraction():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(500)
    B = np.c_[a + 0.5 * rng.standard_normal(500), rng.standard_normal(500)]
    np.testing.assert_allclose(weighted_corr(a, B, np.ones(500)),
                               [np.corrcoef(a, B[:, 0])[0, 1], np.corrcoef(a, B[:, 1])[0, 1]])
    mu = np.c_[np.full(10, 2.0), np.zeros(10)]
    logvar = np.log(np.c_[np.full(10, 4.0), np.ones(10)])
    np.testing.assert_allclose(signal_fraction(mu, logvar), [0.5, 0.0])


def test_run_rows_of_a_group():
    group = {"seed": 0, "V": 19.0, "config": {"a": 1},
             "runs": [{"run_id": "x", "T": 0.1, "status": "converged", "converged": True,
                       "totals": {"test": {"D_tilde_sampled": 0.1, "R": 3.0}}},
                      {"run_id": "y", "T": 0.01, "status": "budget", "converged": False,
                       "totals": {"test": {"D_tilde_sampled": 0.2, "R": 5.0}}}]}
    rows = run_rows(group)
    assert [r["converged"] for r in rows] == [True, False] and all(r["seed"] == 0 for r in rows)
    assert rows[1]["test_D_tilde_sampled"] == 0.2 and "config" not in rows[0]


def test_clean_makes_strict_json():
    payload = _clean({"a": float("nan"), "b": [np.float64(1.5), np.inf], "c": {1: np.int64(3)}})
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": {"1": 3}}


@pytest.mark.parametrize("brk", [3, 4, 6])
def test_powerlaw_crossover_finds_the_break(brk):
    """A curve falling as K^-1 up to rank `brk` and as K^-4 after it (continuous at the break)."""
    K = np.arange(0, 20)
    D = np.where(K <= brk, 0.5 * K**-1.0, 0.5 * brk**-1.0 * (K / brk) ** -4.0)
    D[0] = 1.0
    fit = powerlaw_crossover(K, D, 17)
    assert fit["K"] == brk and fit["head_exponent"] == pytest.approx(1.0, abs=1e-6)
    assert fit["tail_exponent"] == pytest.approx(4.0, abs=1e-6) and fit["ranks"] == [1, 17]
    straight = powerlaw_crossover(K, np.where(K > 0, K**-2.0, 1.0), 17)  # no break: both sides the same slope
    assert straight["head_exponent"] == pytest.approx(2.0, abs=1e-6) == straight["tail_exponent"]
    assert powerlaw_crossover(K[:4], D[:4], 3)["K"] is None  # too few ranks
