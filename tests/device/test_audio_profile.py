"""[audio] profile: the card's buffer and, for asymmetric frames, hop 64 / synthesis 128."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.errors import ConfigError, DeviceError
from device.models.bundle import read_bundle
from device.sound.audio import AudioConfig
from device.sound.features import LOW_LATENCY, PAPER
from device.sound.profiles import bundle_for, frame_for
from device.state.config import config_from_dict

ROOT = Path(__file__).resolve().parents[2]


def test_profiles_set_the_buffer_unless_the_keys_do():
    assert (AudioConfig().periods, AudioConfig().prefill) == (4, 2)
    low = AudioConfig(profile="low")
    assert (low.periods, low.prefill) == (3, 1)
    assert AudioConfig(profile="low", prefill=2).prefill == 2
    with pytest.raises(DeviceError, match="audio.profile must be one of safe, low, got 'fast'"):
        AudioConfig(profile="fast")
    cfg = config_from_dict({"audio": {"profile": "low"}})
    assert (cfg.audio.audio_config().periods, cfg.audio.audio_config().prefill) == (3, 1)
    with pytest.raises(ConfigError, match="audio.profile must be one of safe, low"):
        config_from_dict({"audio": {"profile": "fast"}})
    with pytest.raises(ConfigError, match="audio.period must be in 0..8192"):
        config_from_dict({"audio": {"period": -1}})


def test_low_profile_plays_the_asymmetric_frame_at_hop_64():
    f = frame_for(LOW_LATENCY, "low")
    assert (f.hop_length, f.synthesis_length, f.n_bins) == (64, 128, 1025)
    # The synthesis window is a Hann of 128 whose first sample is 0: 127 samples of support.
    assert f.latency_samples == 127 and f.latency_ms == pytest.approx(5.76, abs=0.01)
    assert frame_for(LOW_LATENCY, "safe") is LOW_LATENCY
    assert frame_for(PAPER, "low") is PAPER  # a Hann frame cannot shorten its window
    assert frame_for(f, "low") is f


def test_the_default_model_re_exported_for_the_low_profile():
    b = read_bundle(ROOT / "models" / "default")
    low = bundle_for(b, "low")
    assert low.frame.hop_length == 64 and low.frame.synthesis_length == 128
    assert low.encoder is b.encoder and low.normaliser is b.normaliser  # the same weights
    assert bundle_for(b, "safe") is b
