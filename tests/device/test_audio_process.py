"""[audio] process = "own": the engine and the audio loop in a process of their own.

The real child (python -m device.sound.audio_child), the real engine and ALSA's file
and null plugins: the same samples as the audio thread in one process, every command
and snapshot across, a model step, a recording, and the faults (the child killed,
the app killed, garbage on the wire) ending cleanly with a line that names them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.app import EXIT_FAILURE, App, wav_device
from device.sound.wire import encode
from device.state import commands as c
from device.state.config import config_from_dict

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "tiny_bundle"
PAGED = ROOT / "tests" / "fixtures" / "paged_bundle"


def config(tmp_path, process="own", **sections):
    base = {
        "model": {"path": str(FIXTURE), "state_file": str(tmp_path / "state.json")},
        "play": {"mode": "resynth", "input": "none"},
        "audio": {"playback_device": "null", "realtime": False, "process": process},
        "midi": {"enabled": False}, "display": {"kind": "none"}, "buttons": {"kind": "none"},
        "storage": {"presets_dir": str(tmp_path / "presets"),
                    "recordings_dir": str(tmp_path / "rec")},
    }
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    return config_from_dict(base)


def wait_until(what, ok, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not ok() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ok(), what


def children_of(pid: int) -> list[int]:
    """The processes ``pid``'s threads started (any thread: each task lists its own)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:  # a thread that ended meanwhile
            pass
    return found


def audio_children_of(pid: int) -> list[int]:
    """Of :func:`children_of`, the audio processes (not a model's validation child,
    which comes and goes while a bundle loads)."""
    found = []
    for child in children_of(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        if b"device.sound.audio_child" in cmdline:
            found.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def test_own_process_plays_the_same_samples_as_the_audio_thread(tmp_path):
    """Generate mode from the first hop: nothing depends on timing (a streamed file's reader
    may still be filling when the first hops play, in either arrangement), so the two
    arrangements must agree sample for sample."""
    outs = {}
    for process in ("thread", "own"):
        out = tmp_path / f"{process}.wav"
        cfg = config(tmp_path, process, play={"mode": "generate", "input": "none"},
                     audio={"playback_device": wav_device(str(out))})
        app = App(cfg).start()
        try:
            wait_until("300 hops", lambda app=app: app.loop.stats.hops >= 300)
        finally:
            app.close()
        outs[process], _ = sf.read(out, dtype="int16")
    n = min(len(outs["thread"]), len(outs["own"]))
    assert n >= 250 * 128
    # the untrained tiny model generates quietly (about -58 dBFS), but not silence
    assert np.sqrt(np.mean(outs["own"][:n].astype(np.float64) ** 2)) > 10
    np.testing.assert_array_equal(outs["own"][:n], outs["thread"][:n])


def test_commands_snapshots_a_model_step_and_a_recording_cross(tmp_path, monkeypatch, caplog):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name, src in (("default", FIXTURE), ("paged", PAGED)):
        shutil.copytree(src, shipped / name)
    monkeypatch.setenv("AESYNTH_MODELS_DIR", str(tmp_path / "user"))
    cfg = config(tmp_path, model={"path": "", "shipped_dir": str(shipped)},
                 play={"mode": "generate"})
    caplog.set_level(logging.INFO)
    app = App(cfg).start()
    try:
        assert app.audio_process is not None and app.audio_process.pid != os.getpid()
        first = app.engine.snapshot.model
        app.post(c.SetGain(1, 0.3))
        wait_until("the fader move", lambda: app.engine.snapshot.controls.gain[1] == 0.3)
        app.post(c.SetMode("resynth"))
        wait_until("the mode", lambda: app.engine.snapshot.mode == "resynth")
        app.post(c.SetGain(99, 0.5))  # refused by the child's engine, said by the control thread
        wait_until("the refusal", lambda: "refused" in caplog.text)
        app.post(c.ToggleRecording())
        wait_until("recording", lambda: app.recording)
        wait_until("a second of it", lambda: app.loop.stats.hops > 400, 30)
        app.post(c.ToggleRecording())
        wait_until("recording saved", lambda: not app.recording)
        app.post(c.StepModel(1))
        wait_until("the next model", lambda: app.engine.snapshot.model != first)
        units = app.engine.snapshot.controls.units
        assert units == app.engine.snapshot.units and len(app.engine.snapshot.labels) == units
        assert app.loop.stats.xruns >= 0 and app.loop.hop_cost_percentiles()["p99"] > 0
    finally:
        assert app.close() == 0
    (take,) = (tmp_path / "rec").glob("*.wav")
    y, rate = sf.read(take)
    assert rate == 22050 and len(y) > 22050 // 2
    assert "SetGain(unit=99" in caplog.text


def test_the_child_dying_stops_the_app_with_exit_1(tmp_path, caplog):
    app = App(config(tmp_path)).start()
    try:
        wait_until("playing", lambda: app.loop.stats.hops > 20)
        os.kill(app.audio_process.pid, signal.SIGKILL)
        assert app.wait(20) == EXIT_FAILURE
    finally:
        app.close()
    assert "the audio process stopped: it exited with signal SIGKILL" in caplog.text


def test_garbage_on_the_wire_is_refused_then_a_garbled_stream_ends_the_child(tmp_path, capfd):
    app = App(config(tmp_path)).start()
    try:
        wait_until("playing", lambda: app.loop.stats.hops > 20)
        app.audio_process._write(encode({"t": "Explode", "x": 1}))  # one bad message
        app.post(c.SetGain(2, 0.25))                                 # the next still plays
        wait_until("the move after it", lambda: app.engine.snapshot.controls.gain[2] == 0.25)
        app.audio_process._write(b"\x05\x00\x00\x00{{{{{")          # a garbled stream
        assert app.wait(20) == EXIT_FAILURE
    finally:
        app.close()
    child = capfd.readouterr().err  # the child logs to the stderr it shares with the app
    assert "unknown command type 'Explode'" in child
    assert "the app's messages are garbled: frame of 5 bytes is not JSON" in child


def test_a_model_the_child_cannot_load_is_a_model_error_with_its_line(tmp_path):
    """The app reads a bundle before the child does (so the app's own checks come first);
    a bundle gone by the time the child reads it is the child's line, and it exits 3."""
    from device.errors import ModelError
    from device.sound.remote import AudioProcess

    process = AudioProcess(to_control=lambda cmd: None)
    with pytest.raises(ModelError, match=r"missing"):
        process.start({"model": str(tmp_path / "missing"), "mode": "generate"})
    process.stop()
    assert process.exit_code == 3


def test_the_child_ends_when_the_app_is_killed(tmp_path):
    cfg = tmp_path / "own.toml"
    cfg.write_text('[audio]\nprocess = "own"\nrealtime = false\n')
    app = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "play", "--config", str(cfg), "--model",
         str(FIXTURE), "--in", "none", "--output-device", "null", "--no-midi",
         "--display", "none", "--duration", "60"], cwd=ROOT, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.monotonic() + 30
        while (not audio_children_of(app.pid) and app.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.02)
        assert app.poll() is None, f"the app ended ({app.returncode}): {app.stderr.read()}"
        (child,) = audio_children_of(app.pid)
        wait_until("it plays", lambda: alive(child) and app.poll() is None, 5)
        time.sleep(1.0)
        app.kill()  # no clean-up at all: the child sees its input end
        app.wait()
        wait_until("the child gone", lambda: not alive(child), 10)
    finally:
        if app.poll() is None:
            app.kill()
        app.stderr.close()


