"""Audio files in: decode, mix to mono, resample; one place for the box and training.

Any format libsndfile reads (WAV, FLAC, Ogg Vorbis, ...), through soundfile.
:func:`load_audio` reads a whole file (or a part) at once, for training and
offline rendering; resampling is polyphase (:func:`scipy.signal.resample_poly`),
exact in length: ``ceil(n * up / down)`` samples for ``n`` at the file's rate.
:class:`FileStream` is what ``aesynth play --in FILE`` plays: decoded and
resampled (device.sound.resample) block by block in its own thread, a second
ahead of the audio thread, in bounded memory whatever the file's length.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from device.errors import AudioFileError

log = logging.getLogger(__name__)


def load_audio(path: str | os.PathLike, sample_rate: int, *, start_s: float = 0.0,
               seconds: float | None = None) -> np.ndarray:
    """The file at ``path`` as float32 mono at ``sample_rate`` Hz.

    ``start_s`` and ``seconds`` select a part (in the file's time); the
    default is the whole file.  Raises :class:`AudioFileError` naming the
    file for one that cannot be decoded or holds no samples there.
    """
    import soundfile as sf

    name = os.fspath(path)
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise AudioFileError(f"sample_rate for {name!r} must be a positive integer (Hz), "
                             f"got {sample_rate!r}")
    if not start_s >= 0:  # also refuses NaN
        raise AudioFileError(f"start_s for {name!r} must be >= 0 s, got {start_s!r}")
    if seconds is not None and not seconds > 0:
        raise AudioFileError(f"seconds for {name!r} must be > 0 or None, got {seconds!r}")
    try:
        with sf.SoundFile(name) as f:
            rate, length = f.samplerate, f.frames
            start = int(round(start_s * rate))
            if start >= length > 0:
                raise AudioFileError(f"audio file {name!r} is {length / rate:.3f} s long; "
                                     f"cannot start at {start_s} s")
            if start:
                f.seek(start)
            count = -1 if seconds is None else max(1, int(round(seconds * rate)))
            data = f.read(count, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioFileError(f"cannot read audio file {name!r}: {_os_reason(name) or e}") \
            from None
    if len(data) == 0:
        raise AudioFileError(f"audio file {name!r} has no samples")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if rate != sample_rate:
        from scipy.signal import resample_poly

        g = math.gcd(int(rate), sample_rate)
        mono = resample_poly(mono, sample_rate // g, int(rate) // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _os_reason(name: str) -> str | None:
    """What the OS says about opening ``name`` (libsndfile says only "System error")."""
    try:
        with open(name, "rb"):
            pass
    except OSError as e:
        return (e.strerror or str(e)).lower()
    return None


# -- streaming: decode and resample block by block, ahead of the audio thread ----------
class BlockRing:
    """A single-producer, single-consumer ring of float32 samples between two threads.

    The decoder thread writes, the audio thread reads; each side only moves its
    own counter (``_tail``, ``_head``: samples ever written / read), after the
    data, so under the GIL neither sees a half-written block and no lock is
    taken.  ``read_into`` allocates nothing (real-time safe).
    """

    def __init__(self, capacity: int):
        self._buf = np.zeros(capacity, dtype=np.float32)
        self.capacity = capacity
        self._head = 0
        self._tail = 0
        self._discard_to = 0  # written by the producer: the reader skips what lies before

    def readable(self) -> int:
        return self._tail - max(self._head, self._discard_to)

    def writable(self) -> int:
        return self.capacity - (self._tail - self._head)

    def write(self, x: np.ndarray) -> None:
        """Producer: append ``x``; the caller checks :meth:`writable` first."""
        n, cap, tail = len(x), self.capacity, self._tail
        pos = tail % cap
        first = min(n, cap - pos)
        self._buf[pos:pos + first] = x[:first]
        if n > first:
            self._buf[:n - first] = x[first:]
        self._tail = tail + n

    def discard_written(self) -> None:
        """Producer: everything written so far is to be skipped by the reader."""
        self._discard_to = self._tail

    def read_into(self, out: np.ndarray) -> bool:
        """Consumer: fill ``out`` and return True, or return False (``out``
        untouched) when fewer samples are ready."""
        head = self._head
        if self._discard_to > head:
            head = self._discard_to
        n, cap = len(out), self.capacity
        if self._tail - head < n:
            self._head = head
            return False
        pos = head % cap
        first = min(n, cap - pos)
        out[:first] = self._buf[pos:pos + first]
        if n > first:
            out[first:] = self._buf[:n - first]
        self._head = head + n
        return True


class FileStream:
    """An audio file decoded and resampled block by block in its own thread, looping.

    path: any file libsndfile reads; sample_rate: the rate wanted (Hz).
    ahead_s: seconds of resampled audio kept ready in a :class:`BlockRing`;
    block: file frames decoded at a time.  Memory is bounded by those two,
    whatever the file's length.  The loop is seamless: at the end the
    decoder seeks back to the start and the resampler goes on with its state,
    so the join is resampled like any other stretch (no click, no gap).
    :meth:`rewind` (from the consumer) restarts at the file's start.
    Raises :class:`AudioFileError` naming the file when it cannot be opened
    or holds no samples.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, *, ahead_s: float = 1.0,
                 block: int = 4096):
        import threading

        import soundfile as sf

        from device.sound.resample import integer_delay

        self.name = os.fspath(path)
        try:
            self._file = sf.SoundFile(self.name)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise AudioFileError(f"cannot read audio file {self.name!r}: "
                                 f"{_os_reason(self.name) or e}") from None
        if self._file.frames == 0:
            self._file.close()
            raise AudioFileError(f"audio file {self.name!r} has no samples")
        self.file_rate, self.sample_rate = int(self._file.samplerate), sample_rate
        self.duration_s = self._file.frames / self.file_rate
        self._block = block
        self._rs = None
        if self.file_rate != sample_rate:
            # A delay of whole output samples, trimmed, so the file starts at t = 0.
            self._rs = integer_delay(self.file_rate, sample_rate, max_in=block)
        out_max = self._rs.max_out if self._rs is not None else block
        self._resampled = np.zeros(out_max, dtype=np.float32)
        self.ring = BlockRing(max(int(ahead_s * sample_rate), 2 * out_max))
        self._trim = 0
        self._want = self._have = 0   # rewinds asked (consumer) / done (producer)
        self.error: str | None = None
        self._closing = threading.Event()
        self._start_stream()
        self._thread = threading.Thread(target=self._run, name="file-decoder", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        """False while a rewind is pending: the consumer plays silence meanwhile."""
        return self._want == self._have

    def rewind(self) -> None:
        """Consumer: start again from the file's first sample."""
        self._want += 1

    def close(self) -> None:
        self._closing.set()
        self._thread.join(2.0)
        self._file.close()

    def _start_stream(self) -> None:
        self._file.seek(0)
        if self._rs is not None:
            self._rs.reset()
            self._trim = int(round(self._rs.delay_out))  # so the file starts at t = 0

    def _run(self) -> None:
        import soundfile as sf

        ring, f = self.ring, self._file
        try:
            while not self._closing.is_set():
                want = self._want
                if want != self._have:
                    self._start_stream()
                    ring.discard_written()
                    self._have = want
                if ring.writable() < len(self._resampled):
                    self._closing.wait(0.005)
                    continue
                data = f.read(self._block, dtype="float32", always_2d=True)
                if len(data) == 0:  # the end: loop (the resampler's state goes on)
                    f.seek(0)
                    continue
                mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1,
                                                                       dtype=np.float32)
                if self._rs is not None:
                    y = self._resampled[:self._rs.process(mono, self._resampled)]
                    if self._trim:
                        cut = min(self._trim, len(y))
                        y, self._trim = y[cut:], self._trim - cut
                else:
                    y = mono
                if len(y):
                    ring.write(y)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            self.error = f"audio file {self.name!r} stopped decoding: {e}"
            log.error("%s; playing silence", self.error)


__all__ = ["BlockRing", "FileStream", "load_audio"]
