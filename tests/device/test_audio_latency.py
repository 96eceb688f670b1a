"""Any card rate and period, through ``plug:`` and directly, and the measured round trip.

The matrix: JACK's dummy driver at 22050, 44100 and 48000 Hz; the app asks
ALSA's jack plugin for periods of 32, 64, 117, 128, 256, 470 and 1024 frames;
through ``plug:`` (ALSA converts the rate, the app runs at the model's 22050
Hz) and directly (the card's rate; the app resamples).  ALSA's ``file``
plugin on top records what the app wrote and feeds capture: the output is
the input after the latency the app reports, within -60 dB (band-limited
noise below 7 kHz, inside the resampler's pass band).  Short signals (0.35 s
a case) keep the 42 cases to about a minute.

The round trip: ``jack_iodelay`` (jackd2) sends its test signal into the
app's capture port and measures it at the app's playback port, to a
thousandth of a frame; it must equal ``expected_latency()["total_frames"]``
within one frame, at start and after an xrun.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import subprocess
import time

import numpy as np
import pytest

from device.sound.audio import _PRIME_PERIODS, AudioConfig, AudioLoop, LineSource
from tests.device.test_audio import PassThrough, wait_for
from tests.jack import JackServer

MODEL_RATE = 22050
CARD_RATES = (22050, 44100, 48000)
PERIODS = (32, 64, 117, 128, 256, 470, 1024)


def band_limited(n: int, rate: int, seed: int) -> np.ndarray:
    from scipy.signal import firwin, lfilter

    rng = np.random.default_rng(seed)
    x = lfilter(firwin(255, 6000, fs=rate), 1.0, rng.standard_normal(n + 255))[255:]
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module", params=[(r, p) for r in CARD_RATES for p in PERIODS],
                ids=lambda rp: f"{rp[0]}Hz-{rp[1]}")
def card(request):
    rate, period = request.param
    with JackServer(sample_rate=rate, period=period) as server:
        yield server


def asound(directory, infile, *, ports: str = "system") -> str:
    cap, play = (("system:capture_1", "system:playback_1") if ports == "system"
                 else ("jack_delay:out", "jack_delay:in"))
    text = f"""</usr/share/alsa/alsa.conf>
