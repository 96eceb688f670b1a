"""device.sound.audiofile.load_audio on real files: WAV written by soundfile, Ogg Vorbis music."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.sound.audiofile import load_audio
from device.errors import AudioFileError

MUSIC = Path("/usr/share/pushover/themes/aztec.ogg")  # 44.1 kHz Vorbis (harness.md)


def stereo_wav(path: Path, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([left, right], axis=1), rate, subtype="FLOAT")
    return (left + right) / 2


def test_stereo_is_mixed_to_mono_at_the_file_rate(tmp_path):
    want = stereo_wav(tmp_path / "a.wav", 22050, 0.5)
    x = load_audio(tmp_path / "a.wav", 22050)
    assert x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous
    np.testing.assert_allclose(x, want, atol=1e-6)


def test_resampled_length_and_pitch(tmp_path):
    stereo_wav(tmp_path / "a.wav", 44100, 1.0)
    x = load_audio(tmp_path / "a.wav", 22050)
    assert len(x) == math.ceil(44100 * 1 / 2)
    spectrum = np.abs(np.fft.rfft(x[2000:-2000] * np.hanning(len(x) - 4000)))
    peak_hz = np.argmax(spectrum) * 22050 / (len(x) - 4000)
    assert abs(peak_hz - 440) < 3


def test_a_part_of_a_file(tmp_path):
    want = stereo_wav(tmp_path / "a.wav", 22050, 1.0)
    x = load_audio(tmp_path / "a.wav", 22050, start_s=0.25, seconds=0.5)
    np.testing.assert_allclose(x, want[5512:5512 + 11025], atol=1e-6)
    tail = load_audio(tmp_path / "a.wav", 22050, start_s=0.9)
    assert len(tail) == 22050 - 19845


def test_real_music_decodes():
    x = load_audio(MUSIC, 22050, start_s=10.0, seconds=2.0)
    assert len(x) == 44100 and np.isfinite(x).all() and 0.01 < np.abs(x).max() <= 1.0


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk", b"not audio at all"])
def test_undecodable_files_name_the_path(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError, match="bad.wav"):
        load_audio(path, 22050)


def test_missing_file_and_empty_file_and_bad_arguments(tmp_path):
    with pytest.raises(AudioFileError, match="nosuch.wav"):
        load_audio(tmp_path / "nosuch.wav", 22050)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 22050)
    with pytest.raises(AudioFileError, match="empty.wav.*no samples"):
        load_audio(tmp_path / "empty.wav", 22050)
    stereo_wav(tmp_path / "a.wav", 22050, 0.1)
    with pytest.raises(AudioFileError, match="cannot start at 5 s"):
        load_audio(tmp_path / "a.wav", 22050, start_s=5)
    with pytest.raises(AudioFileError, match="sample_rate .* got 22050.0"):
        load_audio(tmp_path / "a.wav", 22050.0)  # type: ignore[arg-type]
    with pytest.raises(AudioFileError, match="start_s .* got nan"):
        load_audio(tmp_path / "a.wav", 22050, start_s=float("nan"))
    with pytest.raises(AudioFileError, match="seconds .* got 0"):
        load_audio(tmp_path / "a.wav", 22050, seconds=0)


def test_a_missing_file_says_no_such_file(tmp_path):
    """libsndfile reports a missing file as "System error" (failed on the old code)."""
    with pytest.raises(AudioFileError, match=r"'.*gone\.wav': no such file or directory$"):
        load_audio(tmp_path / "gone.wav", 22050)


def test_a_folder_or_an_unreadable_file_says_why(tmp_path):
    with pytest.raises(AudioFileError, match="is a directory"):
        load_audio(tmp_path, 22050)
