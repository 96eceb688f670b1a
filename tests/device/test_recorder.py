"""The recorder: exact WAV output, a real-time-safe push, drops counted not waited for."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.errors import ConfigError, DeviceError
from device.sound.recorder import STICK_FOLDER, Recorder, _new_file_name, recording_dir
from tests.allocations import Allocations, forked

ROOT = Path(__file__).resolve().parents[2]
SR = 22050
HOP = 128


def signal(seconds: float, seed: int = 0, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (int(seconds * SR),) if channels == 1 else (int(seconds * SR), channels)
    return rng.uniform(-0.9, 0.9, size=shape).astype(np.float32)


def push_all(rec: Recorder, x: np.ndarray, hop: int = HOP) -> None:
    for i in range(0, len(x) - hop + 1, hop):
        rec.push(x[i:i + hop])


def test_records_exactly_what_was_pushed(tmp_path):
    x = signal(1.0)
    rec = Recorder(tmp_path, SR, subtype="FLOAT")
    path = rec.start()
    push_all(rec, x)
    assert rec.stop() == path
    y, sr = sf.read(path, dtype="float32")
    assert sr == SR and rec.dropped == 0
    n = len(x) // HOP * HOP
    np.testing.assert_array_equal(y, x[:n])


def test_pcm16_default_and_stereo(tmp_path):
    x = signal(0.5, seed=1, channels=2)
    rec = Recorder(tmp_path, SR, channels=2)
    path = rec.start()
    push_all(rec, x)
    rec.stop()
    info = sf.info(path)
    assert (info.subtype, info.channels, info.format) == ("PCM_16", 2, "WAV")
    y, _ = sf.read(path, dtype="float32")
    np.testing.assert_allclose(y, x[:len(y)], atol=1.5 / 32768)
    assert len(y) == len(x) // HOP * HOP


def test_the_ring_wraps_while_the_writer_drains(tmp_path):
    """A ring of 0.05 s and hops pushed at about real-time pace: wraps ~40 times."""
    x = signal(2.0, seed=2)
    rec = Recorder(tmp_path, SR, buffer_s=0.05, subtype="FLOAT", poll_s=0.005)
    path = rec.start()
    for i in range(0, len(x) - HOP + 1, HOP):
        rec.push(x[i:i + HOP])
        if i % (HOP * 8) == 0:
            time.sleep(0.003)  # hops of audio arrive in time, not all at once
    rec.stop()
    y, _ = sf.read(path, dtype="float32")
    if rec.dropped == 0:  # on a loaded machine the writer may lag: then it must say so
        np.testing.assert_array_equal(y, x[:len(x) // HOP * HOP])
    else:
        assert len(y) + rec.dropped == len(x) // HOP * HOP


def test_a_full_ring_drops_and_counts_instead_of_waiting(tmp_path):
    rec = Recorder(tmp_path, SR, buffer_s=0.1, subtype="FLOAT", poll_s=30.0)
    x = signal(0.3, seed=3)
    path = rec.start()
    push_all(rec, x)  # the writer is asleep for 30 s: the ring fills
    capacity_hops = rec.capacity // HOP
    assert rec.dropped == (len(x) // HOP - capacity_hops) * HOP
    rec.stop()  # wakes the writer, which writes what the ring holds
    y, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(y, x[:capacity_hops * HOP])


def test_push_while_stopped_does_nothing(tmp_path):
    rec = Recorder(tmp_path, SR)
    rec.push(signal(0.01))
    assert rec.stop() is None
    assert list(tmp_path.iterdir()) == []


@forked  # tests/allocations.py: no other thread allocates in the child
def test_push_allocates_no_sample_buffers(tmp_path):
    """Peak traced memory over many pushes of 4096-sample blocks stays far below
    one block's copy (16 KB): only small view objects come and go."""
    rec = Recorder(tmp_path, SR, poll_s=30.0)
    block = signal(4096 / SR, seed=4)
    rec.start()
    rec.push(block)  # warm up
    with Allocations() as a:
        for _ in range(50):
            rec.push(block)
    rec.stop()
    assert rec.dropped == 0
    assert a.peak < 4096, a


