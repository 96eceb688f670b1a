"""Non-finite samples stop at the engine's edge (device/sound/finite.py): a NaN or inf in a
file, on line-in or out of a model leaves no DSP state poisoned and never reaches the output."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.cli import main
from device.models.bundle import read_bundle
from device.sound.engine import Engine
from device.sound.finite import INPUT_LIMIT, FiniteGuard
from device.sound.level import Limiter
from tests.allocations import Allocations, forked
from tests.music import clip

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny_bundle"
BAD = (np.nan, np.inf, -np.inf)


@pytest.fixture(scope="module")
def tiny():
    return read_bundle(TINY)


def run(engine: Engine, x: np.ndarray) -> np.ndarray:
    R = engine.hop_length
    out = np.zeros(R)
    y = np.zeros(len(x) // R * R)
    for h in range(len(x) // R):
        engine.process(x[h * R:(h + 1) * R], out)
        y[h * R:(h + 1) * R] = out
    return y


def test_guard_replaces_nan_and_inf_and_counts_them():
    g = FiniteGuard(6, limit=2.0)
    x = np.array([0.5, np.nan, np.inf, -np.inf, 1e300, -3.0])
    assert g.apply(x) == 3
    np.testing.assert_array_equal(x, [0.5, 0.0, 0.0, 0.0, 2.0, -2.0])
    assert (g.replaced, g.bad_hops) == (3, 1)
    assert g.apply(np.zeros(6)) == 0 and g.bad_hops == 1


@pytest.mark.parametrize("mode", ["original", "resynth", "generate"])
def test_a_bad_hop_is_a_silent_hop_and_leaves_no_state_poisoned(tiny, mode):
    """One hop holding NaN, +inf and -inf: the output is exactly the output for that hop
    zeroed, in every mode, and finite throughout (failed on the old code: NaN for ever)."""
    x = clip("aztec", seconds=1.0).astype(np.float64)
    R = tiny.frame.hop_length
    bad, zeroed = x.copy(), x.copy()
    bad[20 * R + 3:20 * R + 6] = BAD
    bad[30 * R + 7] = np.nan
    zeroed[20 * R + 3:20 * R + 6] = 0.0
    zeroed[30 * R + 7] = 0.0
    a, b = Engine(tiny, mode=mode), Engine(tiny, mode=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value" RuntimeWarning either
        ya = run(a, bad)
    yb = run(b, zeroed)
    assert np.isfinite(ya).all()
    np.testing.assert_array_equal(ya, yb)
    assert a.nonfinite_inputs == 4
    assert np.abs(ya[-len(ya) // 4:]).max() > 0  # still sounding


def test_huge_finite_input_is_clipped_not_overflowed(tiny):
    x = clip("aztec", seconds=0.5).astype(np.float64)
    x[1000] = 1e300  # squared: inf in any level meter
    engine = Engine(tiny, mode="resynth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = run(engine, x)
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert INPUT_LIMIT < 1e3


def test_a_model_output_of_nan_is_replaced(tiny):
    """A decoder (or encoder) that returns NaN or inf for one frame: the output stays finite
    and the engine plays on."""
    for mode, role in (("resynth", "encoder"), ("resynth", "decoder"), ("generate", "decoder")):
        engine = Engine(tiny, mode=mode)
        model = getattr(engine.model, role)
        real_run = model.run
        calls = {"n": 0}

        def broken(x, out, real_run=real_run, calls=calls):
            real_run(x, out=out)
            calls["n"] += 1
            if calls["n"] in (10, 11):
                out[0, ::3] = np.nan
                out[0, 1::3] = np.inf
            return out

        model.run = broken
        x = clip("aztec", seconds=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = run(engine, x)
        clean = run(Engine(tiny, mode=mode), x)
        assert calls["n"] > 11
        assert np.isfinite(y).all(), (mode, role)
        assert engine.model.nonfinite > 0
        tail = slice(-len(y) // 4, None)
        ratio = np.sqrt(np.mean(y[tail] ** 2) / np.mean(clean[tail] ** 2))
        assert 0.5 < ratio < 2.0, (mode, role, ratio)  # plays on as loud as a clean run


def test_the_limiter_recovers_from_a_nan_block(tiny):
    """The last stage guards itself too: whatever reaches it, its gain stays finite."""
    lim = Limiter(tiny.frame)
    R = tiny.frame.hop_length
    out = np.zeros(R)
    lim.process(np.full(R, np.nan), out)
    assert np.isfinite(out).all()
    loud = np.full(R, 2.0)
    for _ in range(20):
        lim.process(loud, out)
    assert np.isfinite(out).all() and 0 < out.max() <= 1.0


@forked  # tests/allocations.py: no other thread allocates in the child
def test_bad_hops_allocate_nothing(tiny):
    """The guard's slow path (NaN in every hop) keeps the engine's no-allocation rule
    (the same bounds as test_engine.test_process_allocates_nothing_per_hop)."""
    engine = Engine(tiny, mode="resynth")
    R = engine.hop_length
    x = np.asarray(clip("aztec", seconds=1.0), dtype=np.float32)
    blocks = [x[i * R:(i + 1) * R].copy() for i in range(len(x) // R)]
    for b in blocks:
        b[::17] = np.nan
    out = np.zeros(R, dtype=np.float32)
    for b in blocks[:300]:
        engine.process(b, out)
    with Allocations() as a:
        for b in blocks[:100]:
            engine.process(b, out)
        a.begin()
        for h in range(600):
            if h == 300:
                a.split()
            engine.process(blocks[h % len(blocks)], out)
    assert a.retained < 600, a
    assert a.peak < 4096, a


def test_render_of_a_float_wav_with_nan_writes_no_buzz(tmp_path, capsys):
    """`aesynth render` of a float WAV holding a few NaN and inf samples (failed on the old
    code: thousands of samples at -32768, a full-scale buzz)."""
    x = clip("aztec", seconds=1.0)
    bad = x.copy()
    bad[[5000, 5001, 9000, 15000]] = [np.nan, np.inf, -np.inf, np.nan]
    zeroed = x.copy()
    zeroed[[5000, 5001, 9000, 15000]] = 0.0
    sf.write(tmp_path / "bad.wav", bad, 22050, subtype="FLOAT")
    sf.write(tmp_path / "zeroed.wav", zeroed, 22050, subtype="FLOAT")
    for name in ("bad", "zeroed"):
        assert main(["render", "--model", str(TINY), "--in", str(tmp_path / f"{name}.wav"),
                     "--out", str(tmp_path / f"{name}_out.wav")]) == 0
    said = capsys.readouterr().out
    assert "4 non-finite input sample(s) replaced by silence" in said
    y, _ = sf.read(tmp_path / "bad_out.wav", dtype="int16")
    z, _ = sf.read(tmp_path / "zeroed_out.wav", dtype="int16")
    assert np.count_nonzero(y == -32768) == 0
    np.testing.assert_array_equal(y, z)


def test_play_of_a_float_wav_with_nan_plays_on(tmp_path, caplog):
    """`aesynth play --in bad.wav` through the real engine and the audio thread: the output
    is finite sound, not silence or a buzz."""
    from device.app import App
    from tests.device.test_app import app_config

    x = clip("aztec", seconds=1.0).copy()
    x[::2000] = np.nan
    sf.write(tmp_path / "in.wav", x, 22050, subtype="FLOAT")
    app = App(app_config(tmp_path, input=str(tmp_path / "in.wav"))).start()
    try:
        deadline = time.monotonic() + 30
        while app.loop.stats.hops < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.engine.nonfinite_inputs > 0
    finally:
        with caplog.at_level("WARNING"):
            app.close()
    assert "samples were NaN or infinite, played as silence" in caplog.text
    y, _ = sf.read(tmp_path / "out.wav", dtype="int16")
    assert len(y) >= 150 * 128
    assert np.count_nonzero(y == -32768) == 0 and np.abs(y[-8000:]).max() > 100


def test_a_controls_file_with_nan_is_refused_before_rendering():
    """Python's JSON reader accepts NaN and Infinity: refused by name, before any hop
    (failed on the old code: accepted, then a ControlError in the middle of the render)."""
    import json

    from device.errors import ConfigError
    from device.sound.render import parse_controls

    for doc in ('[{"t": 1, "gain": [0, NaN]}]', '[{"t": 1, "scale": [0, Infinity]}]'):
        with pytest.raises(ConfigError, match=r"controls\[0\]\.(gain|scale) must be \[unit, "
                                              r"finite number\]"):
            parse_controls(json.loads(doc))
