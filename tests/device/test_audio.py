"""The audio thread against real ALSA plugin devices and JACK's dummy driver."""

from __future__ import annotations

import errno
import queue
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from device.errors import AudioFileError, DeviceError
from device.sound.audio import (
    _PRIME_PERIODS,
    AudioConfig,
    AudioLoop,
    FileSource,
    LineSource,
    Rejected,
    SilentSource,
    open_pcm,
)
from device.state import commands as c
from device.state.controls import UnitControls
from tests.allocations import Allocations, forked
from tests.device.audio_rig import JackServer, alsa_config, read_raw, write_raw
from tests.music import track

RATE = 22050


class PassThrough:
    """A stand-in engine: the block unchanged; unit commands go to real UnitControls."""

    def __init__(self, hop: int = 128, *, stall_at: int | None = None, stall_s: float = 0.0):
        self.hop_length = hop
        self.controls = UnitControls(8)
        self.calls = 0
        self.stall_at, self.stall_s = stall_at, stall_s

    def process(self, block: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.calls == self.stall_at:
            time.sleep(self.stall_s)
        self.calls += 1
        out[:] = block
        return out

    def apply(self, cmd: object) -> bool:
        return self.controls.apply(cmd)


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def alsa(tmp_path, monkeypatch):
    conf = alsa_config(tmp_path)
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    return tmp_path


def ramp(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-0.9, 0.9, n)).astype(np.float32)


def make_loop(engine, source, *, device="play_file", capture="cap_file", **kw):
    cfg = AudioConfig(playback_device=device, capture_device=capture, realtime=False,
                      pacing="device", **kw)
    to_control: list[object] = []
    q: queue.SimpleQueue = queue.SimpleQueue()
    loop = AudioLoop(engine, source, sample_rate=RATE, commands=q, to_control=to_control.append,
                     config=cfg)
    return loop, q, to_control


# -- byte-exact, unpaced ------------------------------------------------------------
@pytest.mark.parametrize("fmt,dtype", [("FLOAT_LE", "<f4"), ("S16_LE", "<i2")])
def test_line_in_reaches_playback_byte_exact(alsa, fmt, dtype):
    x = ramp(RATE * 2)
    if dtype == "<i2":
        x = np.round(x * 32767)
    write_raw(alsa / "in.raw", x, dtype)
    loop, _, _ = make_loop(PassThrough(), LineSource(), sample_format=fmt, prefill=2)
    loop.start()
    wait_for(lambda: loop.stats.hops >= 200)
    loop.stop()
    out = read_raw(alsa / "out.raw", dtype)
    pre = 2 * 128
    assert len(out) >= pre + 200 * 128
    assert not out[:pre].any(), "prefill must be silence"
    body = out[pre:pre + 200 * 128]
    np.testing.assert_array_equal(body, read_raw(alsa / "in.raw", dtype)[: len(body)])
    assert loop.stats.xruns == 0 and loop.stats.hops >= 200


@pytest.mark.parametrize("fmt,dtype,full", [("FLOAT_LE", "<f4", 1.0), ("S16_LE", "<i2", 32767)])
def test_output_is_clipped_not_wrapped(alsa, fmt, dtype, full):
    class Loud(PassThrough):
        def process(self, block, out):
            out[::2], out[1::2] = 3.0, -3.0
            return out

    loop, _, _ = make_loop(Loud(), SilentSource(), sample_format=fmt)
    loop.start()
    wait_for(lambda: loop.stats.hops >= 20)
    loop.stop()
    out = read_raw(alsa / "out.raw", dtype)[256:256 + 20 * 128]
    assert out.max() == full and out.min() == -full - (dtype == "<i2")


