"""``aesynth play --in FILE`` streams the file: bounded memory, seamless loop, rewind."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from device.errors import AudioFileError
from device.sound.audio import FileSource, StreamingFileSource
from device.sound.audiofile import BlockRing, FileStream
from device.sound.resample import resample_blocks
from tests.allocations import Allocations, forked
from tests.music import track

RATE = 22050


def pull(src: StreamingFileSource, n_hops: int, hop: int = 128, timeout: float = 20.0
         ) -> np.ndarray:
    """n_hops hops as the audio thread would take them, waiting for the decoder (a test
    must not depend on the machine's speed) instead of playing the silence it gives."""
    out, got = np.zeros(hop, np.float32), []
    deadline = time.monotonic() + timeout
    while len(got) < n_hops:
        assert time.monotonic() < deadline, "decoder too slow"
        if src.file.ready and src.file.ring.readable() >= hop:
            got.append(src.fill(out, None).copy())
        else:
            time.sleep(0.002)
    return np.concatenate(got)


def test_loop_is_seamless_and_resampled_like_the_whole(tmp_path):
    rng = np.random.default_rng(1)
    x = (0.3 * rng.standard_normal(10_000)).astype(np.float32)  # 0.23 s at 44.1 kHz
    sf.write(tmp_path / "a.wav", np.stack([x, x], axis=1), 44100, subtype="FLOAT")
    src = FileSource.stream(tmp_path / "a.wav", RATE)
    try:
        got = pull(src, 200)  # 25600 samples: the file 5 times over
    finally:
        src.close()
    # The same as resampling the file repeated end to end in one go: no seam at the joins.
    whole = resample_blocks(np.tile(x, 6), 44100, RATE)
    np.testing.assert_allclose(got, whole[:len(got)], atol=1e-5)


def test_same_rate_is_copied_exactly_and_stop_rewinds(tmp_path):
    x = np.linspace(-0.5, 0.5, 3000, dtype=np.float32)
    sf.write(tmp_path / "b.wav", x, RATE, subtype="FLOAT")
    src = FileSource.stream(tmp_path / "b.wav", RATE)
    try:
        got = pull(src, 50)
        np.testing.assert_array_equal(got, np.resize(x, len(got)))
        src.stop()
        assert not src.file.ready or src.fill(np.zeros(128, np.float32), None).max() == 0
        src.play_pause()
        np.testing.assert_array_equal(pull(src, 4), x[:512])
    finally:
        src.close()


def test_real_music_streams_like_the_whole_file_load():
    src = FileSource.stream(track("aztec"), RATE)
    try:
        got = pull(src, 400)
    finally:
        src.close()
    ref = FileSource.load(track("aztec"), RATE).samples[:len(got)]
    # scipy's resample_poly keeps up to the Nyquist frequency, ours to 0.45 of the lower
    # rate: compare below 8 kHz, where both are transparent.
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, 8000, fs=RATE, output="sos")
    a, b = sosfiltfilt(sos, got)[2048:-2048], sosfiltfilt(sos, ref)[2048:-2048]
    err_db = 10 * np.log10(np.sum((a - b) ** 2) / np.sum(b ** 2))
    assert err_db < -40, err_db


def test_missing_and_empty_files_are_named(tmp_path):
    with pytest.raises(AudioFileError, match="nope.wav.*no such file or directory"):
        FileSource.stream(tmp_path / "nope.wav", RATE)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), RATE)
    with pytest.raises(AudioFileError, match="no samples"):
        FileSource.stream(tmp_path / "empty.wav", RATE)


@forked  # tests/allocations.py: no other thread allocates in the child
def test_fill_allocates_nothing(tmp_path):
    sf.write(tmp_path / "c.wav", np.zeros(RATE * 2, np.float32), 48000)
    src = FileSource.stream(tmp_path / "c.wav", RATE)
    try:
        pull(src, 20)
        out = np.zeros(128, np.float32)
        ring = BlockRing(4096)
        ring.write(np.ones(4000, np.float32))
        with Allocations() as a:
            for _ in range(30):
                ring.read_into(out)
            for _ in range(300):
                src.fill(out, None)
            # The decoder thread allocates too (soundfile's blocks): only the peak of this
            # thread's share is bounded here by what one hop-sized array would cost.
    finally:
        src.close()
    assert isinstance(src.file, FileStream)
    assert a.peak < 64 * 1024, a  # decoder blocks (4096 x 2 x 4 B) at most
