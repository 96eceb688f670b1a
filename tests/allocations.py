"""Counting what the hot paths allocate, without counting what other threads do.

tracemalloc sees every thread of the process.  The suite leaves helper threads behind
(JACK clients, rtmidi callbacks, watch threads of earlier tests), and one of them
keeping 640 bytes while a per-hop check ran failed CI once (stop 19).  So the bytes a
check calls *retained* are only those whose allocation traceback passes through the
code under test (a file under ``device/``): numpy buffers made inside a limiter call
carry the limiter's frame, a JACK thread's do not.

A leak kept per hop grows in every stretch of hops; numpy and CPython also fill
one-off caches the first time a branch runs (seen: 1-3 kB from a ``cumsum(out=)``
hundreds of hops in).  With :meth:`Allocations.split` between two equal halves the
retained figure is the smaller half's growth: a per-hop leak shows in both, a one-off
in one only.

The *peak* has no per-frame view in tracemalloc: it is process-wide, and a stray
thread's kilobyte once filled it (CI, stop 20: 1024 B against a bar of 1024).  So
every test that measures runs in a forked child (:func:`forked`): a fork copies only
the calling thread, and nothing else allocates there.  (pytest-forked would do this;
its 1.7.5 fails every test under pytest 9.2 here, exit status 3 before the test
runs, so this is a dozen lines of our own.)  Failure messages list the largest
allocations by file and line.
"""
from __future__ import annotations

import functools
import json
import os
import traceback
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

DEVICE = str(Path(__file__).resolve().parents[1] / "device")
FRAMES = 25  # deep enough that a numpy call inside device/ code keeps its device/ frame


@dataclass
class Allocations:
    """``with Allocations() as a:`` warm up, ``a.begin()``, run, ``a.split()``, run the
    same again; then ``a.retained`` (bytes still held whose traceback passes through
    ``under``: the smaller of the two halves' growth, or the whole run's without a
    split), ``a.peak`` (process-wide bytes above the start at the worst moment) and
    ``a.top`` (the largest changes, for messages)."""

    under: str = DEVICE
    retained: int = 0
    peak: int = 0
    top: list[str] = field(default_factory=list)

    def __enter__(self) -> Allocations:
        self._was_tracing = tracemalloc.is_tracing()
        if not self._was_tracing:
            tracemalloc.start(FRAMES)
        self.begin()
        return self

    def begin(self) -> None:
        """Count from here.  Call it after warm-up hops run *inside* the ``with``: an object
        the code replaces each hop (a published snapshot) then has a traced predecessor,
        and the replacement nets zero instead of counting as a leak."""
        self._marks = [tracemalloc.take_snapshot()]
        self._peaks: list[int] = []
        self._start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()

    def split(self) -> None:
        """The second half starts here (as many hops as the first should follow)."""
        self._end_half()
        self._marks.append(tracemalloc.take_snapshot())
        self._start = tracemalloc.get_traced_memory()[0]  # the snapshot itself is not ours
        tracemalloc.reset_peak()

    def _end_half(self) -> None:
        self._peaks.append(tracemalloc.get_traced_memory()[1] - self._start)

    def __exit__(self, *exc) -> None:
        self._end_half()
        self._marks.append(tracemalloc.take_snapshot())
        if not self._was_tracing:
            tracemalloc.stop()
        self.peak = max(self._peaks)
        growths, self.top = [], []
        for before, after in zip(self._marks, self._marks[1:]):
            diffs = after.compare_to(before, "traceback")
            growths.append(sum(d.size_diff for d in diffs
                               if any(f.filename.startswith(self.under) for f in d.traceback)))
            self.top += [f"{d.size_diff:+d} B at {d.traceback[-1]}"
                         for d in sorted(diffs, key=lambda d: -abs(d.size_diff))[:3]
                         if d.size_diff]
        self.retained = min(growths)
        self.growths = growths

    def __str__(self) -> str:
        return (f"retained {self.retained} B under {self.under} (halves: {self.growths}), "
                f"peak {self.peak} B; largest changes: {self.top}")


def forked(test):
    """Run the test function (its fixtures resolved here) in a forked child and fail here
    with the child's traceback if it failed there.  The child ends with ``os._exit``:
    no atexit handler, fixture teardown or JACK client of the parent runs twice."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: only this thread exists here
            os.close(read)
            try:
                test(*args, **kwargs)
                doc = {"ok": True}
            except BaseException:  # noqa: BLE001  (reported to the parent, whatever it is)
                doc = {"ok": False, "error": traceback.format_exc()}
            with os.fdopen(write, "w") as f:
                f.write(json.dumps(doc))
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            text = f.read()
        _, status = os.waitpid(pid, 0)
        if not text:
            raise AssertionError(f"{test.__name__}: the forked child died (wait status {status})")
        doc = json.loads(text)
        if not doc["ok"]:
            raise AssertionError(f"{test.__name__} failed in the forked child:\n{doc['error']}")

    return run