def test_file_source_plays_resampled_file_and_loops(alsa, tmp_path):
    t = np.arange(4410) / 44100.0  # 0.1 s of 441 Hz at 44.1 kHz, stereo
    tone = 0.5 * np.sin(2 * np.pi * 441 * t)
    sf.write(tmp_path / "tone.wav", np.stack([tone, tone], axis=1), 44100)
    src = FileSource.load(tmp_path / "tone.wav", RATE)
    assert len(src.samples) == 2205
    loop, _, _ = make_loop(PassThrough(), src)
    loop.start()
    wait_for(lambda: loop.stats.hops >= 60)  # 7680 samples: loops the 2205-sample file 3 times
    loop.stop()
    out = read_raw(alsa / "out.raw")[256:256 + 60 * 128]
    expected = np.resize(src.samples, len(out))
    np.testing.assert_array_equal(out, expected)
    ref = 0.5 * np.sin(2 * np.pi * 441 * np.arange(2205) / RATE)
    assert np.max(np.abs(src.samples[100:-100] - ref[100:-100])) < 1e-3


def test_file_source_reads_real_music():
    src = FileSource.load(track("aztec"), RATE)
    info = sf.info(str(track("aztec")))
    assert abs(len(src.samples) - info.duration * RATE) < 2
    assert src.samples.dtype == np.float32 and 0.05 < np.abs(src.samples).max() <= 1.0


def test_file_source_transport():
    src = FileSource(np.arange(10, dtype=np.float32))
    out = np.zeros(4, np.float32)
    np.testing.assert_array_equal(src.fill(out, None), [0, 1, 2, 3])
    src.play_pause()
    np.testing.assert_array_equal(src.fill(out, None), [0, 0, 0, 0])
    src.play_pause()
    np.testing.assert_array_equal(src.fill(out, None), [4, 5, 6, 7])
    np.testing.assert_array_equal(src.fill(out, None), [8, 9, 0, 1])
    src.stop()
    assert not src.playing and src.position == 0
    src.play_pause()
    np.testing.assert_array_equal(src.fill(out, None), [0, 1, 2, 3])
    short = FileSource(np.array([1, 2, 3], np.float32))  # shorter than a hop: wraps within it
    np.testing.assert_array_equal(short.fill(np.zeros(7, np.float32), None), [1, 2, 3, 1, 2, 3, 1])


def test_file_source_refuses_missing_and_empty_files(tmp_path):
    with pytest.raises(AudioFileError, match="nope.wav"):
        FileSource.load(tmp_path / "nope.wav", RATE)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), RATE)
    with pytest.raises(AudioFileError, match="no samples"):
        FileSource.load(tmp_path / "empty.wav", RATE)


def test_commands_are_routed_at_hop_boundaries(alsa):
    write_raw(alsa / "in.raw", ramp(RATE * 4))
    engine = PassThrough()
    src = LineSource()
    loop, q, to_control = make_loop(engine, src)
    loop.start()
    q.put(c.SetGain(3, 0.25))
    q.put(c.PlayPause())
    q.put(c.StepModel(1))
    q.put(c.SetGain(99, 0.5))  # the engine refuses it: reported, not fatal
    q.put(c.SavePreset(2))
    wait_for(lambda: len(to_control) >= 3)
    wait_for(lambda: not loop.stats.playing)
    loop.stop()
    assert engine.controls.gain[3] == 0.25
    assert not src.playing
    assert to_control[0] == c.StepModel(1)
    assert isinstance(to_control[1], Rejected) and to_control[1].command == c.SetGain(99, 0.5)
    assert "unit must be in 0..7, got 99" in to_control[1].error
    assert to_control[2] == c.SavePreset(2)
    assert loop.running is False and loop.failure is None


def test_silent_source_needs_no_capture_device(alsa):
    loop, _, _ = make_loop(PassThrough(), SilentSource(), capture="no_such_capture")
    loop.start()
    wait_for(lambda: loop.stats.hops >= 10)
    loop.stop()
    assert not read_raw(alsa / "out.raw").any()


def test_missing_device_is_named(alsa):
    with pytest.raises(DeviceError, match="'no_such_pcm'"):
        make_loop(PassThrough(), SilentSource(), device="no_such_pcm")[0].start()
    with pytest.raises(DeviceError, match="capture device 'no_such_cap'"):
        make_loop(PassThrough(), LineSource(), capture="no_such_cap")[0].start()


