"""Keep Python's cyclic garbage collector from stalling the audio thread.

A collection holds the GIL for its whole length, on whichever thread
triggered it, and a full (generation 2) collection scans every long-lived
object that is not frozen.  Measured in `aesynth play` here: the tens of
thousands of objects that the senses' threads create while starting (PIL,
luma, mido backends, scipy for the file source) made one generation-2
collection on the last-state thread hold the GIL for 43 ms, four seconds in,
longer than the playback buffer (11.6 ms with line-in, 23.2 ms with a file): an xrun.

So the app runs the collector in three phases:

* :meth:`QuietCollector.hold` at start: no automatic collection while the
  model, the senses and their imports load (startup garbage is small and
  short-lived).
* :meth:`QuietCollector.settle` once the box has settled (a few seconds after
  the first audio period, and after each model swap): ``gc.freeze()`` moves
  everything alive into the permanent generation, which collections never
  scan, and automatic collection resumes.  Freezing is O(1); a
  ``gc.collect()`` here would itself be the long stall we are avoiding.
  The price: cyclic garbage among objects frozen at that moment is never
  reclaimed (reference counting still frees everything else).
* A collection that still takes longer than :data:`SLOW_MS` (something
  created many long-lived objects later on) asks for another settle, so at
  most one slow collection happens per such burst.

From the first settle on, every collection is timed through ``gc.callbacks``
(the app's deliberate collection before the audio starts is not counted);
:meth:`report` gives the count and the longest, for the stop log and the bench.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

SLOW_MS = 2.0  # a collection longer than this asks for another settle


@dataclass(frozen=True)
class CollectorReport:
    """Collections since the first settle, and how long they held the GIL."""

    collections: int
    full_collections: int      # generation 2
    slow_collections: int      # longer than SLOW_MS
    longest_ms: float
    longest_generation: int
    settles: int
    frozen: int                # objects in the permanent generation now

    def summary(self) -> str:
        return (f"{self.collections} garbage collections ({self.full_collections} full, "
                f"{self.slow_collections} over {SLOW_MS:g} ms), longest {self.longest_ms:.1f} ms "
                f"(generation {self.longest_generation}); {self.settles} settles, "
                f"{self.frozen} objects frozen")


class QuietCollector:
    """One per app: hold, settle, time; :meth:`release` undoes all of it."""

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns):
        self._clock = clock
        self._started_ns = 0
        self._counts = [0, 0, 0]       # collections, full, slow
        self._longest_ns = 0
        self._longest_gen = -1
        self._settles = 0
        self._was_enabled = gc.isenabled()
        self._held = False
        self.wants_settle = False      # set by a slow collection; the app's control thread acts

    # The callback runs on whatever thread triggered the collection, the audio thread
    # included: integers only, no logging, no allocation of tracked objects.
    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started_ns = self._clock()
            return
        took = self._clock() - self._started_ns
        counts = self._counts
        counts[0] += 1
        if info["generation"] == 2:
            counts[1] += 1
        if took > SLOW_MS * 1_000_000:
            counts[2] += 1
            self.wants_settle = True
        if took > self._longest_ns:
            self._longest_ns = took
            self._longest_gen = info["generation"]

    def hold(self) -> QuietCollector:
        """Stop automatic collection until :meth:`settle`."""
        if not self._held:
            self._held = True
            self._was_enabled = gc.isenabled()
        gc.disable()
        return self

    def settle(self) -> None:
        """Freeze what is alive now, (re)enable automatic collection, time collections."""
        if not self._held:
            raise RuntimeError("QuietCollector.settle before hold")
        gc.freeze()
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        self._settles += 1
        self.wants_settle = False
        if self._was_enabled:
            gc.enable()

    def report(self) -> CollectorReport:
        collections, full, slow = self._counts
        return CollectorReport(collections=collections, full_collections=full,
                               slow_collections=slow, longest_ms=self._longest_ns / 1e6,
                               longest_generation=self._longest_gen, settles=self._settles,
                               frozen=gc.get_freeze_count())

    def release(self) -> None:
        """Stop timing, unfreeze, and leave the collector as :meth:`hold` found it.

        Unfreezing matters in a long-lived process (tests) that starts many apps:
        frozen garbage would otherwise pile up there.
        """
        if not self._held:
            return
        self._held = False
        try:
            gc.callbacks.remove(self._callback)
        except ValueError:  # removed by someone else: nothing to undo
            pass
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()
        else:
            gc.disable()
