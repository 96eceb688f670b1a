"""Gain staging (device/sound/level.py): the output limiter, the program level, make-up gains."""


import numpy as np
import pytest

from device.errors import ConfigError
from device.sound.features import LOW_LATENCY, PAPER
from device.sound.level import Limiter, ProgramLevel, ResynthMakeUp
from tests.allocations import Allocations, forked


def limit(limiter: Limiter, x: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
    """(output, gain reduction in dB of each hop) for ``x``, hop by hop."""
    hops = len(x) // R
    y, gr = np.zeros(hops * R), np.zeros(hops)
    out = np.zeros(R)
    for h in range(hops):
        limiter.process(x[h * R:(h + 1) * R], out)
        y[h * R:(h + 1) * R] = out
        gr[h] = limiter.hop_reduction_db
    return y, gr


@pytest.mark.parametrize("frame", [LOW_LATENCY, PAPER], ids=["low_latency", "paper"])
def test_limiter_holds_full_scale_sine_and_loud_noise_then_recovers(frame):
    """A full-scale sine, then white noise at +20 dB (RMS 10), then a quiet sine: no
    output sample beyond ±1.0 (nor the -1 dBFS ceiling); once the loud part is over the
    gain reduction is below 0.1 dB half a second later (release 0.1 s, from 30 dB)
    and the quiet sine then comes out untouched, ``delay`` samples late."""
    sr, R = frame.sample_rate, frame.hop_length
    rng = np.random.default_rng(7)
    t = np.arange(2 * sr) / sr
    loud = np.concatenate([np.sin(2 * np.pi * 440.0 * t), 10.0 * rng.standard_normal(2 * sr)])
    quiet = 0.1 * np.sin(2 * np.pi * 440.0 * t)
    x = np.concatenate([loud, quiet])
    lim = Limiter(frame, ceiling_db=-1.0)
    y, gr = limit(lim, x, R)
    assert np.max(np.abs(y)) <= 10 ** (-1 / 20) + 1e-12
    assert np.max(np.abs(y)) > 0.85  # it limits, it does not mute
    sine_hops = slice(10, 2 * sr // R)
    assert 0.3 < gr[sine_hops].max() < 3.0  # the knee: a 0 dBFS sine loses about 1.3 dB
    assert gr[2 * sr // R + 10:4 * sr // R].mean() > 15  # the noise needs ~20 dB
    recovered = (4 * sr + sr // 2) // R  # half a second into the quiet part
    assert gr[recovered:].max() < 0.1
    d = lim.delay
    start = (4 * sr + 3 * sr // 2) // R * R  # 1.5 s in: 15 release time constants
    np.testing.assert_allclose(y[start + d:], x[start:len(y) - d], atol=1e-6)


def test_limiter_never_exceeds_the_ceiling_on_random_bursts():
    """Bursts of every level from -20 to +40 dBFS with sharp onsets: the bound holds at
    every sample, however the bursts fall across hops."""
    frame = LOW_LATENCY
    rng = np.random.default_rng(11)
    x = np.zeros(frame.sample_rate * 4)
    for start in rng.integers(0, len(x) - 400, 200):
        x[start:start + rng.integers(1, 400)] += 10 ** (rng.uniform(-20, 40) / 20) * rng.choice(
            [-1.0, 1.0])
    for ceiling in (-1.0, 0.0, -6.0):
        y, _ = limit(Limiter(frame, ceiling_db=ceiling), x, frame.hop_length)
        assert np.max(np.abs(y)) <= 10 ** (ceiling / 20) * (1 + 1e-12)


def test_limiter_gain_never_steps():
    """The gain falls over the look-ahead before a jump and never jumps itself: the
    largest sample-to-sample change of the gain stays far below the drop it makes."""
    frame = LOW_LATENCY
    x = np.full(frame.sample_rate // 2, 0.1)
    x[5000:8000] = 4.0  # +12 dBFS step: about 13 dB of reduction needed
    y, _ = limit(Limiter(frame), x, frame.hop_length)
    d = Limiter(frame).delay
    gain = y[d:] / x[:len(y) - d]
    assert gain.min() < 0.25
    assert np.max(np.abs(np.diff(gain))) < (1 - gain.min()) / 10


@forked  # tests/allocations.py: no other thread allocates in the child
def test_limiter_allocates_nothing_per_hop():
    frame = LOW_LATENCY
    lim = Limiter(frame)
    R = frame.hop_length
    x = 3.0 * np.random.default_rng(1).standard_normal(R * 50)
    blocks = [x[i * R:(i + 1) * R].copy() for i in range(50)]
    out = np.zeros(R)
    for b in blocks * 2:  # warm-up: numpy's first-use caches
        lim.process(b, out)
    with Allocations() as a:
        for b in blocks:
            lim.process(b, out)
        a.begin()
        for h in range(600):
            if h == 300:
                a.split()
            lim.process(blocks[h % 50], out)
    assert a.retained < 600, a  # one 16-byte object kept per hop would be 9.6 kB
    assert a.peak < 8 * R, a  # no array of a hop's size


def test_limiter_rejects_bad_settings():
    with pytest.raises(ConfigError, match=r"limiter ceiling_db must be in -20..0, got 3"):
        Limiter(LOW_LATENCY, ceiling_db=3)
    with pytest.raises(ConfigError, match=r"limiter release_s must be in 0.001..5, got 0"):
        Limiter(LOW_LATENCY, release_s=0)


def test_program_level_follows_the_input_and_ignores_silence():
    frame = LOW_LATENCY
    R = frame.hop_length
    level = ProgramLevel(frame, reference_dbfs=-18.0)
    assert level.dbfs == pytest.approx(-18.0)
    rng = np.random.default_rng(2)
    for _ in range(4 * frame.sample_rate // R):  # 4 s of noise at -26 dBFS RMS
        level.push(10 ** (-26 / 20) * rng.standard_normal(R))
    assert level.dbfs == pytest.approx(-26.0, abs=0.3)
    for _ in range(2 * frame.sample_rate // R):  # silence (and hum below the gate) holds it
        level.push(1e-4 * rng.standard_normal(R))
    assert level.dbfs == pytest.approx(-26.0, abs=0.3)
    with pytest.raises(ConfigError, match=r"program level tau_s must be in 0.1..60, got 0"):
        ProgramLevel(frame, tau_s=0)


def test_resynth_make_up_divides_out_the_faders():
    """Output 4 dB below the input at default controls: the make-up goes to +4 dB; with
    a fader that halves the decoded energy (S = S0/2, output 3 dB lower still) the gain
    stays at +4 dB, so the fader is heard."""
    m = ResynthMakeUp(LOW_LATENCY, seed=1.0)
    p_in = 1e-2
    for _ in range(2000):
        g = m.update(p_in, p_in * 10 ** (-4 / 10), 1.0, 1.0)
    assert 20 * np.log10(g) == pytest.approx(4.0, abs=0.05)
    for _ in range(2000):
        g = m.update(p_in, p_in * 10 ** (-7 / 10), 0.5, 1.0)
    assert 20 * np.log10(g) == pytest.approx(4.0, abs=0.1)


def test_headroom_gain_caps_only_what_rises_past_the_headroom():
    from device.sound.level import CONTROL_HEADROOM_DB, headroom_gain

    assert headroom_gain(1.0, 1.0) == 1.0
    assert headroom_gain(0.01, 1.0) == 1.0  # lowering is never limited
    assert headroom_gain(10 ** (CONTROL_HEADROOM_DB / 10), 1.0) == pytest.approx(1.0)
    # 30 dB up: brought back to +6 dB, a gain of -24 dB
    assert 20 * np.log10(headroom_gain(1e3, 1.0)) == pytest.approx(CONTROL_HEADROOM_DB - 30)
    assert headroom_gain(5.0, 0.0) == 1.0 and headroom_gain(0.0, 5.0) == 1.0


def test_resynth_make_up_lets_the_faders_raise_the_level_only_up_to_the_headroom():
    """Faders that raise the decoded energy 30 dB (every knob at 2): the output is held at
    6 dB over the input; 3 dB up is heard in full."""
    m = ResynthMakeUp(LOW_LATENCY, seed=1.0, headroom_db=6.0)
    p_in = 1e-2
    for _ in range(2000):
        g = m.update(p_in, p_in * 1e3, 1e3, 1.0)  # decoded 30 dB louder than the input
    assert 10 * np.log10(p_in * 1e3 * g * g / p_in) == pytest.approx(6.0, abs=0.1)
    for _ in range(4000):
        g = m.update(p_in, p_in * 2.0, 2.0, 1.0)
    assert 10 * np.log10(p_in * 2.0 * g * g / p_in) == pytest.approx(3.0, abs=0.1)


def test_resynth_headroom_holds_from_the_first_hop_of_a_knob_turned_up():
    """Settled at default controls, then every knob up (decoded 30 dB louder): from the
    first hop on, the output is at most the headroom over the input, not 16x full scale
    while the 2 s averages catch up (the playability report saw that)."""
    m = ResynthMakeUp(LOW_LATENCY, seed=1.0, headroom_db=6.0)
    p_in = 1e-2
    for _ in range(2000):
        m.update(p_in, p_in, 1.0, 1.0)
    worst = max(10 * np.log10(p_in * 1e3 * m.update(p_in, p_in * 1e3, 1e3, 1.0) ** 2 / p_in)
                for _ in range(500))
    assert worst <= 6.0 + 1e-9


def test_resynth_headroom_holds_through_silent_input():
    """Every knob up decodes loud even from silence (the units sit at their maxima): the
    make-up holds its gain through silence, the headroom still applies."""
    m = ResynthMakeUp(LOW_LATENCY, seed=1.0, headroom_db=6.0)
    for _ in range(100):
        m.update(1e-2, 1e-2, 1.0, 1.0)
    g = m.update(0.0, 1e-2 * 1e3, 1e3, 1.0)  # input silent, decoded 30 dB up
    assert 10 * np.log10(1e3 * g * g) <= 6.0 + 1e-9