def test_config_errors_name_the_value():
    with pytest.raises(DeviceError, match="prefill must be in 1..periods-1=3, got 4"):
        AudioConfig(periods=4, prefill=4)
    with pytest.raises(DeviceError, match="sample_format must be one of FLOAT_LE, S16_LE"):
        AudioConfig(sample_format="U8")
    assert AudioConfig(playback_device="null").clock_paced()
    assert AudioConfig(playback_device="file:'x.wav',wav").clock_paced()
    assert not AudioConfig(playback_device="default").clock_paced()
    assert not AudioConfig(playback_device="null", pacing="device").clock_paced()


def test_clock_pacing_keeps_null_device_at_real_time(alsa):
    loop, _, _ = make_loop(PassThrough(), SilentSource(), device="null")
    loop.config = AudioConfig(playback_device="null", realtime=False, pacing="clock")
    loop.start()
    time.sleep(0.5)
    hops = loop.stats.hops
    loop.stop()
    # Unpaced, null takes thousands of hops in 0.5 s; paced, about 86 plus the cushion.
    assert 20 <= hops <= 400


# -- the card disappearing ----------------------------------------------------------
class Unpluggable:
    """Opens real ALSA PCMs, but while ``unplugged`` behaves like a removed USB card:
    open fails and I/O raises ALSAAudioError, as pyalsaaudio does for -ENODEV."""

    def __init__(self) -> None:
        self.unplugged = False
        self.opened = 0

    def __call__(self, kind, device, **kw):
        if self.unplugged:
            raise DeviceError(f"cannot open ALSA {kind} device {device!r}: No such device")
        self.opened += 1
        return _Pcm(open_pcm(kind, device, **kw), self)


class _Pcm:
    def __init__(self, pcm, owner: Unpluggable):
        self.pcm, self.owner = pcm, owner

    def _check(self):
        if self.owner.unplugged:
            import alsaaudio
            raise alsaaudio.ALSAAudioError(f"{errno.errorcode[errno.ENODEV]} No such device")

    def write(self, data):
        self._check()
        return self.pcm.write(data)

    def read(self):
        self._check()
        return self.pcm.read()

    def drop(self):
        self._check()
        return self.pcm.drop()

    def avail(self):
        self._check()
        return self.pcm.avail()

    def info(self):
        return self.pcm.info()

    def close(self):
        self.pcm.close()


def test_card_that_disappears_is_reopened_while_commands_still_apply(alsa):
    engine = PassThrough()
    opener = Unpluggable()
    q: queue.SimpleQueue = queue.SimpleQueue()
    cfg = AudioConfig(playback_device="null", realtime=False, pacing="clock", retry_s=0.02,
                      retry_max_s=0.1)
    loop = AudioLoop(engine, SilentSource(), sample_rate=RATE, commands=q,
                     to_control=lambda cmd: None, config=cfg, pcm_opener=opener)
    loop.start()
    wait_for(lambda: loop.stats.hops >= 10)
    opener.unplugged = True
    wait_for(lambda: not loop.stats.connected)
    assert "No such device" in loop.stats.error
    q.put(c.SetScale(1, 1.5))  # applied while the card is gone
    wait_for(lambda: engine.controls.scale[1] == 1.5)
    hops = loop.stats.hops
    opener.unplugged = False
    wait_for(lambda: loop.stats.connected and loop.stats.hops > hops + 10)
    loop.stop()
    assert loop.stats.reconnects == 1 and opener.opened == 2
    assert loop.failure is None



# -- faults on the audio thread ------------------------------------------------------
class Hooked:
    """Opens real ALSA PCMs whose read/write can be made to misbehave, and records closes."""

    def __init__(self) -> None:
        self.short_reads = 0              # how many reads still to return half a period
        self.block_writes = threading.Event()
        self.blocked = threading.Event()  # set while a write is held
        self.release = threading.Event()
        self.closed: list[str] = []

    def __call__(self, kind, device, **kw):
        return _HookedPcm(open_pcm(kind, device, **kw), kind, self)


