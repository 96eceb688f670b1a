"""Non-finite samples stop at the engine's edge: NaN and ±inf become 0, in place.

A float WAV with one NaN, a capture driver gone wrong, or a model whose output
overflows must not reach the DSP state that carries from hop to hop (the
analysis buffer, RTPGHI's phase, the level keeper, the program level, the
limiter's gain): one NaN there would silence or buzz every later hop.  The
engine passes its input, each model's output and the limiter's input through a
:class:`FiniteGuard`, so every such state only ever sees finite numbers.

Real-time safe: the mask is preallocated; a clean hop costs one or two
elementwise passes and a count (a few µs), a bad one an ``isfinite``, a
``logical_not``, a count, a ``copyto`` and a clip: no array is allocated
either way.
"""

from __future__ import annotations

import numpy as np

# The engine's input is audio in -1..1; a finite sample beyond this is a broken file, not
# music, and its square would overflow the level meters (1e200² = inf): clipped here.
INPUT_LIMIT = 64.0


class FiniteGuard:
    """Makes ``n``-sample float arrays finite in place; counts what it replaced.

    ``limit``: also clip to ``-limit..limit`` (None: leave finite values alone).
    ``replaced`` counts the samples ever replaced, ``bad_hops`` the calls that
    replaced any: plain ints a reporting thread may read.
    """

    def __init__(self, n: int, *, limit: float | None = None):
        self._mask = np.zeros(n, dtype=bool)
        self.limit = limit
        self._limit = None if limit is None else np.float64(limit)
        self._scratch = None if limit is None else np.zeros(n)
        self.replaced = 0
        self.bad_hops = 0

    def apply(self, x: np.ndarray) -> int:
        """Replace NaN and ±inf in ``x`` (float, shape (n,)) by 0, then clip to ±limit;
        returns how many samples were replaced.  Allocates no array."""
        mask = self._mask
        n = len(mask)
        # The common case in one elementwise test and a count (no reduction ufunc: those
        # allocate a scratch of ~1 kB per call): |x| <= limit is False for NaN and inf.
        if self._limit is None:
            np.isfinite(x, out=mask)
        else:
            np.abs(x, out=self._scratch)
            np.less_equal(self._scratch, self._limit, out=mask)
        if np.count_nonzero(mask) == n:
            return 0
        np.isfinite(x, out=mask)
        np.logical_not(mask, out=mask)
        bad = int(np.count_nonzero(mask))
        if bad:
            np.copyto(x, 0.0, where=mask)
            self.replaced += bad
            self.bad_hops += 1
        if self._limit is not None:
            np.minimum(x, self._limit, out=x)
            np.maximum(x, -self._limit, out=x)
        return bad

    @property
    def replaced_mask(self) -> np.ndarray:
        """After :meth:`apply` returned > 0: True where it replaced a sample (read-only
        use; the next call overwrites it)."""
        return self._mask

    def __repr__(self) -> str:
        return f"<FiniteGuard n={len(self._mask)} replaced={self.replaced}>"
