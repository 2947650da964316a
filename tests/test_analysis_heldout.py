"""The held-out weighting shift a_k of the PCA table, on a tiny hand-made store (no WorldClim data)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from spectral_collapse.analysis.pca_table import pca_from_store

# Training sample: the 8 sign combinations of (2, 1, 0.5): mean 0, covariance diag(4, 1, 0.25) exactly,
# so the principal axes are the coordinate axes and lambda = 4, 1, 0.25.
TRAIN = np.array([[a * 2.0, b * 1.0, c * 0.5] for a in (1, -1) for b in (1, -1) for c in (1, -1)])
TEST = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [4.0, 0.0, 1.0]])
TEST_AREA = np.array([1.0, 1.0, 2.0])
VALIDATION = np.array([[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, -1.0, -0.5]])
VALIDATION_AREA = np.array([1.0, 1.0, 3.0, 3.0])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The variables pca_from_store reads (store.load_split, load_weights, store_V), in the store's format."""
    path = tmp_path_factory.mktemp("store") / "tiny.zarr"
    ds = xr.Dataset(
        {"train_x": (("train_sample", "variable"), TRAIN.astype(np.float32)),
         "validation_x": (("validation_sample", "variable"), VALIDATION.astype(np.float32)),
         "test_x": (("test_sample", "variable"), TEST.astype(np.float32)),
         "validation_area": (("validation_sample",), VALIDATION_AREA.astype(np.float32)),
         "test_area": (("test_sample",), TEST_AREA.astype(np.float32))},
        attrs={"V": 5.25},
    )
    ds.to_zarr(path, zarr_format=2, consolidated=True)
    return path


def test_heldout_shift_is_the_area_weighted_variance_along_each_training_axis(store):
    table = pca_from_store(store)
    np.testing.assert_allclose(table["lambda"], [4.0, 1.0, 0.25])
    # By hand, test split, weights 1, 1, 2 (sum 4): along axis 1 the weighted mean is (0 + 2 + 8) / 4 = 2.5
    # and the variance about it (6.25 + 0.25 + 2 * 2.25) / 4 = 2.75, so a_1 = 2.75 / 4; along axis 2 mean
    # 0.25, variance (0.0625 + 0.5625 + 2 * 0.0625) / 4 = 0.1875, a_2 = 0.1875 / 1; along axis 3 mean 0.5,
    # variance (0.25 + 0.25 + 2 * 0.25) / 4 = 0.25, a_3 = 0.25 / 0.25.
    np.testing.assert_allclose(table["a_test"], [0.6875, 0.1875, 1.0])
    # validation split, weights 1, 1, 3, 3 (sum 8), means 0: variances 8/8, 6/8, 1.5/8
    np.testing.assert_allclose(table["a_validation"], [1.0 / 4.0, 0.75 / 1.0, 0.1875 / 0.25])
    # the weights matter: unweighted variances would give other numbers
    assert not np.allclose(table["a_test"], TEST.var(axis=0) / [4.0, 1.0, 0.25])
    assert not np.allclose(table["a_validation"], VALIDATION.var(axis=0) / [4.0, 1.0, 0.25])


def test_heldout_pca_curve_uses_training_eigenvectors_and_training_mean(store):
    """Issue 17, item 7: PCA reconstruction of the held-out split with the training eigenvectors (like the model's
    held-out D~_K). The training mean is 0 here, so along each axis the test split's weighted mean square is
    (by hand, weights 1, 1, 2 of 4) axis 1: (0 + 4 + 2 * 16) / 4 = 9, axis 2: (0 + 1 + 0) / 4 = 0.25,
    axis 3: (0 + 0 + 2 * 1) / 4 = 0.5; D~_K = tail sums / V (V = 5.25)."""
    from spectral_collapse.analysis.d_eff import pca_heldout_distortion

    table = pca_from_store(store)
    np.testing.assert_allclose(table["msq_test_over_V"], np.array([9.0, 0.25, 0.5]) / 5.25)
    curve, source = pca_heldout_distortion(table, "test")
    np.testing.assert_allclose(curve, np.array([9.75, 0.75, 0.5, 0.0]) / 5.25)
    assert "training mean" in source
    # the mean offset counts: the a_k route (variance about the split's own mean) gives less
    old, old_source = pca_heldout_distortion(table.drop(columns="msq_test_over_V"), "test")
    assert old[0] < curve[0] and "old PCA table" in old_source