class _HookedPcm:
    def __init__(self, pcm, kind: str, owner: Hooked):
        self.pcm, self.kind, self.owner = pcm, kind, owner

    def read(self):
        n, data = self.pcm.read()
        if self.owner.short_reads > 0 and n > 1:
            self.owner.short_reads -= 1
            return n // 2, data[:len(data) // 2]
        return n, data

    def write(self, data):
        if self.owner.block_writes.is_set():  # like a card that stopped consuming
            self.owner.blocked.set()
            self.owner.release.wait(30)
        return self.pcm.write(data)

    def info(self):
        return self.pcm.info()

    def drop(self):
        return self.pcm.drop()

    def avail(self):
        return self.pcm.avail()

    def close(self):
        self.owner.closed.append(self.kind)
        self.pcm.close()


def hooked_loop(engine, source, opener):
    cfg = AudioConfig(playback_device="play_file", capture_device="cap_file", realtime=False,
                      pacing="device")
    to_control: list[object] = []
    q: queue.SimpleQueue = queue.SimpleQueue()
    loop = AudioLoop(engine, source, sample_rate=RATE, commands=q, to_control=to_control.append,
                     config=cfg, pcm_opener=opener)
    return loop, q, to_control


def test_stop_leaves_the_pcms_open_while_the_thread_is_still_in_a_write(alsa, caplog):
    opener = Hooked()
    loop, _, _ = hooked_loop(PassThrough(), SilentSource(), opener)
    loop.start()
    wait_for(lambda: loop.stats.hops >= 10)
    opener.block_writes.set()
    wait_for(opener.blocked.is_set)
    loop.stop(timeout=0.2)
    assert loop.running, "the write is still held"
    assert opener.closed == [], "closing a PCM under a thread inside write() is a use-after-free"
    assert "did not stop" in caplog.text
    opener.release.set()
    wait_for(lambda: not loop.running)
    loop.stop()
    assert opener.closed == ["playback"]
    assert loop.failure is None


def test_short_capture_read_counts_as_an_overrun_and_the_thread_goes_on(alsa):
    write_raw(alsa / "in.raw", ramp(RATE * 4))
    opener = Hooked()
    opener.short_reads = 3
    loop, _, _ = hooked_loop(PassThrough(), LineSource(), opener)
    loop.start()
    wait_for(lambda: loop.stats.hops >= 100)
    loop.stop()
    assert loop.failure is None
    assert loop.stats.overruns == 3 and opener.short_reads == 0


def test_a_command_the_engine_chokes_on_is_rejected_and_the_sound_goes_on(alsa):
    class Choking(PassThrough):
        def apply(self, cmd):
            if isinstance(cmd, c.SetGain) and not isinstance(cmd.value, float):
                raise TypeError(f"gain value must be a float, got {cmd.value!r}")
            return super().apply(cmd)

    engine = Choking()
    loop, q, to_control = hooked_loop(engine, SilentSource(), Hooked())
    loop.start()
    q.put(c.SetGain(1, "loud"))
    q.put(c.SetGain(2, 0.5))
    wait_for(lambda: engine.controls.gain[2] == 0.5)
    hops = loop.stats.hops
    wait_for(lambda: loop.stats.hops > hops + 10)
    loop.stop()
    assert loop.failure is None
    assert len(to_control) == 1 and isinstance(to_control[0], Rejected)
    assert to_control[0].command == c.SetGain(1, "loud")
    assert "TypeError: gain value must be a float, got 'loud'" in to_control[0].error


