"""Counting what the hot paths allocate, without counting what other threads do.

tracemalloc sees every thread of the process.  The suite leaves helper threads behind
(JACK clients, rtmidi callbacks, watch threads of earlier tests), and one of them
keeping 640 bytes while a per-hop check ran failed CI once (stop 19).  So the bytes a
check calls *retained* are only those whose allocation traceback passes through the
code under test (a file under ``device/``): numpy buffers made inside a limiter call
carry the limiter's frame, a JACK thread's do not.  The *peak* has no such per-frame
view in tracemalloc; it stays process-wide, and a failure message lists the largest
allocations by file and line so a stray thread is named, not guessed at.
"""
from __future__ import annotations

import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

DEVICE = str(Path(__file__).resolve().parents[1] / "device")
FRAMES = 25  # deep enough that a numpy call inside device/ code keeps its device/ frame


@dataclass
class Allocations:
    """``with Allocations() as a: ...`` then ``a.retained`` (bytes still held at the end
    whose traceback passes through ``under``), ``a.peak`` (process-wide bytes above the
    start at the worst moment) and ``a.top`` (the five largest changes, for messages)."""

    under: str = DEVICE
    retained: int = 0
    peak: int = 0
    top: list[str] = field(default_factory=list)

    def __enter__(self) -> "Allocations":
        self._was_tracing = tracemalloc.is_tracing()
        if not self._was_tracing:
            tracemalloc.start(FRAMES)
        self._before = tracemalloc.take_snapshot()
        self._start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc) -> None:
        _, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot()
        if not self._was_tracing:
            tracemalloc.stop()
        self.peak = peak - self._start
        diffs = after.compare_to(self._before, "traceback")
        mine = [d for d in diffs
                if any(f.filename.startswith(self.under) for f in d.traceback)]
        self.retained = sum(d.size_diff for d in mine)
        self.top = [f"{d.size_diff:+d} B at {d.traceback[-1]}"
                    for d in sorted(diffs, key=lambda d: -abs(d.size_diff))[:5]
                    if d.size_diff]

    def __str__(self) -> str:
        return (f"retained {self.retained} B under {self.under}, peak {self.peak} B; "
                f"largest changes: {self.top}")
