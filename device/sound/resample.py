"""Streaming rational resampling: a stateful polyphase FIR that allocates nothing per call.

Used by the audio thread when the sound card runs at its own rate (44.1, 48,
96 kHz) and the model at another (22050 Hz), and by the file source to
resample a file block by block.  Chosen over python-soxr's streaming mode
(bench/resample_bench.py, docs/play.md "Latency"): its delay is an exact,
constant number of samples known before the first call (the round trip the
app logs must equal the measured one within a sample), and ``process`` writes
into a caller's array, where ``soxr.ResampleStream.resample_chunk`` returns a
new array every call.

The filter: a Kaiser-windowed sinc (scipy.signal.firwin's design, in numpy) at the common rate
``in_rate * up``, cut off at 0.45 of the lower rate with a transition of 0.1
of it and ``attenuation_db`` stop-band attenuation (80 dB: passband ripple
about 1e-4).  Output sample ``m`` is the filter at upsampled time
``m * down``; its delay is ``(L - 1) / 2`` upsampled samples for a filter of
``L`` taps, the same whatever the block sizes.
"""

from __future__ import annotations

import math

import numpy as np

from device.errors import AesynthError


class ResampleError(AesynthError):
    """Rates or block sizes a resampler cannot take."""


def design(in_rate: int, out_rate: int, *, attenuation_db: float = 80.0,
           half_length: int | None = None) -> tuple[int, int, int, np.ndarray]:
    """(up, down, half_length, taps) for ``in_rate`` → ``out_rate``: the reduced ratio,
    the filter's delay ``a`` in upsampled samples and the prototype low-pass filter
    (float64, ``2a + 1`` taps zero-padded to a multiple of ``up``, gain ``up``).

    half_length: ``a`` to use instead of the shortest that meets the attenuation
    (longer only: :func:`round_trip_pair` lengthens one filter by less than a
    sample of delay so that a round trip lands on a whole sample).
    """
    for name, r in (("in_rate", in_rate), ("out_rate", out_rate)):
        if not isinstance(r, int) or isinstance(r, bool) or not 1000 <= r <= 384000:
            raise ResampleError(f"resampler {name} must be an integer in 1000..384000 Hz, "
                                f"got {r!r}")
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    fs = in_rate * up
    low = min(in_rate, out_rate)
    numtaps = kaiser_length(attenuation_db, 0.1 * low / (fs / 2))
    a_min = -(-(numtaps - 1) // 2)
    a = a_min if half_length is None else int(half_length)
    if a < a_min:
        raise ResampleError(f"resampler half_length must be >= {a_min} for "
                            f"{attenuation_db} dB, got {half_length!r}")
    taps = kaiser_lowpass(2 * a + 1, 0.45 * low / (fs / 2), attenuation_db) * up
    taps = np.concatenate([taps, np.zeros((-len(taps)) % up)])
    return up, down, a, taps


# Kaiser's formulas (as scipy.signal.kaiserord / kaiser_beta / firwin use them), in
# numpy: importing scipy.signal on the box costs ~80 MB of memory and seconds at start.
def kaiser_beta(attenuation_db: float) -> float:
    a = attenuation_db
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a > 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def kaiser_length(attenuation_db: float, width: float) -> int:
    """Taps for ``attenuation_db`` stop-band attenuation and a transition ``width`` (a
    fraction of Nyquist)."""
    return int(math.ceil((attenuation_db - 7.95) / 2.285 / (math.pi * width) + 1))


def kaiser_lowpass(numtaps: int, cutoff: float, attenuation_db: float) -> np.ndarray:
    """A windowed-sinc low-pass of ``numtaps`` taps cut off at ``cutoff`` (a fraction of
    Nyquist), unit gain at DC: scipy.signal.firwin(numtaps, cutoff, window=("kaiser",
    kaiser_beta(attenuation_db)))."""
    m = np.arange(numtaps) - (numtaps - 1) / 2.0
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, kaiser_beta(attenuation_db))
    return h / np.sum(h)


def round_trip_pair(card_rate: int, model_rate: int, *, engine_delay: int, max_card: int,
                    max_model: int, attenuation_db: float = 80.0
                    ) -> tuple[StreamResampler, StreamResampler]:
    """(down, up): card → model and model → card resamplers whose delays, together
    with ``engine_delay`` model samples between them, add up to a whole number of
    card samples (:func:`chain_delay`), so a round trip is an exact sample count.

    max_card / max_model: the largest block each gets (card and model samples).
    attenuation_db: both filters' stop-band attenuation; their delay grows with it
    (48 kHz <-> 22050 Hz: 1.14 ms each at 80 dB, 0.82 ms at 60 dB).
    """
    g = math.gcd(card_rate, model_rate)
    u, v = model_rate // g, card_rate // g
    up_rs = StreamResampler(model_rate, card_rate, max_in=max_model,
                            attenuation_db=attenuation_db)
    # Card samples: (a_down + a_up + engine_delay * v) / u; a_down moves by < u.
    a_down0 = design(card_rate, model_rate, attenuation_db=attenuation_db)[2]
    a_down = a_down0 + (-(a_down0 + up_rs.half_length + engine_delay * v)) % u
    down_rs = StreamResampler(card_rate, model_rate, max_in=max_card, half_length=a_down,
                              attenuation_db=attenuation_db)
    return down_rs, up_rs


