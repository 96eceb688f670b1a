"""device.sound.fifo and device.sound.resample: exact delays, no allocation, music round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.sound.audiofile import load_audio
from device.sound.fifo import SampleFifo
from device.sound.resample import (
    ResampleError,
    StreamResampler,
    resample_blocks,
    round_trip_pair,
)
from tests.music import track

PAIRS = [(48000, 22050), (22050, 48000), (44100, 22050), (22050, 44100), (96000, 22050)]


def stream(rs: StreamResampler, x: np.ndarray, sizes) -> np.ndarray:
    out, got, i = np.zeros(rs.max_out, np.float32), [], 0
    for n in sizes:
        if i >= len(x):
            break
        c = rs.process(x[i:i + n], out)
        got.append(out[:c].copy())
        i += n
    return np.concatenate(got)


@pytest.mark.parametrize("rates", PAIRS)
def test_block_sizes_do_not_matter_and_the_delay_is_where_it_says(rates):
    a, b = rates
    x = np.zeros(a // 4, np.float32)
    x[1000] = 1.0
    rng = np.random.default_rng(0)
    ragged = stream(StreamResampler(a, b, max_in=1024), x, rng.integers(1, 1025, 10_000))
    steady = stream(StreamResampler(a, b, max_in=1024), x, [117] * 10_000)
    np.testing.assert_array_equal(ragged, steady)
    assert len(ragged) == -(-len(x) * b // a)
    rs = StreamResampler(a, b, max_in=1024)
    # The impulse's peak lands at its time plus the stated delay (to the nearest sample).
    assert abs(int(np.argmax(ragged)) - (1000 * b / a + rs.delay_out)) <= 0.5


@pytest.mark.parametrize("card", [44100, 48000, 96000])
@pytest.mark.parametrize("engine_delay", [0, 64, 128])
def test_round_trip_pair_lands_on_a_whole_card_frame(card, engine_delay):
    down, up = round_trip_pair(card, 22050, engine_delay=engine_delay, max_card=1024,
                               max_model=128)
    total = down.delay_in + up.delay_out + engine_delay * card / 22050
    assert total == pytest.approx(round(total), abs=1e-9)


@pytest.mark.parametrize("stopband", [80.0, 60.0])  # the safe and low profiles'
def test_round_trip_on_real_music_is_within_40_db(stopband):
    """22050 Hz music → 48 kHz → 22050 Hz (the two resamplers of a 48 kHz card; the
    second lengthened by under a sample so the round trip is a whole sample), aligned
    by the stated delays: the error is at least 40 dB down (-51 dB at either stop band:
    the band edge dominates it)."""
    from device.sound.resample import design

    x = load_audio(track("aztec"), 22050, seconds=6.0)
    up = StreamResampler(22050, 48000, max_in=128, attenuation_db=stopband)
    a0 = design(48000, 22050, attenuation_db=stopband)[2]
    down = StreamResampler(48000, 22050, max_in=279, attenuation_db=stopband,
                           half_length=a0 + (-(a0 + up.half_length)) % 320)
    z = stream(down, stream(up, x, [128] * 100_000), [279] * 100_000)
    shift = up.delay_in + down.delay_out  # 22050 Hz samples
    assert shift == round(shift)
    k = int(shift)
    ref, got = x[2048:len(z) - k - 2048], z[k + 2048:len(z) - 2048]
    err_db = 10 * np.log10(np.sum((got - ref) ** 2) / np.sum(ref ** 2))
    assert err_db <= -40, err_db


def test_whole_signal_helper_matches_length_and_timing():
    t = np.arange(48000) / 48000
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    y = resample_blocks(x, 48000, 22050)
    assert len(y) == 22050
    ref = np.sin(2 * np.pi * 1000 * np.arange(22050) / 22050)
    assert np.max(np.abs(y[500:-500] - ref[500:-500])) < 1e-3


_ALLOCATION_PROBE = """
import json, tracemalloc
import numpy as np
from device.sound.fifo import SampleFifo
from device.sound.resample import StreamResampler

rs = StreamResampler(48000, 22050, max_in=1024)
out = np.zeros(rs.max_out, np.float32)
blocks = [np.ones(n, np.float32) for n in (117, 256, 1024, 1, 470)]
fifo = SampleFifo(8192)
for i in range(50):  # warm up every path, the FIFO's wrap included
    c = rs.process(blocks[i % 5], out)
    fifo.push(out[:c])
    fifo.pop_into(out[:c])