def test_a_flood_of_commands_is_spread_over_hops_in_order(alsa):
    class Journal(PassThrough):
        def __init__(self):
            super().__init__()
            self.events: list[object] = []

        def process(self, block, out):
            self.events.append("hop")
            return super().process(block, out)

        def apply(self, cmd):
            self.events.append(cmd)
            return super().apply(cmd)

    engine = Journal()
    loop, q, _ = hooked_loop(engine, SilentSource(), Hooked())
    posted = [c.SetGain(k % 8, (k % 100) / 100) for k in range(1000)]
    for cmd in posted:
        q.put(cmd)
    loop.start()
    wait_for(lambda: q.empty() and loop.stats.hops >= 20)
    loop.stop()
    applied = [e for e in engine.events if e != "hop"]
    assert applied == posted, "commands must be applied in the order posted"
    run, longest = 0, 0
    for e in engine.events:
        run = 0 if e == "hop" else run + 1
        longest = max(longest, run)
    assert longest == 64, f"at most 64 commands a hop (and the cap reached), got {longest}"

# -- paced by JACK's dummy driver --------------------------------------------------
@pytest.fixture(scope="module")
def jack128(tmp_path_factory):
    with JackServer(rate=RATE, period=128, log_dir=tmp_path_factory.mktemp("jack")) as server:
        yield server


@pytest.fixture
def jack_env(jack128, alsa, monkeypatch):
    for k, v in jack128.env.items():
        monkeypatch.setenv(k, v)
    return alsa


def assert_copy_with_gaps(out: np.ndarray, x: np.ndarray, *, prefill: int,
                          period: int) -> tuple[int, int]:
    """``out`` is what a line-in run wrote to a paced device: silence while the device
    is primed (``_PRIME_PERIODS`` periods after ``prefill`` frames, that much input
    read and dropped), ``prefill`` frames of silence again, then ``x`` exactly from
    where priming left it up to the first gap an xrun (or a cushion correction after a
    raced start) left (a paced run on a busy machine may have more than the one we
    cause), and it ends with ``x`` exactly again.  Returns (gap, index in x where the
    end resumes)."""
    lead = 2 * prefill + _PRIME_PERIODS * period
    start = (1 + _PRIME_PERIODS) * period
    assert not out[:lead].any(), "priming and the prefill are silence"
    body, x = out[lead:], x[start:]
    n = min(len(body), len(x))
    diff = np.flatnonzero(body[:n] != x[:n])
    gap = int(diff[0]) if len(diff) else n
    assert gap >= 128
    np.testing.assert_array_equal(body[:gap], x[:gap])
    tail = out[-4096:-2048]
    (k,) = np.flatnonzero(x == tail[0])
    np.testing.assert_array_equal(tail, x[k:k + 2048])
    return gap, int(k)


def test_paced_run_counts_an_xrun_recovers_and_stays_byte_exact(jack_env):
    x = ramp(RATE * 20, seed=3)
    write_raw(jack_env / "in.raw", x)
    engine = PassThrough(stall_at=300, stall_s=0.08)  # one hop 80 ms late: an xrun
    loop, _, _ = make_loop(engine, LineSource(), device="jk_out", capture="jk_in")
    loop.start()
    wait_for(lambda: loop.stats.hops >= 600)
    loop.stop()
    s = loop.stats
    assert s.xruns >= 1 and s.underruns >= 1, s
    assert s.hops >= 600 and loop.failure is None
    gap, resumed_at = assert_copy_with_gaps(read_raw(jack_env / "jk_out.raw"), x, prefill=256,
                                                 period=128)
    assert resumed_at > gap


def test_paced_period_larger_than_hop(tmp_path, alsa, monkeypatch):
    """JACK grants its own period (512) to a hop-128 model: four hops per period."""
    x = ramp(RATE * 10, seed=4)
    write_raw(alsa / "in.raw", x)
    with JackServer(rate=RATE, period=512, log_dir=tmp_path) as server:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        loop, _, _ = make_loop(PassThrough(128), LineSource(), device="jk_out", capture="jk_in")
        loop.start()
        wait_for(lambda: loop.stats.hops >= 100)
        loop.stop()
    assert loop._granted == {"playback": 512, "capture": 512}
    assert_copy_with_gaps(read_raw(alsa / "jk_out.raw"), x, prefill=1024, period=512)
    lat = loop.expected_latency()
    assert lat["playback_buffer_ms"] == pytest.approx(2 * 512 / RATE * 1000)