def test_auto_is_its_own_process_at_the_low_profile_and_a_thread_at_the_safe_one(tmp_path):
    from device.errors import ConfigError

    def own(**audio):
        return config_from_dict({"audio": audio}).audio.own_process

    assert not own() and own(profile="low") and own(process="own")
    assert not own(profile="low", process="thread")
    with pytest.raises(ConfigError, match="audio.process must be one of auto, thread, own, "
                                          "got 'fork'"):
        config_from_dict({"audio": {"process": "fork"}})
    app = App(config(tmp_path, "auto", audio={"profile": "low"})).start()
    try:
        assert app.audio_process is not None and app.engine.hop_length == 64
        wait_until("playing at hop 64", lambda: app.loop.stats.hops > 100)
        assert app.loop.expected_latency()["total_ms"] > 0
    finally:
        assert app.close() == 0


def test_no_sound_card_falls_back_as_in_one_process(tmp_path, monkeypatch, caplog):
    """The child opens the card and says what failed; the app decides the fallback (null
    playback, no line-in) exactly as it does for its own audio thread."""
    from device.app import EXIT_AUDIO, StartError
    from tests.device.audio_rig import alsa_config

    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path / "alsa")))
    cfg = config(tmp_path, play={"input": "line"},
                 audio={"playback_device": "default", "capture_device": "default"})
    app = App(cfg)
    with caplog.at_level("INFO"):
        app.start()
    try:
        assert app.loop.config.playback_device == "null" and app.note == "no sound card"
        assert not app.loop.needs_capture  # the line-in became silence
        wait_until("playing", lambda: app.loop.stats.hops > 20)
        assert "capture device 'default'" in caplog.text and "null device" in caplog.text
    finally:
        app.close()
    strict = config(tmp_path, audio={"playback_device": "no_card", "fallback": "fail"})
    with pytest.raises(StartError) as e:
        App(strict).start()
    assert e.value.code == EXIT_AUDIO and "'no_card'" in str(e.value)


def test_stop_does_not_wait_behind_a_stalled_child_with_its_input_full(tmp_path):
    """A child stopped (SIGSTOP) while thousands of commands were sent filled its input
    pipe: the forward thread blocked in a write holding the write lock, and stop waited
    behind it forever (a newcomer's trial: the app ignored SIGTERM until SIGCONT)."""
    app = App(config(tmp_path)).start()
    child = app.audio_process.pid
    try:
        wait_until("playing", lambda: app.loop.stats.hops > 20)
        os.kill(child, signal.SIGSTOP)
        for i in range(20000):  # ~900 kB of frames: far past a pipe's 64 kB
            app.post(c.SetGain(i % 8, 0.5))
        time.sleep(0.5)
        t0 = time.monotonic()
        app.close()
        assert time.monotonic() - t0 < 15  # the 5 s grace, then a kill
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
    wait_until("the child gone", lambda: not alive(child), 10)


