"""The audio thread: ALSA capture → Engine.process → ALSA playback.

One dedicated thread owns the engine.  It reads a period from the capture PCM
(line-in) or takes hops from a source (a streamed file, silence), runs the
engine hop by hop, and writes periods to the playback PCM in blocking mode,
so the sound card paces it.  The card's period and rate are whatever it
grants: FIFOs (device.sound.fifo) join any period to the hop, and a card at
another rate than the model's is resampled in and out
(device.sound.resample); the round trip is a fixed number of card frames,
held at every start and xrun (:meth:`AudioLoop.expected_latency`,
:meth:`AudioLoop._resync`; docs/play.md, "Latency").

Real-time rules for everything called from :meth:`AudioLoop._stream` (the hot
loop): fill preallocated buffers in place (``out=``), allocate no arrays, do
no disk, MIDI or I²C I/O, log nothing per hop, take no lock, and drain the
command queue with a non-blocking check.  Slow work (model loading, presets,
recording files, shutdown) is handed to the app's control thread.

pyalsaaudio >= 0.11 returns ``-EPIPE`` from ``read()``/``write()`` on an xrun
and has already re-prepared the stream; any other failure raises
``ALSAAudioError`` and means the card went away: the loop closes both PCMs and
reopens them with exponential backoff while commands keep being applied.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from device.errors import AesynthError, AudioFileError, DeviceError
from device.sound.audiofile import FileStream, load_audio
from device.sound.scheduling import enable_realtime, name_thread
from device.sound.watchdog import PeriodWatchdog, close_pcm
from device.state import commands as c

log = logging.getLogger(__name__)

SOURCES = ("line", "file", "none")
SAMPLE_FORMATS = ("FLOAT_LE", "S16_LE")
PACINGS = ("auto", "device", "clock")
PROFILES = {"safe": (4, 2), "low": (3, 1)}  # profile: (periods, prefill)
_DRAIN_PER_HOP = 64   # commands applied per hop at most; the rest wait, in order, for the next
_HIST_US = 50_000     # per-hop cost histogram over the whole run: 1 µs bins up to 50 ms
_PUBLISH_EVERY_S = 0.05
_SERVO_PERIODS = 8   # periods sampled after each start before the cushion is set
_PRIME_PERIODS = 4   # periods of silence run when a device opens, before the real start


# -- configuration and published state ----------------------------------------
@dataclass(frozen=True)
class AudioConfig:
    """Where the sound goes and how the thread runs.

    playback_device / capture_device: ALSA PCM names.  The card runs at the
    rate and period it grants: at another rate than the model's the audio
    thread resamples (device.sound.resample), and a FIFO joins any period to
    the engine's hop (device.sound.fifo).  profile: ``"safe"`` (4 periods,
    prefill 2) or ``"low"`` (3 periods, prefill 1: the least latency).
    periods: playback buffer size in periods (2..16; None: the profile's).
    prefill: periods of silence queued before the first period, and again at
    every resynchronisation after an xrun (1..periods-1; None: the
    profile's); it is the playback latency.  period: frames to ask the card
    for (0: one hop, at the card's rate).
    pacing: ``device`` trusts blocking writes, ``clock`` sleeps to the sample
    clock (for ``null`` and ``file:`` devices that return at once), ``auto``
    picks ``clock`` for device names starting with ``null`` or ``file``.
    realtime: ask for SCHED_FIFO at ``priority`` and mlockall (a warning when
    not permitted).  retry_s / retry_max_s: backoff when the card disappears.
    """

    playback_device: str = "default"
    capture_device: str = "default"
    profile: str = "safe"
    periods: int | None = None
    prefill: int | None = None
    period: int = 0
    sample_format: str = "FLOAT_LE"
    pacing: str = "auto"
    realtime: bool = True
    priority: int = 70
    retry_s: float = 0.1
    retry_max_s: float = 2.0

    def __post_init__(self) -> None:
        def need(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise DeviceError(f"audio.{name} must be {allowed}, got {getattr(self, name)!r}")

        need("profile", self.profile in PROFILES, f"one of {', '.join(PROFILES)}")
        periods, prefill = PROFILES[self.profile]
        if self.periods is None:
            object.__setattr__(self, "periods", periods)
        if self.prefill is None:
            object.__setattr__(self, "prefill", min(prefill, self.periods - 1)
                               if isinstance(self.periods, int) else prefill)
        need("periods", isinstance(self.periods, int) and 2 <= self.periods <= 16, "in 2..16")
        need("period", isinstance(self.period, int) and 0 <= self.period <= 8192,
             "in 0..8192 frames (0: one hop)")
        need("prefill", isinstance(self.prefill, int) and 1 <= self.prefill < self.periods,
             f"in 1..periods-1={self.periods - 1}")
        need("sample_format", self.sample_format in SAMPLE_FORMATS,
             f"one of {', '.join(SAMPLE_FORMATS)}")
        need("pacing", self.pacing in PACINGS, f"one of {', '.join(PACINGS)}")
        need("priority", isinstance(self.priority, int) and 1 <= self.priority <= 99, "in 1..99")
        need("retry_s", self.retry_s > 0, "> 0 seconds")
        need("retry_max_s", self.retry_max_s >= self.retry_s, f">= retry_s={self.retry_s}")
        for name in ("playback_device", "capture_device"):
            need(name, isinstance(getattr(self, name), str) and getattr(self, name) != "",
                 "a non-empty ALSA PCM name")

    def clock_paced(self) -> bool:
        if self.pacing != "auto":
            return self.pacing == "clock"
        name = self.playback_device.removeprefix("plug:").lstrip("'\"")
        return name.startswith(("null", "file"))


@dataclass(frozen=True)
class AudioStats:
    """Immutable view of the audio thread, replaced (never mutated) as it runs."""

    hops: int = 0
    xruns: int = 0          # underruns + overruns
    underruns: int = 0
    overruns: int = 0
    reconnects: int = 0
    connected: bool = False
    playing: bool = True
    stopped: bool = False   # not playing because of Stop rather than a pause
    source: str = "none"
    last_hop_us: float = 0.0
    max_hop_us: float = 0.0
    # Longest time between two periods handed to ALSA.  It includes waits for the GIL and
    # the CPU, which the engine's own per-hop cost does not see; past the buffered cushion
    # (expected_latency's playback buffer) the card runs dry.  An upper bound on how late
    # the app was: a device that is late itself widens it too.
    max_gap_us: float = 0.0
    error: str | None = None  # the last device error, while disconnected


@dataclass(frozen=True)
class Rejected:
    """A command the engine refused (out of range, ...), passed to the control thread to log."""

    command: object
    error: str


class EngineLike(Protocol):
    hop_length: int

    def process(self, block: np.ndarray, out: np.ndarray) -> np.ndarray: ...
    def apply(self, cmd: object) -> bool: ...


# -- sources --------------------------------------------------------------------
class Source:
    """Where the engine's input comes from; play/pause and stop act on it."""

    kind = "none"
    needs_capture = False

    def __init__(self) -> None:
        self.playing = True
        self.stopped = False  # by Stop (rewound), not paused

    def play_pause(self) -> None:
        self.playing = not self.playing
        self.stopped = False

    def stop(self) -> None:
        self.playing = False
        self.stopped = True

    def fill(self, out: np.ndarray, captured: np.ndarray | None) -> np.ndarray:
        """Write one hop of input into ``out`` (float32); real-time safe."""
        out.fill(0.0)
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'playing' if self.playing else 'paused'}>"


class SilentSource(Source):
    """No input at all: for generate mode."""


class LineSource(Source):
    """Line-in from the capture PCM; paused means silence (capture keeps running)."""

    kind = "line"
    needs_capture = True

    def fill(self, out: np.ndarray, captured: np.ndarray | None) -> np.ndarray:
        if self.playing and captured is not None:
            out[:] = captured
        else:
            out.fill(0.0)
        return out


class FileSource(Source):
    """An audio file, mono, resampled once at load, looping; Stop rewinds it."""

    kind = "file"

    def __init__(self, samples: np.ndarray, *, name: str = "file"):
        super().__init__()
        x = np.ascontiguousarray(samples, dtype=np.float32)
        if x.ndim != 1 or len(x) == 0:
            raise AudioFileError(f"{name}: need a non-empty mono signal, got shape {x.shape}")
        self.samples = x
        self.name = name
        self.position = 0

    @classmethod
    def stream(cls, path: str | os.PathLike, sample_rate: int) -> StreamingFileSource:
        """Play ``path`` streamed (what ``aesynth play --in`` does): see
        :class:`StreamingFileSource`; raises AudioFileError naming the file."""
        return StreamingFileSource(FileStream(path, sample_rate))

    @classmethod
    def load(cls, path: str | os.PathLike, sample_rate: int) -> FileSource:
        """Read the whole file, mono, at ``sample_rate`` Hz (off the audio thread); for
        offline rendering and short files (memory grows with the length)."""
        mono = load_audio(path, sample_rate)
        if len(mono) == 0:
            raise AudioFileError(f"audio file {os.fspath(path)!r} has no samples")
        log.info("loaded %s: %.1f s at %d Hz", os.fspath(path), len(mono) / sample_rate,
                 sample_rate)
        return cls(mono, name=os.path.basename(os.fspath(path)))

    def stop(self) -> None:
        super().stop()
        self.position = 0

    def fill(self, out: np.ndarray, captured: np.ndarray | None) -> np.ndarray:
        if not self.playing:
            out.fill(0.0)
            return out
        x, n, pos = self.samples, len(out), self.position
        done = 0
        while done < n:  # a file shorter than a hop wraps several times
            take = min(n - done, len(x) - pos)
            out[done:done + take] = x[pos:pos + take]
            done += take
            pos = (pos + take) % len(x)
        self.position = pos
        return out

    def __repr__(self) -> str:
        return (f"<FileSource {self.name!r} {len(self.samples)} samples at {self.position} "
                f"{'playing' if self.playing else 'paused'}>")


class StreamingFileSource(Source):
    """An audio file played from a :class:`device.sound.audiofile.FileStream`: decoded
    and resampled a second ahead in the decoder's thread, looping seamlessly; Stop
    rewinds.  ``fill`` copies one hop out of the stream's ring (no allocation, no
    lock); a hop the decoder has not delivered yet is silence, counted in
    ``starved`` (the first hops after a start or a rewind, or a disk far too slow).
    """

    kind = "file"

    def __init__(self, stream: FileStream):
        super().__init__()
        self.file = stream
        self.name = os.path.basename(stream.name)
        self.starved = 0
        log.info("streaming %s: %.1f s at %d Hz, played at %d Hz", stream.name,
                 stream.duration_s, stream.file_rate, stream.sample_rate)

    def stop(self) -> None:
        self.playing = False
        self.file.rewind()

    def fill(self, out: np.ndarray, captured: np.ndarray | None) -> np.ndarray:
        if not self.playing or not self.file.ready or not self.file.ring.read_into(out):
            if self.playing:
                self.starved += 1
            out.fill(0.0)
        return out

    def close(self) -> None:
        self.file.close()

    def __repr__(self) -> str:
        return (f"<StreamingFileSource {self.name!r} starved={self.starved} "
                f"{'playing' if self.playing else 'paused'}>")


# The resamplers' stop band per profile (dB).  "low" takes 60 dB: 0.63 ms less round
# trip at 48 kHz; music's round-trip error stays -51 dB either way (the band edge
# dominates it: tests/device/test_resample.py), and aliases of a 48 kHz line-in's top
# octave stay 60 dB down.
RESAMPLER_STOPBAND_DB = {"safe": 80.0, "low": 60.0}


def make_source(kind: str, sample_rate: int) -> Source:
    """The source ``[play] input`` names: "line" (capture), "none" (silence) or an audio
    file streamed at ``sample_rate`` Hz.  Raises AudioFileError naming a file that cannot
    be read."""
    if kind == "line":
        return LineSource()
    if kind == "none":
        return SilentSource()
    return FileSource.stream(kind, sample_rate)


def resampled_cushion(period: int, hop: int, card_rate: int, model_rate: int) -> int:
    """Card frames of zeros the output FIFO must start with so that, reading ``period``
    frames at a time and running the engine a whole ``hop`` at a time through the two
    resamplers, a period's output is always ready: the largest shortfall over one
    whole cycle of the pattern (at most ``card/model * hop`` periods; the counts are
    :class:`device.sound.resample.StreamResampler`'s).  At most ``ceil((hop - 1) *
    card/model)``: after ``k`` periods the chain has handed out at least ``k * period
    - (hop - 1) * card/model`` frames."""
    g = math.gcd(card_rate, model_rate)
    u, v = model_rate // g, card_rate // g
    cycle = (v * hop) // math.gcd(period, v * hop)
    k = np.arange(1, cycle + 1, dtype=np.int64) * period
    model = -(-k * u // v)                   # model samples the down resampler gave
    card = -(-(model // hop) * hop * v // u)  # card frames the up resampler gave for the hops
    return max(0, int(np.max(k - card)))


# -- ALSA -------------------------------------------------------------------------
def open_pcm(kind: str, device: str, *, rate: int, periodsize: int, periods: int,
             sample_format: str) -> Any:
    """Open an ALSA PCM (``kind`` 'playback' or 'capture'), mono, blocking."""
    import alsaaudio

    pcm_type = alsaaudio.PCM_PLAYBACK if kind == "playback" else alsaaudio.PCM_CAPTURE
    fmt = getattr(alsaaudio, f"PCM_FORMAT_{sample_format}")
    try:
        return alsaaudio.PCM(pcm_type, alsaaudio.PCM_NORMAL, device=device, rate=rate,
                             channels=1, format=fmt, periodsize=periodsize, periods=periods)
    except alsaaudio.ALSAAudioError as e:
        err = DeviceError(f"cannot open ALSA {kind} device {device!r} at {rate} Hz, mono, "
                          f"{sample_format}, period {periodsize}: {e}")
        err.pcm_kind = kind  # the app falls back differently for playback and capture
        raise err from None


def _alsa_error() -> type[Exception]:
    import alsaaudio

    return alsaaudio.ALSAAudioError


class AudioLoop:
    """Runs ``engine`` in its own thread between a source and an ALSA playback PCM.

    commands: the app's queue; drained at every hop boundary without blocking.
    to_control: called (on the audio thread, must not block) with commands that
    are not for the audio thread (StepModel, presets, recording, Shutdown) and
    with :class:`Rejected` reports.  recorder: anything with a real-time safe
    ``push(block)``.  pcm_opener: how PCMs are opened (default :func:`open_pcm`).
    """

    def __init__(self, engine: EngineLike, source: Source, *, sample_rate: int,
                 commands: queue.SimpleQueue, to_control: Callable[[object], None],
                 config: AudioConfig | None = None, recorder: Any = None,
                 pcm_opener: Callable[..., Any] = open_pcm, latency_samples: int | None = None):
        self.engine = engine
        self.source = source
        self.sample_rate = int(sample_rate)
        self.hop = int(engine.hop_length)
        self.config = config or AudioConfig()
        self.commands = commands
        self.to_control = to_control
        self.recorder = recorder
        self._open = pcm_opener
        self._algorithmic = latency_samples
        self._dtype = np.float32 if self.config.sample_format == "FLOAT_LE" else np.int16
        self._play: Any = None
        self._cap: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._hist = np.zeros(_HIST_US, dtype=np.int64)     # hops by cost in whole µs
        self._counts = {"hops": 0, "underruns": 0, "overruns": 0, "reconnects": 0, "max_ns": 0,
                        "last_ns": 0, "max_gap_ns": 0, "cushion_fixes": 0,
                        "cushion_shift": 0}  # frames the corrections added (- removed)
        self.stats = AudioStats(playing=source.playing, source=source.kind)
        self.first_period_at: float | None = None  # time.monotonic() of the first write
        self._granted: dict[str, int] | None = None
        self.card_rate: int | None = None   # what the card granted (Hz)
        self._period: int | None = None     # card frames per read/write
        self._down = self._up = None        # resamplers when the card runs at another rate
        self._cushion = 0                   # card frames of zeros the output FIFO starts with
        self._dtype_size = np.dtype(self._dtype).itemsize
        self.warnings: list[str] = []

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> AudioLoop:
        """Open the PCMs (raising DeviceError naming the device) and start the thread."""
        if self._thread is not None:
            raise RuntimeError("AudioLoop already started")
        self._open_pcms()
        self._log_latency()
        self._thread = threading.Thread(target=self._run, name="audio", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the PCMs; idempotent.

        The PCMs are closed only once the thread has ended: a thread still
        blocked in an ALSA read/write (the GIL released) would otherwise use a
        closed PCM, and one in the reconnect loop could reopen after the close.
        """
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("audio thread did not stop within %.1f s; leaving its ALSA PCMs "
                            "open (closing them under it could crash)", timeout)
                return
        self._close_pcms()

    close = stop

    def __enter__(self) -> AudioLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def failure(self) -> BaseException | None:
        """The exception that ended the thread, if one did."""
        return self._failure

    def hop_cost_percentiles(self, percents: tuple[float, ...] = (50, 99, 99.9)
                             ) -> dict[str, float]:
        """Engine cost per hop in µs over the whole run, e.g. ``{"p99": 180.0}``
        (1 µs resolution; costs over 50 ms count as 50 ms)."""
        cum = np.cumsum(self._hist)
        total = int(cum[-1])
        out = {}
        for p in percents:
            key = f"p{p:g}"
            out[key] = float(np.searchsorted(cum, total * p / 100.0)) if total else 0.0
        return out

    def expected_latency(self) -> dict[str, float]:
        """Round-trip latency in ms, line-in to line-out, by where it comes from.

        With capture (line-in), the loop is paced by capture reads and the
        playback cushion is re-established to exactly ``prefill`` periods at
        every start and resynchronisation (see :meth:`_resync`), so the round
        trip is a fixed number of card frames, ``total_frames``:
        ``(1 + prefill) * period`` (one period collected, ``prefill`` queued:
        capture_period_ms + playback_buffer_ms) + the FIFO cushion that lets
        any period meet the hop (fifo_ms: ``hop - gcd(hop, period)``, or
        :func:`resampled_cushion` when resampling) + the engine's
        stream delay (algorithmic_ms: ``latency_samples - hop``; the hop's
        collection is in the two before) + the resamplers' delays.
        Without capture (a file or no input on a real card) each blocking
        write returns as soon as a period is free, so the buffer runs full:
        ``periods`` periods; on clock-paced devices ``prefill``.
        """
        rate = self.card_rate or self.sample_rate
        ms = 1000.0 / rate
        period = (self._period or self._ask_period(rate))
        engine_delay = (self._algorithmic or self.hop) - self.hop
        resampler = (self._down.delay_in + self._up.delay_out) if self._down is not None else (
            0.0)
        if self.source.needs_capture or self.config.clock_paced():
            held = self.config.prefill
        else:
            held = self.config.periods
        parts = {
            "algorithmic_ms": engine_delay * 1000.0 / self.sample_rate,
            "capture_period_ms": period * ms if self.source.needs_capture else 0.0,
            "playback_buffer_ms": held * period * ms,
            "fifo_ms": self._cushion * ms if self.source.needs_capture else 0.0,
            "resampler_ms": resampler * ms,
        }
        parts["total_ms"] = sum(parts.values())
        parts["total_frames"] = parts["total_ms"] / ms
        parts["card_rate"] = float(rate)
        return parts

    def __repr__(self) -> str:
        s = self.stats
        state = "running" if self.running else "stopped"
        return (f"<AudioLoop {state} {self.config.playback_device!r} hop={self.hop} "
                f"hops={s.hops} xruns={s.xruns} source={self.source.kind}>")

    # -- PCMs ----------------------------------------------------------------------
    def _ask_period(self, rate: int) -> int:
        if self.config.period:
            return self.config.period
        return -(-self.hop * rate // self.sample_rate)

    def _open_pcms(self) -> None:
        cfg = self.config
        kw = dict(rate=self.sample_rate, periodsize=self._ask_period(self.sample_rate),
                  periods=cfg.periods, sample_format=cfg.sample_format)
        play = self._open("playback", cfg.playback_device, **kw)
        cap = None
        try:
            if self.source.needs_capture:
                cap = self._open("capture", cfg.capture_device, **kw)
            prate, pperiod = self._granted_of(play, "playback", cfg.playback_device)
            crate, cperiod = (self._granted_of(cap, "capture", cfg.capture_device)
                              if cap is not None else (prate, pperiod))
            if crate != prate:
                raise DeviceError(f"ALSA capture device {cfg.capture_device!r} runs at "
                                  f"{crate} Hz and playback device {cfg.playback_device!r} "
                                  f"at {prate} Hz: the two must share a rate")
        except BaseException:
            play.close()
            if cap is not None:
                cap.close()
            raise
        self._play, self._cap = play, cap
        self._granted = {"playback": pperiod, "capture": cperiod}
        self._setup_buffers(prate, cperiod if cap is not None else pperiod)
        # Periods that never complete (a device that stopped answering) raise DeviceStalled
        # instead of blocking the thread forever: device/sound/watchdog.py.
        self._watchdog = PeriodWatchdog(period=pperiod, sample_rate=prate,
                                        periods=cfg.periods, stopping=self._stopping)
        self._watchdog.watch(play, f"playback {cfg.playback_device}")
        if cap is not None:
            self._watchdog.watch(cap, f"capture {cfg.capture_device}", cperiod)

    def _granted_of(self, pcm: Any, kind: str, device: str) -> tuple[int, int]:
        info = pcm.info()
        rate, period = int(info["rate"]), int(info["period_size"])
        if rate != self.sample_rate or period != self.hop:
            log.info("ALSA %s device %r: %d Hz, period %d frames (model %d Hz, hop %d)",
                     kind, device, rate, period, self.sample_rate, self.hop)
        return rate, period

    def _setup_buffers(self, rate: int, period: int) -> None:
        """Preallocate everything the hot loop touches, for a card at ``rate`` Hz
        moving ``period`` frames per read/write (whatever it granted)."""
        from device.sound.fifo import SampleFifo
        from device.sound.resample import round_trip_pair

        same = (rate == self.card_rate and period == self._period)
        self.card_rate, self._period = rate, period
        H = self.hop
        engine_delay = (self._algorithmic or H) - H
        if rate != self.sample_rate:
            if not same or self._down is None:
                self._down, self._up = round_trip_pair(
                    rate, self.sample_rate, engine_delay=engine_delay, max_card=period,
                    max_model=H, attenuation_db=RESAMPLER_STOPBAND_DB[self.config.profile])
            self._cushion = resampled_cushion(period, H, rate, self.sample_rate)
            down_max, up_max = self._down.max_out, self._up.max_out
        else:
            self._down = self._up = None
            self._cushion = H - math.gcd(period, H)
            down_max = up_max = H
        self._in_fifo = SampleFifo(H + down_max + period + 8)
        self._out_fifo = SampleFifo(self._cushion + 2 * period + 2 * up_max + 2 * H + 8)
        self._cap_f = np.zeros(period, dtype=np.float32)
        self._down_out = np.zeros(down_max, dtype=np.float32)
        self._up_out = np.zeros(up_max, dtype=np.float32)
        self._hop_in = np.zeros(H, dtype=np.float32)
        self._hop_cap = np.zeros(H, dtype=np.float32)
        self._hop_out = np.zeros(H, dtype=np.float32)
        self._out = np.zeros(period, dtype=np.float32)
        self._scratch = np.zeros(period, dtype=np.float32)
        self._wire = np.zeros(period, dtype=self._dtype)  # what ALSA gets
        self._silence = np.zeros(period, dtype=self._dtype)
        self._servo_errs = np.zeros(_SERVO_PERIODS, dtype=np.int64)
        self._servo_left = 0
        self._cap_buffer = (int(self._cap.info()["buffer_size"]) if self._cap is not None
                            else 0)

    def _close_pcms(self) -> None:
        for pcm, kind in ((self._play, "playback"), (self._cap, "capture")):
            if pcm is not None:
                close_pcm(pcm, kind)  # gives up on a close that hangs (a dead JACK server)
        self._play = self._cap = None

    def _log_latency(self) -> None:
        lat = self.expected_latency()
        log.info("audio: card %d Hz period %d, model %d Hz hop %d, playback %r, capture %r; "
                 "expected round trip %.2f ms = %.0f frames (algorithmic %.1f + capture "
                 "period %.1f + playback buffer %.1f + FIFO %.2f + resampler %.2f ms)",
                 self.card_rate, self._period, self.sample_rate, self.hop,
                 self.config.playback_device,
                 self.config.capture_device if self.source.needs_capture else None,
                 lat["total_ms"], lat["total_frames"], lat["algorithmic_ms"],
                 lat["capture_period_ms"], lat["playback_buffer_ms"], lat["fifo_ms"],
                 lat["resampler_ms"])

    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        name_thread()
        if self.config.realtime:
            self.warnings = enable_realtime(self.config.priority)
            for w in self.warnings:
                log.warning("audio: %s", w)
        alsa_error = _alsa_error()
        try:
            while not self._stopping.is_set():
                if self._play is None and not self._reopen():
                    break
                try:
                    self._stream()
                except (alsa_error, DeviceError) as e:
                    log.error("audio device lost: %s; reopening with backoff", e)
                    self._close_pcms()
                    self._publish(connected=False, error=str(e))
        except BaseException as e:  # the app's supervisor loop sees it through .failure
            log.exception("audio thread died")
            self._failure = e
        finally:
            self._publish(connected=False)

    def _reopen(self) -> bool:
        """Reopen the PCMs with exponential backoff, applying commands while waiting."""
        delay = self.config.retry_s
        while not self._stopping.is_set():
            try:
                self._open_pcms()
            except (DeviceError, _alsa_error()) as e:
                self._publish(connected=False, error=str(e))
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not self._stopping.is_set():
                    self._drain()
                    time.sleep(min(0.02, delay))
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            self._counts["reconnects"] += 1
            log.warning("audio device back after reconnect #%d", self._counts["reconnects"])
            return True
        return False

    def _resync(self, have_first: bool = False) -> None:
        """Start (or restart after an xrun) with the configured cushion, never a raced one.

        Both streams are dropped; the pipeline restarts from its initial state
        (FIFO cushion of zeros, resamplers cleared; the engine keeps its
        state); with capture, the first period is read (dropped, capture
        restarts on that read and returns at a period boundary with nothing
        older waiting), then, half a period later, ``prefill`` periods of
        silence start playback.  So every start leaves exactly ``prefill``
        periods queued when the first processed period follows, and the round
        trip is :meth:`expected_latency`'s ``total_frames`` every time (the
        cushion check in :meth:`_servo` corrects a start that raced anyway).
        ``have_first``: :meth:`_prime` found an unpaced device and has read the
        first period already.
        """
        play, cap, P = self._play, self._cap, self._period
        for pcm in (play, cap):
            if pcm is not None and not have_first:
                pcm.drop()
        self._in_fifo.clear()
        self._out_fifo.clear()
        if self._down is not None:
            self._down.reset()
            self._up.reset()
        if cap is not None:
            self._out_fifo.push_zeros(self._cushion)
            if not have_first:
                self._read_period()  # an overrun or a short read again: zeros, counted
                # Start playback mid-period, not at the boundary the read returned on:
                # on JACK the playback client's callback for this period runs next to
                # the capture client's (in parallel in JACK2), and a start racing it
                # came out a period short (jack_iodelay through `aesynth play`).
                time.sleep(0.5 * P / self.card_rate)
        for _ in range(self.config.prefill):
            if not self._watchdog.wait(play):
                return  # stopping
            play.write(self._silence)
        self._servo_left = _SERVO_PERIODS

    def _prime(self) -> bool:
        """Run both streams for a few periods of silence before the real start.

        Measured with jack_iodelay on ALSA's jack plugin: the first start after
        opening came out a period short of the cushion in some starts, while
        every restart after an xrun came out exact; so the first start is made
        a restart.  Costs ``_PRIME_PERIODS`` periods of silence when a device
        opens.  An unpaced device (ALSA's file/null plugins: a full capture
        buffer at once) needs none: returns True, its first period read and
        kept for :meth:`_resync`.
        """
        for pcm in (self._play, self._cap):
            pcm.drop()
        self._read_period()
        if self._cap.avail() >= self._cap_buffer:
            return True
        for _ in range(self.config.prefill):
            self._play.write(self._silence)
        for _ in range(_PRIME_PERIODS):
            self._play.write(self._silence)
            self._read_period()
        return False

    def _read_period(self) -> bool:
        """One capture period into ``_cap_f``; False (zeros, an overrun counted) on an
        overrun (-EPIPE) or a short read, or when stopping (the read is not entered: it
        may never return).  Raises DeviceStalled when no period comes (the watchdog)."""
        if not self._watchdog.wait(self._cap):
            self._cap_f.fill(0.0)
            return False
        n, data = self._cap.read()  # pyalsaaudio allocates the bytes; we copy them once
        view = self._cap_f
        if n != len(view) or len(data) != len(view) * self._dtype_size:
            view.fill(0.0)
            self._counts["overruns"] += 1
            return False
        if self._dtype == np.float32:
            view[:] = np.frombuffer(data, np.float32)
        else:
            np.multiply(np.frombuffer(data, np.int16), 1.0 / 32768, out=view)
        return True

    def _stream(self) -> None:
        """The hot loop: runs until stop, raises the ALSA error when the card goes."""
        play, cap = self._play, self._cap
        src, engine, recorder = self.source, self.engine, self.recorder
        H, P = self.hop, self._period
        in_fifo, out_fifo, down, up = self._in_fifo, self._out_fifo, self._down, self._up
        cap_f, down_out, up_out = self._cap_f, self._down_out, self._up_out
        hop_in, hop_cap, hop_out = self._hop_in, self._hop_cap, self._hop_out
        out, wire, scratch = self._out, self._wire, self._scratch
        counts, hist = self._counts, self._hist
        wait = self._watchdog.wait
        top = _HIST_US - 1
        stopping, perf = self._stopping, time.perf_counter_ns
        is_float = self._dtype == np.float32
        clock = self.config.clock_paced()
        period_s = P / self.card_rate
        target = self.config.prefill * P
        buffer_size = int(play.info()["buffer_size"])
        self._publish(connected=True, error=None)
        self._resync(have_first=cap is not None and self._prime())
        fresh = cap is not None  # _resync has read the first capture period already
        next_t = time.monotonic() + self.config.prefill * P / self.card_rate
        last_pub = 0.0
        last_done = 0  # perf() when the previous period was handed over (0: none yet)
        while not stopping.is_set():
            if cap is not None:
                if not fresh and not self._read_period():
                    if stopping.is_set():
                        return
                    self._resync()  # -EPIPE (re-prepared) or a short read: counted
                fresh = False
                if down is not None:
                    in_fifo.push(down_out[:down.process(cap_f, down_out)])
                else:
                    in_fifo.push(cap_f)
            while len(out_fifo) < P:
                if cap is not None:
                    if len(in_fifo) < H:
                        break
                    in_fifo.pop_into(hop_cap)
                self._drain()
                src.fill(hop_in, hop_cap if cap is not None else None)
                t0 = perf()
                engine.process(hop_in, hop_out)
                cost = perf() - t0
                counts["last_ns"] = cost
                hist[min(cost // 1000, top)] += 1
                counts["hops"] += 1
                if cost > counts["max_ns"]:
                    counts["max_ns"] = cost
                if recorder is not None:
                    recorder.push(hop_out)
                if up is not None:
                    out_fifo.push(up_out[:up.process(hop_out, up_out)])
                else:
                    out_fifo.push(hop_out)
            out_fifo.pop_into(out)
            np.clip(out, -1.0, 1.0, out=out)
            if is_float:
                wire[:] = out
            else:
                # x32768 and back is exact for every int16 value; +1.0 saturates.
                np.multiply(out, 32768.0, out=scratch)
                np.clip(scratch, -32768.0, 32767.0, out=scratch)
                np.rint(scratch, out=scratch)
                np.copyto(wire, scratch, casting="unsafe")
            if cap is not None:
                skip = self._servo(cap, play, target, buffer_size)
                if skip:
                    counts["cushion_fixes"] += 1
                    if skip < 0:  # too little queued: silence first
                        if not wait(play):
                            return  # stopping
                        play.write(self._silence[:min(-skip, P)])
                        counts["cushion_shift"] += min(-skip, P)
                        skip = 0
                    else:
                        counts["cushion_shift"] -= min(skip, P)
            else:
                skip = 0
            if not wait(play):
                return  # stopping: never enter a write that may not return
            if skip >= P:
                pass  # too much queued: this period is not played
            elif play.write(wire[skip:] if skip else wire) == -errno.EPIPE:
                # underrun: re-prepared; restore the cushion
                counts["underruns"] += 1
                self._resync()
                fresh = cap is not None
            done = perf()
            if last_done and done - last_done > counts["max_gap_ns"]:
                counts["max_gap_ns"] = done - last_done
            last_done = done
            if self.first_period_at is None:
                self.first_period_at = time.monotonic()
            if clock:
                next_t += period_s
                lag = next_t - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
                elif lag < -0.5:  # hopelessly behind (suspended?): restart the clock
                    next_t = time.monotonic()
            now = time.monotonic()
            if now - last_pub >= _PUBLISH_EVERY_S or self.stats.xruns != (
                    counts["underruns"] + counts["overruns"]):
                last_pub = now
                self._publish(connected=True)

    def _servo(self, cap: Any, play: Any, target: int, buffer_size: int) -> int:
        """Frames to leave out of this write (< 0: silence to add) to set the cushion.

        Just after a capture read, frames captured and waiting (C) plus frames
        queued for playback (Q) is the part of the round trip the card holds
        beyond the period just read: it must be ``prefill`` periods.  C + Q
        does not change as the card moves (a frame captured is a frame
        played), so it is read race-free (C again after Q; a period boundary
        between the two reads is seen and that sample skipped).  For the first
        ``_SERVO_PERIODS`` periods after every start and resynchronisation it
        is sampled; if most samples agree on one error beyond a frame (a start
        that raced), one correction sets the cushion; after that it is left
        alone until the next resynchronisation (a late period on a busy
        machine must not move the latency).  Three ``avail()`` calls a period
        while checking, no allocation.
        """
        left = self._servo_left
        if left <= 0:
            return 0
        # Mid-period: the card's (or JACK's clients') updates for this period are all
        # done, none of the next has begun; reading at the period boundary raced them.
        time.sleep(0.5 * self._period / self.card_rate)
        c1 = cap.avail()
        q = buffer_size - play.avail()
        if cap.avail() != c1 or c1 < 0 or q < 0 or c1 >= self._cap_buffer:
            return 0  # a boundary between the reads; or capture full: an overrun to come
            # (and what an unpaced file/null device always reports)
        errs = self._servo_errs
        errs[_SERVO_PERIODS - left] = c1 + q - target
        self._servo_left = left = left - 1
        if left:
            return 0
        errs.sort()
        err = int(errs[_SERVO_PERIODS // 2])  # the median
        agree = int(np.count_nonzero(np.abs(errs - err) <= 1))
        if -1 <= err <= 1 or agree < _SERVO_PERIODS * 3 // 4:
            return 0
        return err

    def _drain(self) -> None:
        """Apply up to ``_DRAIN_PER_HOP`` queued commands; never blocks.

        A preset recall posts up to 3 commands per unit: applying thousands in
        one hop would overrun it.  The rest stay queued, in order (this thread
        is the queue's only reader), for the next hop.
        """
        q = self.commands
        for _ in range(_DRAIN_PER_HOP):
            if q.empty():  # SimpleQueue.empty is lock-free
                return
            try:
                cmd = q.get_nowait()
            except queue.Empty:
                return
            self._dispatch(cmd)

    def _dispatch(self, cmd: object) -> None:
        if isinstance(cmd, c.PlayPause):
            self.source.play_pause()
        elif isinstance(cmd, c.Stop):
            self.source.stop()
        else:
            try:
                handled = self.engine.apply(cmd)
            except AesynthError as e:
                self.to_control(Rejected(cmd, str(e)))
                return
            except Exception as e:  # a malformed command must not stop the sound
                # Not logged here (no I/O on this thread): the control thread logs it.
                self.to_control(Rejected(cmd, f"{type(e).__name__}: {e}"))
                return
            if handled:
                return
            self.to_control(cmd)
            return
        self._publish(connected=self._play is not None)

    def _publish(self, *, connected: bool, error: str | None = None) -> None:
        counts = self._counts
        n = counts["hops"]
        last = counts["last_ns"] / 1000.0
        self.stats = AudioStats(
            hops=n, xruns=counts["underruns"] + counts["overruns"],
            underruns=counts["underruns"], overruns=counts["overruns"],
            reconnects=counts["reconnects"], connected=connected,
            playing=self.source.playing, stopped=getattr(self.source, "stopped", False),
            source=self.source.kind,
            last_hop_us=float(last), max_hop_us=counts["max_ns"] / 1000.0,
            max_gap_us=counts["max_gap_ns"] / 1000.0,
            error=error if not connected else None)
