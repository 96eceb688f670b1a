"""Non-finite samples stop at the engine's edge: NaN and ±inf become 0, in place.

A float WAV with one NaN, a capture driver gone wrong, or a model whose output
overflows must not reach the DSP state that carries from hop to hop (the
analysis buffer, RTPGHI's phase, the level keeper, the program level, the
limiter's gain): one NaN there would silence or buzz every later hop.  The
engine passes its input, each model's output and the limiter's input through a
:class:`FiniteGuard`, so every such state only ever sees finite numbers.

Real-time safe: the mask is preallocated; a clean hop costs one ``isfinite``
and one ``all``, a bad one a ``logical_not``, a count and a ``copyto``: no array
is allocated either way.
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
        self.replaced = 0
        self.bad_hops = 0

    def apply(self, x: np.ndarray) -> int:
        """Replace NaN and ±inf in ``x`` (float, shape (n,)) by 0, then clip to ±limit;
        returns how many samples were replaced.  Allocates no array."""
        mask = self._mask
        np.isfinite(x, out=mask)
        bad = 0
        if not mask.all():
            np.logical_not(mask, out=mask)
            bad = int(np.count_nonzero(mask))
            np.copyto(x, 0.0, where=mask)
            self.replaced += bad
            self.bad_hops += 1
        if self.limit is not None:
            np.clip(x, -self.limit, self.limit, out=x)
        return bad

    @property
    def replaced_mask(self) -> np.ndarray:
        """After :meth:`apply` returned > 0: True where it replaced a sample (read-only
        use; the next call overwrites it)."""
        return self._mask

    def __repr__(self) -> str:
        return f"<FiniteGuard n={len(self._mask)} replaced={self.replaced}>"