def test_a_simulated_audio_thread_records_without_drops(tmp_path):
    """Hops at the real rate (128 samples, ~5.8 ms) from a thread, 1.5 s of them."""
    x = signal(1.5, seed=5)
    rec = Recorder(tmp_path, SR, subtype="FLOAT")
    path = rec.start()

    def audio_thread() -> None:
        t0 = time.monotonic()
        for k, i in enumerate(range(0, len(x) - HOP + 1, HOP)):
            rec.push(x[i:i + HOP])
            delay = t0 + (k + 1) * HOP / SR - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    t = threading.Thread(target=audio_thread)
    t.start()
    t.join()
    rec.stop()
    assert rec.dropped == 0
    y, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(y, x[:len(x) // HOP * HOP])


def test_toggle_makes_a_new_file_each_time(tmp_path):
    rec = Recorder(tmp_path, SR)
    first = rec.toggle()
    rec.push(signal(0.01))
    assert rec.toggle() == first and not rec.recording
    second = rec.toggle()
    rec.toggle()
    assert second != first and first.exists() and second.exists()


def test_directory_is_asked_at_each_start(tmp_path):
    stick = tmp_path / "stick"
    where = {"stick": None}
    rec = Recorder(lambda: recording_dir(where["stick"], tmp_path / "data"), SR)
    assert rec.start().parent == tmp_path / "data"
    rec.stop()
    stick.mkdir()
    where["stick"] = stick
    assert rec.start().parent == stick / STICK_FOLDER
    rec.stop()


def test_an_unwritable_folder_names_the_path(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    rec = Recorder(tmp_path / "file" / "sub", SR)
    with pytest.raises(DeviceError, match="cannot record into .*file/sub"):
        rec.start()
    assert not rec.recording


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="sample_rate must be an integer in 1000..384000"):
        Recorder(tmp_path, 22050.0)
    with pytest.raises(ConfigError, match="channels must be 1 or 2, got 3"):
        Recorder(tmp_path, SR, channels=3)


def test_file_names_run_out_with_the_limit_named(tmp_path):
    for name in ("aesynth-S.wav", "aesynth-S-1.wav"):
        (tmp_path / name).touch()
    assert _new_file_name(tmp_path, stamp="S", limit=3).name == "aesynth-S-2.wav"
    (tmp_path / "aesynth-S-2.wav").touch()
    with pytest.raises(DeviceError, match="the limit of 3 names a second"):
        _new_file_name(tmp_path, stamp="S", limit=3)


def test_recording_from_the_real_audio_thread_while_a_hostile_stick_imports(
        tmp_path, monkeypatch):
    """device.sound.audio's AudioLoop (ALSA file plugin, paced to the sample clock) plays a
    file and feeds the recorder, while hanging and memory-eating models are validated
    and killed on another thread: the loop keeps going and the WAV holds a gapless,
    exact run of what was played."""
    from device.sound.audio import AudioConfig, AudioLoop, FileSource
    from device.models.library import import_bundles
    from tests.device.audio_rig import alsa_config
    from tests.device.stick import good_bundle, hostile_model_bundle
    from tests.device.test_audio import PassThrough

    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path / "alsa")))
    period = 20000
    samples = (np.arange(period) / period * 1.8 - 0.9).astype(np.float32)  # unique values
    rec = Recorder(tmp_path / "rec", SR, subtype="FLOAT")
    loop = AudioLoop(PassThrough(HOP), FileSource(samples), sample_rate=SR,
                     commands=queue.SimpleQueue(), to_control=lambda cmd: None,
                     config=AudioConfig(playback_device="play_file", realtime=False,
                                        pacing="clock"),
                     recorder=rec)
    stick = tmp_path / "stick"
    hostile_model_bundle(stick / "a-hang", "hang", "hang")
    hostile_model_bundle(stick / "b-hog", "hog", "hog")
    good_bundle(stick / "c-fine", "fine")
    with loop:
        path = rec.start()
        hops_before = loop.stats.hops
        report = import_bundles(stick, tmp_path / "models", timeout_s=6.0, cpu_s=2)
        time.sleep(0.1)  # let the loop publish its counters
        hops_during = loop.stats.hops - hops_before
        rec.stop()
    assert loop.failure is None
    assert [i.name for i in report.imported] == ["fine"] and len(report.rejected) == 2
    assert hops_during > 100  # the hang alone burns 2 s of CPU: ~340 hops at real time
    assert rec.dropped == 0
    y, _ = sf.read(path, dtype="float32")
    assert len(y) >= hops_during * HOP // 2
    start = int(np.argmin(np.abs(samples - y[0])))
    expected = np.tile(samples, len(y) // period + 2)[start:start + len(y)]
    np.testing.assert_array_equal(y, expected)


def test_a_recording_killed_mid_take_keeps_a_valid_header(tmp_path):
    """SIGKILL (as good as a power cut for the header) after a few checkpoints: a strict
    reader (the standard library's wave) finds every checkpointed sample."""
    import os
    import signal as signals
    import struct
    import subprocess
    import sys
    import wave

    code = (
        "import sys, time\n"
        "from device.sound.recorder import Recorder\n"
        "from tests.device.test_recorder import push_all, signal\n"
        "rec = Recorder(sys.argv[1], 22050, checkpoint_s=0.1)\n"
        "path = rec.start()\n"
        "push_all(rec, signal(2.0, seed=11))\n"
        "while rec._read != rec._written:\n"
        "    time.sleep(0.01)\n"
        "n = rec.checkpoints\n"
        "while rec.checkpoints < n + 2:\n"  # two checkpoints after the last sample was written
        "    time.sleep(0.01)\n"
        "print(path, flush=True)\n"
        "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT)
    try:
        path = child.stdout.readline().strip()
    finally:
        os.kill(child.pid, signals.SIGKILL)
        child.wait(30)
    raw = open(path, "rb").read()
    at = raw.find(b"data")
    assert struct.unpack("<I", raw[at + 4:at + 8])[0] == len(raw) - at - 8
    x = signal(2.0, seed=11)
    n = (len(x) // HOP) * HOP
    with wave.open(path) as w:
        assert w.getnframes() == n and w.getframerate() == SR
        y = np.frombuffer(w.readframes(n), dtype="<i2") / 32768.0
    np.testing.assert_allclose(y, x[:n], atol=1.0 / 32768)


def test_checkpoint_interval_is_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint_s must be in \(0, 60\] seconds, got 0"):
        Recorder(tmp_path, SR, checkpoint_s=0)


FULL_AT = 40_000  # bytes: the file-size limit that stands for a full disk (~0.9 s of PCM_16)


@forked  # the file-size limit is the whole process's: it ends with the forked child
def test_a_write_failure_ends_the_recording_and_keeps_what_was_written(tmp_path):
    """A disk that fills mid-take (RLIMIT_FSIZE: the kernel refuses the write with EFBIG as
    a full disk does with ENOSPC): the recorder ends the recording by itself, the file
    keeps every sample written before the failure under a valid header, the audio
    thread's push writes no more, and the next toggle starts a fresh file.  (Failed on
    the old code: still "recording" after the error, the next toggle a stop.)"""
    import resource

    x = signal(3.0, seed=12)
    said: list[str] = []
    failed = threading.Event()
    rec = Recorder(tmp_path, SR, poll_s=0.01,
                   on_error=lambda text: (said.append(text), failed.set()))
    path = rec.start()
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (FULL_AT, hard))
    push_all(rec, x)
    assert failed.wait(10), "the write failure was never reported"
    assert not rec.recording
    assert said == [rec.error] and "\n" not in rec.error
    assert rec.error.startswith(f"cannot write {str(path)!r}") and "File too large" in rec.error
    written = rec._written
    push_all(rec, x[:HOP * 8])
    assert rec._written == written  # push no longer fills the ring: nothing reads it
    deadline = time.monotonic() + 10
    while any(t.name == "recorder" for t in threading.enumerate()) and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "recorder" for t in threading.enumerate())
    y, _ = sf.read(path, dtype="float32")  # closed: the header holds the length
    assert len(y) >= (FULL_AT - 100) // 2  # every sample up to the limit
    np.testing.assert_allclose(y, x[:len(y)], atol=1.5 / 32768)

    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again
    second = rec.toggle()
    assert second != path and rec.recording and rec.error is None
    push_all(rec, x[:SR // 2])
    assert rec.toggle() == second and not rec.recording
    assert sf.info(second).frames == SR // 2 // HOP * HOP
    assert sf.info(path).frames == len(y)  # the failed take untouched by the next
