"""Record the instrument's output to a WAV file without disturbing the audio thread.

The audio thread calls :meth:`Recorder.push` once per hop.  It copies the
block into a preallocated ring buffer and returns: no lock, no I/O, no
array allocation.  A writer thread drains the ring into the file with
soundfile every ``poll_s``.  If the writer falls behind by more than the
ring holds (``buffer_s`` seconds: a very slow stick), the newest samples are
dropped and counted in :attr:`Recorder.dropped`; the audio thread never waits.

The ring is single-producer (the audio thread advances ``_written``) and
single-consumer (the writer advances ``_read``); each index is a Python int
replaced by one assignment, which the GIL makes atomic, and the producer
publishes its index only after the samples are in place.

A power cut must not lose the take: every ``checkpoint_s`` the writer
rewrites the WAV header with the length so far (libsndfile otherwise writes
it only on close, leaving a file that reads as empty) and fsyncs the file,
so at most the last checkpoint's worth of sound is lost.

A write that fails (a full disk, a stick pulled out) ends the recording by
itself: :attr:`Recorder.recording` turns False at once (so ``push`` writes no
more and the next toggle starts a new file), the writer closes the file (the
header then holds everything written before the failure), reports the one-line
:attr:`Recorder.error` through ``on_error`` and ends.

Files go to :func:`recording_dir`: a folder on the USB stick when one is
mounted, else the data partition.  ``start``/``stop`` are for the control
thread (they open and close files), never the audio thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from device.state.atomic import fsync_dir, fsync_file
from device.errors import ConfigError, DeviceError
from device.sound.scheduling import name_thread

log = logging.getLogger(__name__)

STICK_FOLDER = "aesynth-recordings"
NAME_TRIES = 1000  # recordings started within one second (the file name has a 1 s stamp)
# libsndfile's SFC_UPDATE_HEADER_NOW (sndfile.h); soundfile's cffi does not declare it.
_SFC_UPDATE_HEADER_NOW = 0x1060


def recording_dir(stick: str | os.PathLike | None, fallback: str | os.PathLike) -> Path:
    """Where to record: ``STICK/aesynth-recordings`` if a writable stick is given,
    else ``fallback`` (on the data partition)."""
    if stick is not None and os.access(stick, os.W_OK):
        return Path(stick) / STICK_FOLDER
    return Path(fallback).expanduser()


class Recorder:
    """Records blocks pushed by the audio thread into WAV files in ``directory``.

    ``directory`` may be a callable returning the folder, asked at each
    :meth:`start` (so a stick plugged in later is used).  ``subtype`` is the
    WAV sample format (soundfile's name: PCM_16, PCM_24, FLOAT).  ``on_error`` is called
    with :attr:`error` (one line) when a recording fails, from the writer thread, once the
    recording has ended and its file is closed.
    """

    def __init__(self, directory: str | os.PathLike | Callable[[], str | os.PathLike],
                 sample_rate: int, *, channels: int = 1, buffer_s: float = 10.0,
                 subtype: str = "PCM_16", poll_s: float = 0.05, checkpoint_s: float = 1.0,
                 on_error: Callable[[str], None] | None = None):
        if not isinstance(sample_rate, int) or not 1000 <= sample_rate <= 384000:
            raise ConfigError(f"recorder sample_rate must be an integer in 1000..384000 Hz, "
                             f"got {sample_rate!r}")
        if channels not in (1, 2):
            raise ConfigError(f"recorder channels must be 1 or 2, got {channels!r}")
        if not 0 < checkpoint_s <= 60:
            raise ConfigError(f"recorder checkpoint_s must be in (0, 60] seconds, got "
                              f"{checkpoint_s!r}")
        self.directory = directory
        self.sample_rate = sample_rate
        self.channels = channels
        self.subtype = subtype
        self.poll_s = poll_s
        self.checkpoint_s = checkpoint_s
        self.checkpoints = 0  # header rewrites + fsyncs of the current file
        self.on_error = on_error
        self.capacity = max(1, int(buffer_s * sample_rate))
        shape = (self.capacity,) if channels == 1 else (self.capacity, channels)
        self._ring = np.zeros(shape, dtype=np.float32)
        self._written = 0  # samples ever pushed (producer's index)
        self._read = 0     # samples ever taken by the writer (consumer's index)
        self._recording = False
        self.dropped = 0
        self.path: Path | None = None
        self.error: str | None = None
        self._file = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def recording(self) -> bool:
        """Whether a recording is running: False again once a write failed."""
        return self._recording

    # -- the audio thread ----------------------------------------------------------
    def push(self, block: np.ndarray) -> None:
        """Append one hop of output (float32, (n,) or (n, channels)).

        Real-time safe: no lock, no I/O, no array allocation; drops the block
        (counting it) when the ring is full rather than wait.
        """
        if not self._recording:
            return
        n = block.shape[0]
        w = self._written
        if n > self.capacity - (w - self._read):
            self.dropped += n
            return
        pos = w % self.capacity
        first = min(n, self.capacity - pos)
        self._ring[pos:pos + first] = block[:first]
        if first < n:
            self._ring[:n - first] = block[first:]
        self._written = w + n  # publish only after the samples are in place

    # -- the control thread ----------------------------------------------------------
    def start(self) -> Path:
        """Open a new WAV file and start recording; returns its path.  Raises DeviceError
        naming the folder when the file cannot be made."""
        if self._recording:
            return self.path
        import soundfile as sf  # only when someone records

        self._join_writer()  # a writer that ended on a failure, perhaps still closing its file

        folder = Path(self.directory() if callable(self.directory) else self.directory)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = _new_file_name(folder)
            self._file = sf.SoundFile(path, "w", samplerate=self.sample_rate,
                                      channels=self.channels, subtype=self.subtype,
                                      format="WAV")
        except (OSError, RuntimeError) as e:
            raise DeviceError(f"cannot record into {str(folder)!r}: {e}") from None
        self.path = path
        self.error = None
        self.dropped = 0
        self.checkpoints = 0
        self._read = self._written  # nothing from before this moment
        self._stop.clear()
        self._thread = threading.Thread(target=self._drain_loop, name="recorder", daemon=True)
        self._thread.start()
        self._recording = True
        log.info("recording to %s", path)
        return path

    def stop(self) -> Path | None:
        """Stop, write what is buffered, close and sync the file; returns its path (also of
        a recording a write failure ended), None when nothing was recorded."""
        if self._thread is None:
            return None
        self._recording = False
        self._stop.set()
        self._join_writer()
        path = self.path
        if self._file is not None:  # else the writer closed it after a failure
            failure = self._close_file()
            if failure is not None:
                self._fail(failure)
        if self.dropped:
            log.warning("recording %s: %d samples dropped (the disk was too slow)", path,
                        self.dropped)
        log.info("recording stopped: %s", path)
        return path

    def toggle(self) -> Path | None:
        """Start when stopped, stop when recording (ToggleRecording)."""
        return self.stop() if self._recording else self.start()

    def close(self) -> None:
        self.stop()

    def _join_writer(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _close_file(self) -> str | None:
        """Close and sync the file (libsndfile writes the final header on close); the
        one-line failure, or None."""
        path, f = self.path, self._file
        self._file = None
        try:
            f.close()
            fsync_file(path)
            fsync_dir(path.parent)
        except (OSError, RuntimeError) as e:
            return f"cannot finish {str(path)!r}: {e}"
        return None

    def _drain_loop(self) -> None:
        name_thread()
        try:
            failure = self._write_until_stopped()
        except Exception as e:  # noqa: BLE001 -- whatever ends the writer ends the recording
            log.exception("recording %s: the writer failed", self.path)
            failure = f"cannot write {str(self.path)!r}: {type(e).__name__}: {e}"
        if failure is None:
            return  # stop() closes the file
        # Nothing will read the ring any more: the audio thread stops filling it, and the
        # state reads "not recording" everywhere, so the next toggle starts a new file.
        self.error = failure  # first: whoever sees "not recording" sees why
        self._recording = False
        late = self._close_file()  # what was written before the failure keeps its header
        if late is not None:
            log.warning("recording failed: %s", late)
        self._fail(failure)

    def _write_until_stopped(self) -> str | None:
        """Drain every poll and checkpoint until stop(); the failure that ended it early."""
        # wait first: a burst pushed right after start is drained a poll later
        next_checkpoint = time.monotonic() + self.checkpoint_s
        while not self._stop.wait(self.poll_s):
            failure = self._drain()
            if failure is None and time.monotonic() >= next_checkpoint:
                failure = self._checkpoint()
                next_checkpoint = time.monotonic() + self.checkpoint_s
            if failure is not None:
                return failure
        return self._drain()

    def _checkpoint(self) -> str | None:
        """Make what is written so far survive a power cut: header, then fsync.  The
        one-line failure, or None."""
        import soundfile as sf

        try:
            # soundfile's internals (its cffi handle): a version without them still gets
            # the fsync, and a header written at stop.
            snd, handle = getattr(sf, "_snd", None), getattr(self._file, "_file", None)
            if snd is not None and handle is not None:
                snd.sf_command(handle, _SFC_UPDATE_HEADER_NOW, sf._ffi.NULL, 0)
            elif self.checkpoints == 0:
                log.warning("soundfile %s offers no sf_command: the WAV header of %s is "
                            "written only when the recording stops", sf.__version__, self.path)
            fsync_file(self.path)
        except (OSError, RuntimeError) as e:  # a stick pulled out
            return f"cannot write {str(self.path)!r}: {_why(e, self._file)}"
        self.checkpoints += 1
        return None

    def _drain(self) -> str | None:
        """Write what the audio thread pushed since the last drain; the one-line failure,
        or None."""
        w, r = self._written, self._read
        if w == r:
            return None
        pos, n = r % self.capacity, w - r
        first = min(n, self.capacity - pos)
        try:
            self._file.write(self._ring[pos:pos + first])
            if first < n:
                self._file.write(self._ring[:n - first])
        except (OSError, RuntimeError) as e:  # a stick pulled out, a full disk
            return f"cannot write {str(self.path)!r}: {_why(e, self._file)}"
        self._read = w
        return None

    def _fail(self, message: str) -> None:
        self.error = message
        log.error("recording failed: %s", message)
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:  # noqa: BLE001 -- reporting must not kill the writer
                log.exception("recorder error callback failed")

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"recording to {str(self.path)!r}" if self._recording else "stopped"
        return f"<Recorder {self.sample_rate} Hz {state} dropped={self.dropped}>"


def _why(error: BaseException, f: object) -> str:
    """``error``'s text; for libsndfile's bare "System error." the OS's reason, which
    libsndfile keeps per file (sf_strerror: "System error : No space left on device.")."""
    import soundfile as sf

    snd, handle = getattr(sf, "_snd", None), getattr(f, "_file", None)
    if snd is None or handle is None or not isinstance(error, RuntimeError):
        return str(error)
    return sf._ffi.string(snd.sf_strerror(handle)).decode(errors="replace") or str(error)


def _new_file_name(folder: Path, *, stamp: str | None = None,
                   limit: int = NAME_TRIES) -> Path:
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    for i in range(limit):
        path = folder / (f"aesynth-{stamp}.wav" if i == 0 else f"aesynth-{stamp}-{i}.wav")
        if not os.path.lexists(path):
            return path
    raise DeviceError(f"cannot find a free file name in {str(folder)!r}: aesynth-{stamp}.wav "
                      f"and aesynth-{stamp}-1..{limit - 1}.wav (the limit of {limit} names "
                      f"a second) all exist")


class RecorderSlot:
    """The audio thread's recorder slot: forwards each hop to its ``target`` (a
    :class:`Recorder`, or None while there is none).  The target is set before any
    recording starts; ``push`` is real-time safe (one attribute read, no lock).
    The app's thread-mode audio loop and the audio process both hold one."""

    target: Any = None

    def push(self, block: Any) -> None:
        target = self.target
        if target is not None:
            target.push(block)
