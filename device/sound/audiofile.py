"""Audio files in: decode, mix to mono, resample; one place for the box and training.

Any format libsndfile reads (WAV, FLAC, Ogg Vorbis, ...), through soundfile;
resampling is polyphase (:func:`scipy.signal.resample_poly`), exact in
length: ``ceil(n * up / down)`` samples for ``n`` at the file's rate.
"""

from __future__ import annotations

import math
import os

import numpy as np

from device.errors import AudioFileError


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


__all__ = ["load_audio"]
