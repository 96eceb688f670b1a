"""A preallocated sample FIFO: the joint between the engine's hop and the card's period.

The audio thread pushes whatever a stage produced (a captured period, a hop
of engine output, a resampler's variable-length block) and pops exactly what
the next stage needs.  Everything lives in one float32 array made at
construction; push and pop copy into and out of it with ``np.copyto`` on
views and allocate no array (tracemalloc test in tests/device/test_fifo.py).
Single-threaded: the audio thread is its only user.  For a FIFO between two
threads see :class:`device.sound.audiofile.BlockRing`.
"""

from __future__ import annotations

import numpy as np


class SampleFifo:
    """A ring of ``capacity`` float32 samples.

    push(x): appends ``x`` (1-D, any float dtype); raises OverflowError naming
    the capacity when it does not fit (a configuration error, sized at setup,
    never a run-time event).  pop_into(out): fills ``out`` with the oldest
    ``len(out)`` samples; raises ValueError when fewer are held.
    """

    __slots__ = ("_buf", "_cap", "_head", "_count")

    def __init__(self, capacity: int):
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"FIFO capacity must be a positive integer, got {capacity!r}")
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._cap = capacity
        self._head = 0    # index of the oldest sample
        self._count = 0

    @property
    def capacity(self) -> int:
        return self._cap

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._head = 0
        self._count = 0

    def push_zeros(self, n: int) -> None:
        """Append ``n`` zeros (a cushion of silence)."""
        self._check_room(n)
        tail = (self._head + self._count) % self._cap
        first = min(n, self._cap - tail)
        self._buf[tail:tail + first] = 0.0
        if n > first:
            self._buf[:n - first] = 0.0
        self._count += n

    def push(self, x: np.ndarray) -> None:
        n = len(x)
        self._check_room(n)
        tail = (self._head + self._count) % self._cap
        first = min(n, self._cap - tail)
        np.copyto(self._buf[tail:tail + first], x[:first], casting="same_kind")
        if n > first:
            np.copyto(self._buf[:n - first], x[first:], casting="same_kind")
        self._count += n

    def pop_into(self, out: np.ndarray) -> np.ndarray:
        n = len(out)
        if n > self._count:
            raise ValueError(f"FIFO holds {self._count} samples, {n} asked")
        h = self._head
        first = min(n, self._cap - h)
        np.copyto(out[:first], self._buf[h:h + first], casting="same_kind")
        if n > first:
            np.copyto(out[first:], self._buf[:n - first], casting="same_kind")
        self._head = (h + n) % self._cap
        self._count -= n
        return out

    def _check_room(self, n: int) -> None:
        if self._count + n > self._cap:
            raise OverflowError(f"FIFO of {self._cap} samples holds {self._count}; "
                                f"cannot add {n}")

    def __repr__(self) -> str:
        return f"<SampleFifo {self._count}/{self._cap}>"


__all__ = ["SampleFifo"]