class StreamResampler:
    """``in_rate`` → ``out_rate`` Hz, one mono block at a time, state kept between calls.

    max_in: the largest block :meth:`process` will get (samples); the buffers
    are sized for it.  ``process(x, out)`` writes the outputs that the samples
    so far determine into ``out[:n]`` and returns ``n`` (between
    ``floor(len(x) * out_rate / in_rate)`` and one more); ``out`` must hold
    :attr:`max_out` samples.  Raises :class:`ResampleError` for a block longer
    than ``max_in``.  Real-time safe: no array is allocated per call
    (tests/device/test_resample.py, tracemalloc).
    """

    def __init__(self, in_rate: int, out_rate: int, *, max_in: int,
                 attenuation_db: float = 80.0, half_length: int | None = None):
        if not isinstance(max_in, int) or max_in < 1:
            raise ResampleError(f"resampler max_in must be a positive integer, got {max_in!r}")
        self.in_rate, self.out_rate = in_rate, out_rate
        up, down, a, h = design(in_rate, out_rate, attenuation_db=attenuation_db,
                                half_length=half_length)
        self.up, self.down, self.half_length = up, down, a
        self.taps_per_phase = k = len(h) // up
        self.max_in = max_in
        self.max_out = -(-max_in * up // down) + 1
        # taps_rev[p, j]: tap for the window's j-th sample (oldest first) at phase p.
        taps_rev = h.reshape(k, up).T[:, ::-1].astype(np.float32)
        span = up + self.max_out
        j = np.arange(span)
        # hist index of every tap of output j of a cycle (before the call's shift)
        self._off = ((j * down) // up).astype(np.intp)[:, None] + np.arange(k, dtype=np.intp)
        self._taps = np.ascontiguousarray(taps_rev[(j * down) % up])  # (span, k)
        self._hist = np.zeros(k - 1 + max_in, dtype=np.float32)
        self._keep = np.zeros(k - 1, dtype=np.float32)
        self._idx = np.zeros((self.max_out, k), dtype=np.intp)
        self._win = np.zeros((self.max_out, k), dtype=np.float32)
        self._m = 0   # next output, counted from a cycle start
        self._n = 0   # inputs consumed, counted from the same cycle start

    @property
    def delay_in(self) -> float:
        """Delay in input samples: output time ``t`` holds the input at ``t - delay``."""
        return self.half_length / self.up

    @property
    def delay_out(self) -> float:
        """The same delay in output samples."""
        return self.half_length / self.down

    def reset(self) -> None:
        """Forget the past: the next sample starts a new stream (zeros before it)."""
        self._hist.fill(0.0)
        self._m = self._n = 0

    def count(self, n_in: int) -> int:
        """How many outputs the next ``process`` of ``n_in`` samples returns."""
        return -(-(self._n + n_in) * self.up // self.down) - self._m

    def process(self, x: np.ndarray, out: np.ndarray) -> int:
        n = len(x)
        if n > self.max_in:
            raise ResampleError(f"resampler block of {n} samples is longer than max_in="
                                f"{self.max_in}")
        k1 = self.taps_per_phase - 1
        hist = self._hist
        hist[k1:k1 + n] = x
        m0, n0, up, down = self._m, self._n, self.up, self.down
        c = -(-(n0 + n) * up // down) - m0
        if c > 0:
            q, r0 = divmod(m0, up)
            idx = self._idx[:c]
            np.add(self._off[r0:r0 + c], q * down - n0, out=idx)
            win = self._win[:c]
            # mode "clip": "raise" buffers the output; every index is in range anyway.
            np.take(hist, idx, out=win, mode="clip")
            np.multiply(win, self._taps[r0:r0 + c], out=win)
            np.sum(win, axis=1, out=out[:c])
        else:
            c = 0
        # Keep the last k-1 inputs for the next call's windows.
        keep = self._keep
        np.copyto(keep, hist[n:n + k1])
        np.copyto(hist[:k1], keep)
        m, nn = m0 + c, n0 + n
        q = min(m // up, nn // down)
        self._m, self._n = m - q * up, nn - q * down
        return c


def integer_delay(in_rate: int, out_rate: int, *, max_in: int) -> StreamResampler:
    """A :class:`StreamResampler` whose delay is a whole number of output samples (its
    filter lengthened by less than one): trimming it aligns the output exactly."""
    _up, down, a, _taps = design(in_rate, out_rate)
    return StreamResampler(in_rate, out_rate, max_in=max_in, half_length=-(-a // down) * down)


def resample_blocks(x: np.ndarray, in_rate: int, out_rate: int, *, block: int = 4096
                    ) -> np.ndarray:
    """A whole signal through :func:`integer_delay`'s resampler, delay removed (float32, 1-D):
    for offline use and tests; ``ceil(len(x) * out_rate / in_rate)`` samples."""
    rs = integer_delay(in_rate, out_rate, max_in=block)
    want = -(-len(x) * rs.up // rs.down)
    d = int(rs.delay_out)
    pad = np.zeros(-(-(d + 2) * rs.down // rs.up) + 1, dtype=np.float32)
    chunks, buf = [], np.zeros(rs.max_out, dtype=np.float32)
    for src in (np.asarray(x, dtype=np.float32), pad):
        for i in range(0, len(src), block):
            n = rs.process(src[i:i + block], buf)
            chunks.append(buf[:n].copy())
    y = np.concatenate(chunks)
    return np.ascontiguousarray(y[d:d + want])


__all__ = ["ResampleError", "StreamResampler", "design", "integer_delay", "resample_blocks",
           "round_trip_pair"]