def test_a_recording_answer_that_comes_late_still_sets_the_state(tmp_path, monkeypatch):
    """The child stalled past the record timeout: the app said it could not start, the child
    started it on waking, and the next press then did the opposite of what it said."""
    from device.errors import DeviceError
    from device.sound import remote

    monkeypatch.setattr(remote, "REPLY_TIMEOUT_S", 0.5)
    app = App(config(tmp_path)).start()
    try:
        wait_until("playing", lambda: app.loop.stats.hops > 20)
        os.kill(app.audio_process.pid, signal.SIGSTOP)
        with pytest.raises(DeviceError, match="did not answer record within 0.5 s"):
            app.recorder.target.toggle()
        assert not app.recording
        os.kill(app.audio_process.pid, signal.SIGCONT)
        wait_until("the child's late answer", lambda: app.recording)
        assert app.recorder.target.toggle() is not None and not app.recording
    finally:
        app.close()
    assert len(list((tmp_path / "rec").glob("*.wav"))) == 1


FAKE_CHILD = """
import json, struct, sys, time
def send(m):
    b = json.dumps(m).encode()
    sys.stdout.buffer.write(struct.pack("<I", len(b)) + b)
    sys.stdout.buffer.flush()
sys.stdin.buffer.read(4)  # the start message's length: enough to know the app is there
snap = {"t": "snapshot", "mode": "generate", "model": "fake", "units": 1, "hops": 0,
        "motion": "stop", "note": "", "labels": ["u"],
        "controls": {"units": 1, "page": 0, "pages": 1, "gain": [1.0], "scale": [1.0],
                     "muted": [False], "lfo_rate": [1.0], "lfo_depth": [0.0],
                     "lfo_shape": ["sine"], "take": None, "take_state": "stop"}}
send({"t": "ready", "hop": 128, "sample_rate": 22050, "latency_samples": 256,
      "snapshot": snap})
send({"t": "snapshot", "mode": "generate"})             # a message the app cannot read
send({**snap, "model": "after"})                        # and the next one, which it can
sys.stdout.buffer.write(struct.pack("<I", 7) + b"garbled")  # then a garbled stream
sys.stdout.buffer.flush()
time.sleep(30)
"""


def test_a_recording_that_fails_mid_take_ends_and_the_app_says_so(tmp_path):
    """The disk fills under the child's recorder (a file-size limit set on the child, as
    prlimit(1) does: the write fails with EFBIG as a full disk's with ENOSPC): the app
    reads "not recording" and shows the error, the take keeps what was written, and the
    next press starts a new file.  (Failed on the old code: the app said "recording"
    until the next press, which then stopped instead of starting.)"""
    import resource

    app = App(config(tmp_path)).start()
    try:
        wait_until("playing", lambda: app.loop.stats.hops > 20)
        child = app.audio_process.pid
        app.post(c.ToggleRecording())
        wait_until("recording", lambda: app.recording)
        (first,) = (tmp_path / "rec").glob("*.wav")
        hard = resource.prlimit(child, resource.RLIMIT_FSIZE)[1]
        full_at = first.stat().st_size + 20_000  # bytes: ~0.5 s more of PCM_16 at 22050 Hz
        resource.prlimit(child, resource.RLIMIT_FSIZE, (full_at, hard))
        wait_until("the recording ended by itself", lambda: not app.recording, 30)
        assert (app.message or "").startswith(f"cannot write {str(first)!r}"[:90])
        resource.prlimit(child, resource.RLIMIT_FSIZE, (hard, hard))  # room again
        app.post(c.ToggleRecording())
        wait_until("a new recording", lambda: app.recording)
        time.sleep(0.5)
        app.post(c.ToggleRecording())
        wait_until("recording saved", lambda: not app.recording)
    finally:
        assert app.close() == 0
    takes = sorted((tmp_path / "rec").glob("*.wav"))
    assert len(takes) == 2 and first in takes
    # closed after the failure: its header counts every sample up to the limit
    assert sf.info(first).frames >= (full_at - 100) // 2
    assert sf.info(next(t for t in takes if t != first)).frames > 0


def test_a_bad_message_from_the_child_is_skipped_and_a_garbled_stream_ends_it(caplog):
    from device.sound.remote import AudioProcess

    process = AudioProcess(to_control=lambda cmd: None,
                           command=[sys.executable, "-c", FAKE_CHILD])
    engine = process.start({"model": "x"})
    t0 = time.monotonic()
    try:
        wait_until("the message after the bad one", lambda: engine.snapshot.model == "after")
        wait_until("the child ended", lambda: process.exit_code is not None, 10)
        assert time.monotonic() - t0 < 10  # killed, not left to sleep its 30 s
    finally:
        process.stop()
    assert "a 'snapshot' message could not be read: snapshot message is malformed" in (
        caplog.text)
    assert "its messages are garbled: frame of 7 bytes is not JSON" in caplog.text
