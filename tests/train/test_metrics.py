"""Reconstruction metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from train import metrics as M


def test_mse_is_in_units_of_the_global_max():
    t = np.array([[0.0, 2.0], [4.0, 0.0]])
    p = t + np.array([[2.0, 0.0], [0.0, 0.0]])
    assert M.mse_paper(t, p, global_max=4.0) == pytest.approx((0.5**2) / 4)


def test_spectral_convergence_of_a_scaled_copy():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 1, (20, 30))
    assert M.spectral_convergence_db(t, 0.9 * t) == pytest.approx(20 * np.log10(0.1))
    assert M.spectral_convergence_db(t, t) < -200


def test_log_spectral_distance_of_a_6db_gain():
    t = np.full((3, 10), 1.0)
    assert M.log_spectral_distance_db(t, 2 * t, global_max=1.0) == pytest.approx(
        20 * np.log10(2), rel=1e-4)


def test_snr():
    x = np.ones(100)
    assert M.snr_db(x, 0.9 * x) == pytest.approx(20.0)
