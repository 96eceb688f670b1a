"""``aesynth render``: the controls format and the command run with real arguments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.state import commands as c
from device.models.bundle import read_bundle
from device.cli import main
from device.sound.engine import Engine
from device.errors import ConfigError
from device.sound.render import TimedCommand, limiter_summary, parse_controls, render
from tests.music import clip, track

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny_bundle"


def test_parse_controls_orders_events_and_builds_commands():
    got = parse_controls([
        {"t": 2.5, "mode": "generate"},
        {"t": 1.5, "gain": [0, 0.3], "scale": [2, 1.8]},
        {"t": 2.0, "mute": 3, "muted": [4, True]},
        {"t": 0, "zero": True},
        {"t": 0.1, "reset": True},
    ])
    assert got == [
        TimedCommand(0.0, c.ZeroAll()),
        TimedCommand(0.1, c.ResetAll()),
        TimedCommand(1.5, c.SetGain(0, 0.3)),
        TimedCommand(1.5, c.SetScale(2, 1.8)),
        TimedCommand(2.0, c.ToggleMute(3)),
        TimedCommand(2.0, c.SetMute(4, True)),
        TimedCommand(2.5, c.SetMode("generate")),
    ]


@pytest.mark.parametrize("doc, match", [
    ({"t": 1}, "must be a JSON list"),
    ([{"gain": [0, 1]}], r"\.t must be seconds >= 0"),
    ([{"t": -1, "gain": [0, 1]}], r"\.t must be seconds >= 0"),
    ([{"t": 1, "volume": 3}], "unknown key.*volume"),
    ([{"t": 1}], "changes nothing"),
    ([{"t": 1, "gain": 0.3}], r"gain must be \[unit, finite number\]"),
    ([{"t": 1, "muted": [1, 1]}], r"muted must be \[unit, true\|false\]"),
    ([{"t": 1, "mode": "loud"}], "mode must be one of original, resynth, generate"),
])
def test_parse_controls_names_the_bad_field(doc, match):
    with pytest.raises(ConfigError, match=match):
        parse_controls(doc)


def test_render_applies_commands_at_their_hop():
    """A ZeroAll at 0.5 s silences resynth output from one hop (and the limiter's
    look-ahead) after 0.5 s on."""
    engine = Engine(read_bundle(TINY), mode="resynth", phase="advance")
    x = clip("aztec", seconds=1.0)
    y = render(engine, x, [TimedCommand(0.5, c.ZeroAll())])
    assert y.dtype == np.float32 and len(y) == len(x)
    R, rate = engine.hop_length, engine.frame.sample_rate
    boundary = -(-int(0.5 * rate) // R) * R
    assert np.max(np.abs(y[boundary - 20 * R:boundary])) > 0  # playing before
    assert np.max(np.abs(y[boundary + R + engine.limiter.delay:])) == 0.0  # after the gate


def test_aesynth_render_writes_the_wav(tmp_path, capsys):
    controls = tmp_path / "controls.json"
    controls.write_text(json.dumps([{"t": 0.3, "gain": [0, 0.2]}, {"t": 0.6, "mute": 1},
                                    {"t": 1.0, "mode": "original"}]))
    out = tmp_path / "out.wav"
    code = main(["render", "--model", str(TINY), "--mode", "resynth", "--in",
                 str(track("aztec")), "--out", str(out), "--controls", str(controls),
                 "--seconds", "1.5"])
    assert code == 0
    assert "3 control change(s)" in capsys.readouterr().out
    y, rate = sf.read(out)
    assert rate == 22050 and y.ndim == 1 and len(y) == int(1.5 * 22050)
    # After the switch to original mode the output is the track itself (delayed):
    # real music, so well above the untrained model's near-silent resynthesis.
    tail = y[int(1.2 * rate):]
    head = y[int(0.1 * rate):int(0.3 * rate)]
    assert np.sqrt(np.mean(tail ** 2)) > 0.01
    assert np.sqrt(np.mean(tail ** 2)) > 10 * np.sqrt(np.mean(head ** 2))


def test_aesynth_render_generate_needs_no_input(tmp_path, capsys):
    """The tiny model's quiet output never reaches the limiter: the summary says so
    plainly, not "at most 0.0 dB of gain reduction"."""
    out = tmp_path / "gen.wav"
    assert main(["render", "--model", str(TINY), "--mode", "generate", "--out", str(out),
                 "--seconds", "0.5", "--phase", "advance"]) == 0
    said = capsys.readouterr().out
    assert "limiter did not act in 87 hops" in said
    assert "0.0 dB" not in said
    y, rate = sf.read(out)
    assert len(y) == int(0.5 * rate) and np.all(np.isfinite(y))


@pytest.mark.parametrize("stats, said", [
    (dict(hops=87, limited_hops=0, max_reduction_db=0.0), "limiter did not act in 87 hops"),
    (dict(hops=87, limited_hops=2, max_reduction_db=0.04),
     "limiter did not act (under 0.05 dB of gain reduction in 2 of 87 hops)"),
    (dict(hops=87, limited_hops=5, max_reduction_db=0.05),
     "limiter active in 5 of 87 hops (at most 0.1 dB of gain reduction)"),
    (dict(hops=87, limited_hops=40, max_reduction_db=12.34),
     "limiter active in 40 of 87 hops (at most 12.3 dB of gain reduction)"),
])
def test_limiter_summary_says_when_the_limiter_did_not_act(stats, said):
    assert limiter_summary(**stats) == said


def test_aesynth_render_sets_the_levels_from_the_controls_file(tmp_path, capsys):
    """reference_dbfs sets generate's level at default controls with no input (the
    default model: RMS -18 dBFS, then -30); ceiling_dbfs caps every sample, with every
    knob up at a -10 dBFS reference (the controls' 6 dB of headroom then asks for -4 dBFS
    RMS: the limiter works, and the summary line says so)."""
    controls = tmp_path / "controls.json"
    controls.write_text(json.dumps(
        [{"t": 1.0, "reference_dbfs": -30}, {"t": 2.0, "ceiling_dbfs": -6},
         {"t": 2.0, "reference_dbfs": -10}]
        + [{"t": 2.0, "scale": [u, 2.0]} for u in range(8)]))
    out = tmp_path / "gen.wav"
    assert main(["render", "--model", str(ROOT / "models" / "default"), "--mode", "generate",
                 "--out", str(out), "--seconds", "3", "--controls", str(controls)]) == 0
    assert "dB of gain reduction" in capsys.readouterr().out
    y, rate = sf.read(out)

    def level(a, b):
        return 10 * np.log10(np.mean(y[int(a * rate):int(b * rate)] ** 2))

    assert level(0.5, 1.0) == pytest.approx(-18.0, abs=1.0)
    assert level(1.5, 2.0) == pytest.approx(-30.0, abs=1.0)
    assert np.max(np.abs(y[int(2.1 * rate):])) <= 10 ** (-6 / 20) + 1e-4  # 16-bit rounding
    assert np.max(np.abs(y[int(2.1 * rate):])) > 10 ** (-7 / 20)


@pytest.mark.parametrize("doc, match", [
    ([{"t": 1, "ceiling_dbfs": 3}], r"\.ceiling_dbfs must be a number in -20..0, got 3"),
    ([{"t": 1, "reference_dbfs": "loud"}], r"\.reference_dbfs must be a number in -60..0"),
])
def test_parse_controls_checks_levels(doc, match):
    with pytest.raises(ConfigError, match=match):
        parse_controls(doc)


def test_aesynth_render_reports_a_bad_controls_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"t": 1, "gain": [0, 7]}]')
    code = main(["render", "--model", str(TINY), "--in", str(track("aztec")), "--out",
                 str(tmp_path / "o.wav"), "--controls", str(bad), "--seconds", "1.5"])
    assert code == 1
    assert "gain must be in 0.0..1.0, got 7" in capsys.readouterr().out


@pytest.mark.parametrize("out, reason", [
    ("missing/out.wav", "no such directory"),
    (".", "it is a directory"),
    ("out.mp9", r"must end in \.wav or \.flac"),
])
def test_render_checks_its_output_before_rendering(tmp_path, capsys, monkeypatch, out, reason):
    """A bad --out is one line naming it, before any work (failed on the old code: a
    traceback after the whole render)."""
    import device.sound.render as render_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(render_module, "render", lambda *a, **k: pytest.fail("rendered"))
    code = main(["render", "--model", str(TINY), "--in", str(track("aztec")), "--out", out,
                 "--seconds", "0.5"])
    assert code == 1
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "--out" in line and out.rstrip("/") in line
    assert __import__("re").search(reason, line), line


def test_render_to_an_unwritable_folder_is_refused_before_rendering(capsys, monkeypatch):
    """sysfs refuses new files even to root: the probe file finds it."""
    import device.sound.render as render_module

    monkeypatch.setattr(render_module, "render", lambda *a, **k: pytest.fail("rendered"))
    assert main(["render", "--model", str(TINY), "--in", str(track("aztec")), "--out",
                 "/sys/aesynth-out.wav", "--seconds", "0.5"]) == 1
    assert "'/sys/aesynth-out.wav'" in capsys.readouterr().out


def test_every_controls_key_is_documented():
    """The controls format lives in docs/render.md: each key the parser takes has a row."""
    from device.sound.render import EVENT_KEYS

    doc = (ROOT / "docs" / "render.md").read_text()
    for key in EVENT_KEYS:
        assert f"| `{key}` |" in doc, key