pcm.jk {{ type jack playback_ports {{ 0 {play} }} capture_ports {{ 0 {cap} }} }}
pcm.plug_in {{ type file slave.pcm "plug:jk" file "/dev/null" infile "{infile}" format "raw" }}
pcm.plug_out {{ type file slave.pcm "plug:jk" file "{directory}/plug_out.raw" format "raw" }}
pcm.direct_in {{ type file slave.pcm "jk" file "/dev/null" infile "{infile}" format "raw" }}
pcm.direct_out {{ type file slave.pcm "jk" file "{directory}/direct_out.raw" format "raw" }}
"""
    path = directory / "asound.conf"
    path.write_text(text)
    return str(path)


def run_loop(engine, *, route: str, period: int, seconds: float, **kw) -> AudioLoop:
    latency = kw.pop("latency_samples", None)
    cfg = AudioConfig(playback_device=f"{route}_out", capture_device=f"{route}_in",
                      realtime=False, pacing="device", period=period, **kw)
    loop = AudioLoop(engine, LineSource(), sample_rate=MODEL_RATE,
                     commands=queue.SimpleQueue(), to_control=lambda _c: None, config=cfg,
                     latency_samples=latency)
    loop.start()
    try:
        wait_for(lambda: loop.stats.hops * engine.hop_length >= seconds * MODEL_RATE, 20)
    finally:
        loop.stop()
    return loop


def error_db(out: np.ndarray, x: np.ndarray, delay: int, *, skip: int) -> float:
    n = min(len(out) - delay, len(x)) - skip
    assert n > 2048, f"only {n} aligned samples"
    ref = x[skip:skip + n]
    got = out[delay + skip:delay + skip + n]
    return float(10 * np.log10(max(np.sum((got - ref) ** 2), 1e-30) / np.sum(ref ** 2)))


@pytest.mark.parametrize("route", ["plug", "direct"])
def test_output_is_the_input_after_the_reported_latency(card, route, tmp_path, monkeypatch):
    for k, v in card.env.items():
        monkeypatch.setenv(k, v)
    stream_rate = card.sample_rate if route == "direct" else MODEL_RATE
    period = card.period if route == "direct" else 0  # 0: one hop, plug grants what it can
    seconds = max(0.5, 40 * card.period / card.sample_rate)
    # Twice what is played: capture never runs dry.
    x = band_limited(int(2 * seconds * stream_rate) + 4096, stream_rate, seed=card.period)
    x.tofile(tmp_path / "in.raw")
    monkeypatch.setenv("ALSA_CONFIG_PATH", asound(tmp_path, tmp_path / "in.raw"))
    for _attempt in range(4):  # a busy shared machine can xrun a short run; retry it
        loop = run_loop(PassThrough(64), route=route, period=period, seconds=seconds)
        if loop.stats.xruns == 0:
            break
    assert loop.stats.xruns == 0, f"no run without an xrun in 4: {loop.stats}"
    assert loop.card_rate == stream_rate
    if route == "direct":
        assert loop._period == card.period
    lat = loop.expected_latency()
    frames = lat["total_frames"]
    assert frames == pytest.approx(round(frames), abs=1e-6), "a whole number of frames"
    written = np.fromfile(tmp_path / f"{route}_out.raw", dtype="<f4")
    # What was written: silence while priming (prefill + _PRIME_PERIODS periods, as
    # much input read and dropped; test_audio.assert_copy_with_gaps), prefill periods
    # of silence, then the output stream: the input delayed by the round trip less the
    # period collected and the prefill.  A cushion correction in the first periods
    # after the start (a raced start) moves what follows by the frames it added.
    P, pre = loop._period, loop.config.prefill
    lead, start = (2 * pre + _PRIME_PERIODS) * P, (1 + _PRIME_PERIODS) * P
    delay = lead - start + round(frames) - (1 + pre) * P + loop._counts["cushion_shift"]
    skip = 24 * loop._period  # past priming and the correction window
    db = error_db(written, x, delay, skip=skip)
    assert db <= -60, (f"{route} {card.sample_rate} Hz period {loop._period}: {db:.1f} dB, "
                       f"fixes {loop._counts}")


# -- the round trip, measured ----------------------------------------------------
def iodelay_frames(text: str) -> list[float]:
    return [float(m) for m in re.findall(r"([\d.]+) frames\s+[\d.]+ ms total roundtrip", text)]


def most_common(values: list[float]) -> float:
    return collections.Counter(round(v) for v in values).most_common(1)[0][0]


@pytest.mark.parametrize("rate,period,hop,profile", [
    (22050, 128, 128, "safe"),
    (22050, 64, 64, "low"),
    (48000, 256, 128, "safe"),
    (48000, 128, 64, "low"),
])
def test_measured_round_trip_equals_the_logged_one(rate, period, hop, profile, tmp_path,
                                                   monkeypatch):
    monkeypatch.setenv("ALSA_CONFIG_PATH",
                       asound(tmp_path, tmp_path / "unused.raw", ports="iodelay"))
    with JackServer(sample_rate=rate, period=period) as server:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        probe = subprocess.Popen(["stdbuf", "-oL", "jack_iodelay"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=server.env)
        try:
            time.sleep(0.3)
            # A stall at hop 400 forces an underrun: the cushion is rebuilt after it.
            engine = PassThrough(hop, stall_at=400, stall_s=0.1)
            cfg = AudioConfig(playback_device="jk", capture_device="jk", realtime=False,
                              pacing="device", profile=profile)
            loop = AudioLoop(engine, LineSource(), sample_rate=MODEL_RATE,
                             commands=queue.SimpleQueue(), to_control=lambda _c: None,
                             config=cfg)
            loop.start()
            try:
                wait_for(lambda: engine.calls > 400 + int(1.0 * MODEL_RATE / hop), 30)
            finally:
                loop.stop()
        finally:
            probe.terminate()
            text = probe.communicate(timeout=10)[0]
    expected = loop.expected_latency()["total_frames"]
    measured = iodelay_frames(text)
    assert loop.stats.xruns >= 1, "the stall must have caused an xrun"
    assert len(measured) >= 4, text[-2000:]
    # The last second, after the xrun: the configured cushion, not what the race left.
    assert abs(most_common(measured[-4:]) - expected) <= 1, (measured, expected)
    assert abs(most_common(measured) - expected) <= 1, (measured, expected)
    if os.environ.get("AESYNTH_PRINT_LATENCY"):
        print(rate, period, hop, profile, expected, collections.Counter(
            round(v, 1) for v in measured))


# -- the real engine, original mode, at the low-latency frame -----------------------
LOW_64 = dict(sample_rate=22050, n_fft=2048, win_length=2048, hop_length=64,
              window="asymmetric", synthesis_length=128)


@pytest.mark.parametrize("rate,route", [(48000, "direct"), (22050, "direct"),
                                        (44100, "plug")])
def test_the_engine_in_original_mode_plays_its_input_after_the_reported_latency(
        rate, route, tmp_path, monkeypatch):
    """Original mode is the analysis/synthesis round trip (tests/device/test_engine.py):
    through the audio thread, the resamplers and the FIFOs, the output is the input after
    the latency the app logs, the engine's own delay included (hop 64, synthesis 128)."""
    import dataclasses

    from device.models.bundle import read_bundle
    from device.sound.engine import Engine
    from device.sound.features import FrameConfig
    from tests.device.test_engine import TINY

    bundle = dataclasses.replace(read_bundle(TINY), frame=FrameConfig(**LOW_64))
    stream_rate = rate if route == "direct" else MODEL_RATE
    with JackServer(sample_rate=rate, period=256) as server:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        x = band_limited(int(3 * stream_rate), stream_rate, seed=7)
        x.tofile(tmp_path / "in.raw")
        monkeypatch.setenv("ALSA_CONFIG_PATH", asound(tmp_path, tmp_path / "in.raw"))
        for _attempt in range(4):
            engine = Engine(bundle, mode="original")
            loop = run_loop(engine, route=route, period=0, seconds=1.2, profile="safe",
                            latency_samples=engine.latency_samples)
            if loop.stats.xruns == 0:
                break
    assert loop.stats.xruns == 0, loop.stats
    P, pre = loop._period, loop.config.prefill
    frames = loop.expected_latency()["total_frames"]
    assert frames == pytest.approx(round(frames), abs=1e-6)
    lead, start = (2 * pre + _PRIME_PERIODS) * P, (1 + _PRIME_PERIODS) * P
    delay = lead - start + round(frames) - (1 + pre) * P + loop._counts["cushion_shift"]
    written = np.fromfile(tmp_path / f"{route}_out.raw", dtype="<f4")
    skip = 24 * P + 2048 * stream_rate // MODEL_RATE  # priming, and a first full frame
    db = error_db(written, x, delay, skip=skip)
    assert db <= -60, (rate, route, db, loop.expected_latency())
