"""Real music for tests: short slices of tracks CI installs (Debian pushover-data).

A test never downloads; deploy/setup.sh dev installs the package.  Missing
music is an error, not a skip: a skipped test would hide a broken setup.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np

PUSHOVER = Path("/usr/share/pushover/themes")


def track(name: str = "aztec") -> Path:
    path = PUSHOVER / f"{name}.ogg"
    if not path.exists():
        raise FileNotFoundError(
            f"test music {path} is missing: install the Debian package pushover-data "
            f"(deploy/setup.sh dev does)")
    return path


@lru_cache(maxsize=8)
def clip(name: str = "aztec", *, start_s: float = 20.0, seconds: float = 3.0,
         sample_rate: int = 22050) -> np.ndarray:
    """Mono float64 slice of a real track, resampled to ``sample_rate`` (read-only)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    path = track(name)
    with sf.SoundFile(path) as f:
        f.seek(int(start_s * f.samplerate))
        x = f.read(int(seconds * f.samplerate) + 64, dtype="float64", always_2d=True)
        sr = f.samplerate
    x = x.mean(axis=1)
    g = gcd(sample_rate, sr)
    y = resample_poly(x, sample_rate // g, sr // g)[: int(seconds * sample_rate)]
    y.setflags(write=False)
    return y
