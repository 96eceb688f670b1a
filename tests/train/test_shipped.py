"""The bundles in models/: valid, small, the player's frame, and better than untrained."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from device.models.bundle import read_bundle
from device.models.check import run_check
from device.sound.features import LOW_LATENCY

MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED = {"default": 8, "wide16": 16}


@pytest.mark.parametrize("name,units", SHIPPED.items())
def test_shipped_bundle_is_valid_small_and_low_latency(name, units):
    path = MODELS / name
    buf = io.StringIO()
    assert run_check([str(path)], out=buf) == 0, buf.getvalue()
    b = read_bundle(path)
    assert b.units == units and b.frame == LOW_LATENCY
    # float16 weights: the monotone decoder (non-negative kernels, a large negative
    # bias) loses 2.4 dB SC under int8 dynamic-range weights, float16 0.004 dB
    assert sum(f.stat().st_size for f in path.iterdir()) < 2_500_000
    tr = b.manifest["training"]
    assert tr["data"]["tracks"]["train"] and tr["data"]["tracks"]["test"]
    assert not set(tr["data"]["tracks"]["train"]) & set(tr["data"]["tracks"]["test"])
    m = tr["metrics"]
    assert m["test_mse_paper"] > 0 and abs(m["quantization_sc_loss_db"]) <= 0.5
    assert b.unit_stats is not None


@pytest.mark.train
def test_default_reconstructs_real_music_better_than_untrained(pushover_tracks, tmp_path):
    """On a pushover track held out of training, the shipped model beats random weights."""
    import keras

    from device.models.bundle import Bundle
    from train.bundle_writer import write_bundle
    from train.data import load_audio
    from train.evaluate import evaluate_audio
    from train.export import convert
    from train.models import build

    b: Bundle = read_bundle(MODELS / "default")
    test_ids = b.manifest["training"]["data"]["tracks"]["test"]
    held_out = [p for p in pushover_tracks if f"pushover/{p.name}" in test_ids]
    assert held_out, "default's test split should hold a pushover track"
    x = load_audio(held_out[0], b.frame.sample_rate)[: 180 * b.frame.sample_rate]
    trained, _ = evaluate_audio(b, x)

    keras.utils.set_random_seed(0)
    _, enc, dec = build(b.manifest["training"]["recipe"], b.n_bins, batch_size=1)
    tmp = tmp_path / "untrained"
    write_bundle(tmp, encoder=convert(enc, "float32"), decoder=convert(dec, "float32"),
                 name="untrained", frame=b.frame, normaliser=b.normaliser, units=b.units,
                 quantization="float32",
                 training={"global_max": b.manifest["training"]["global_max"]})
    untrained, _ = evaluate_audio(read_bundle(tmp), x)
    # Untrained weights still decode to about the normaliser's mean log spectrum,
    # a fair baseline; the trained model must beat it on every measure.
    assert trained["mse_paper"] < 0.8 * untrained["mse_paper"]
    assert trained["sc_db"] < untrained["sc_db"] - 1.5
    assert trained["lsd_db"] < untrained["lsd_db"] - 3
    assert np.isfinite(trained["snr_db"])