tracemalloc.start()
start = tracemalloc.get_traced_memory()[0]
tracemalloc.reset_peak()
for i in range(500):
    c = rs.process(blocks[i % 5], out)
    fifo.push(out[:c])
    fifo.pop_into(out[:c])
current, peak = tracemalloc.get_traced_memory()
print(json.dumps([current - start, peak - start]))
"""


def test_process_allocates_nothing():
    """500 calls of process() and the FIFO, in a fresh interpreter: in the full suite other
    tests' leftover threads and state allocate meanwhile (CI kept 944 B in every window),
    and tracemalloc sees every thread."""
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _ALLOCATION_PROBE], capture_output=True,
                       text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr[-2000:]
    retained, peak = json.loads(r.stdout.strip().splitlines()[-1])
    # One output block would be >= 4 bytes x 500; numpy's reductions keep ~1 KiB scratch.
    assert retained < 500, retained
    assert peak < 2048, peak


def test_errors_name_the_limit():
    with pytest.raises(ResampleError, match="max_in=16"):
        StreamResampler(48000, 22050, max_in=16).process(np.zeros(17, np.float32),
                                                         np.zeros(64, np.float32))
    with pytest.raises(ResampleError, match="in_rate.*1000..384000.*500"):
        StreamResampler(500, 22050, max_in=16)


def test_fifo_wraps_and_refuses_what_does_not_fit():
    f = SampleFifo(10)
    out = np.zeros(4, np.float32)
    for k in range(20):
        f.push(np.arange(3, dtype=np.float32) + 3 * k)
        if len(f) >= 4:
            f.pop_into(out)
    assert len(f) <= 10
    f.clear()
    f.push_zeros(7)
    f.push(np.ones(3, np.float32))
    with pytest.raises(OverflowError, match="10 samples"):
        f.push(np.ones(1, np.float32))
    big = np.zeros(10, np.float32)
    f.pop_into(big)
    np.testing.assert_array_equal(big, [0] * 7 + [1] * 3)
    with pytest.raises(ValueError, match="holds 0"):
        f.pop_into(out)


def test_the_numpy_design_is_scipys_firwin():
    """The box designs its filters without importing scipy.signal (~80 MB, seconds)."""
    from scipy.signal import firwin, kaiser_beta, kaiserord

    from device.sound.resample import kaiser_length, kaiser_lowpass

    for width, cutoff in ((0.1 * 22050 / (48000 * 147 / 2), 0.45 * 22050 / (48000 * 147 / 2)),
                          (0.05, 0.4)):
        n = kaiserord(80, width)[0]
        assert kaiser_length(80, width) == n
        n |= 1
        np.testing.assert_allclose(kaiser_lowpass(n, cutoff, 80),
                                   firwin(n, cutoff, window=("kaiser", kaiser_beta(80))),
                                   atol=1e-15)


def shortfall(period: int, hop: int, card: int, cushion: int, periods: int) -> int:
    """The audio thread's sample counts (real resamplers, whole hops) over ``periods``:
    the most the output FIFO ever lacks of a period (<= 0: never short)."""
    down, up = round_trip_pair(card, 22050, engine_delay=0, max_card=period, max_model=hop)
    buf_d, buf_u = np.zeros(down.max_out, np.float32), np.zeros(up.max_out, np.float32)
    x, h = np.zeros(period, np.float32), np.zeros(hop, np.float32)
    pending, held, short = 0, cushion, -period
    for _ in range(periods):
        pending += down.process(x, buf_d)
        while pending >= hop:
            pending -= hop
            held += up.process(h, buf_u)
        short = max(short, period - held)
        held -= period
    return short


@pytest.mark.parametrize("period", [32, 64, 117, 128, 139, 256, 470, 1024])
@pytest.mark.parametrize("card", [44100, 48000])
def test_the_fifo_cushion_is_enough_and_no_more(period, card):
    import math

    from device.sound.audio import resampled_cushion

    cushion = resampled_cushion(period, 64, card, 22050)
    v = card // math.gcd(card, 22050)
    cycle = v * 64 // math.gcd(period, v * 64)  # periods before the counts repeat
    n = min(cycle + 10, 2000)
    assert shortfall(period, 64, card, cushion, n) <= 0
    if cushion and n > cycle:  # a whole cycle run: one frame less falls short somewhere
        assert shortfall(period, 64, card, cushion - 1, n) > 0