def test_without_capture_the_blocking_writes_keep_the_playback_buffer_full(jack_env):
    """Paced by playback alone, the buffer holds `periods`, not `prefill`, periods: the
    latency the app logs (and the cushion against xruns) is the whole buffer."""
    x = ramp(RATE * 4, seed=5)
    loop, _, _ = make_loop(PassThrough(128), FileSource(x), device="jk_out", periods=4,
                           prefill=1)
    assert loop.expected_latency()["playback_buffer_ms"] == pytest.approx(4 * 128 / RATE * 1e3)
    loop.start()
    try:
        wait_for(lambda: loop.stats.hops >= 300)
        # From this thread while the audio thread writes: alsa-lib locks each PCM call.
        queued = [loop._play.info()["buffer_size"] - loop._play.avail() for _ in range(50)]
    finally:
        loop.stop()
    assert np.median(queued) > 2 * 128, queued  # well past the one prefilled period
    line, _, _ = make_loop(PassThrough(128), LineSource(), device="jk_out", capture="jk_in",
                           periods=4, prefill=1)
    assert line.expected_latency()["playback_buffer_ms"] == pytest.approx(128 / RATE * 1e3)


def test_hop_cost_percentiles_cover_the_whole_run(alsa):
    class Slow(PassThrough):
        def process(self, block, out):
            if self.calls % 10 == 0:  # every tenth hop costs >= 2 ms
                time.sleep(0.002)
            return super().process(block, out)

    loop, _, _ = make_loop(Slow(), SilentSource())
    loop.start()
    wait_for(lambda: loop.stats.hops >= 300)
    loop.stop()
    pc = loop.hop_cost_percentiles((50, 95))
    assert pc["p50"] < 1000 <= 2000 <= pc["p95"]
    assert loop.stats.max_hop_us >= 2000


def test_stop_is_told_from_a_pause():
    """AudioStats.stopped: Stop (rewound) is not a pause; Play clears it."""
    from device.sound.audio import FileSource

    src = FileSource(np.zeros(100, dtype=np.float32), name="x")
    src.play_pause()
    assert not src.playing and not src.stopped
    src.play_pause()
    src.stop()
    assert not src.playing and src.stopped and src.position == 0
    src.play_pause()
    assert src.playing and not src.stopped


@forked  # tests/allocations.py: no other thread allocates in the child
def test_the_hot_loop_allocates_nothing_per_period(alsa):
    """A period of 1000 frames against a hop of 128: both FIFOs in use.  tracemalloc
    sees every numpy buffer and Python object of every thread (tests/allocations.py
    counts as retained only what the loop's own frames allocated).  Over 300 hops the peak
    may exceed the start by less than 6 KiB: pyalsaaudio's bytes for one period
    (4000 B) come and go each read (measured: 5.2 KB in all); any float array of the
    period's size (4000 B) or two of the hop's (512 B each) made per period would pass
    it.  Retained: under 2 KiB (the latest published AudioStats, the waiting thread's
    frames).  (S16_LE adds numpy's ~16 KB cast buffer per int16 → float conversion, as
    before this FIFO; not checked here.)"""
    write_raw(alsa / "in.raw", ramp(RATE * 30))
    loop, _, _ = make_loop(PassThrough(128), LineSource(), period=1000)
    loop.start()
    try:
        wait_for(lambda: loop.stats.hops >= 300)
        with Allocations() as a:
            hops = loop.stats.hops
            wait_for(lambda: loop._counts["hops"] >= hops + 300)
    finally:
        loop.stop()
    assert loop._period == 1000
    assert a.retained < 2048, a
    assert a.peak < 6144, a
